//! Layering, table-driven: defaults < profile < presets < project < user < command line, with
//! the source of every value, and clear errors naming the layer at fault.

use std::path::{Path, PathBuf};

use nsh_agent_config::catalog::CatalogContext;
use nsh_agent_config::files::parse;
use nsh_agent_config::layers::{Inputs, Resolved, resolve};
use nsh_agent_config::settings::Settings;

const PROJECT: &str = "/src/app/.agent.yaml";
const USER: &str = "/home/dev/.config/nsh/agent.yaml";

fn inputs(project: &str, user: &str, command_line: &str) -> Inputs {
    let file =
        |path: &str, text: &str| (!text.is_empty()).then(|| parse(Path::new(path), text).unwrap());
    Inputs {
        project: file(PROJECT, project),
        user: file(USER, user),
        config: None,
        command_line: if command_line.is_empty() {
            Settings::default()
        } else {
            parse(Path::new("flags"), command_line).unwrap().settings
        },
        context: CatalogContext {
            project_dir: PathBuf::from("/src/app"),
            nsh: "/usr/bin/nsh".into(),
            ..CatalogContext::default()
        },
    }
}

fn source(resolved: &Resolved, path: &str) -> String {
    resolved
        .provenance
        .get(path)
        .map_or_else(|| "<none>".to_owned(), ToString::to_string)
}

fn servers(resolved: &Resolved) -> Vec<&str> {
    resolved.servers.keys().map(String::as_str).collect()
}

struct Case {
    name: &'static str,
    project: &'static str,
    user: &'static str,
    command_line: &'static str,
    check: fn(&Resolved),
}

#[test]
fn layers_merge_in_order_and_say_where_each_value_came_from() {
    let cases = [
        Case {
            name: "nothing configured: solo-developer on built-in defaults",
            project: "",
            user: "",
            command_line: "",
            check: |r| {
                assert_eq!(r.profile, "solo-developer");
                assert_eq!(r.settings.command.as_deref(), Some("claude"));
                assert_eq!(source(r, "command"), "built-in defaults");
                assert_eq!(servers(r), ["filesystem", "git"]);
                assert_eq!(source(r, "mcp.presets[0]"), "profile solo-developer");
                assert_eq!(source(r, "mcp.servers.git.command"), "preset git");
            },
        },
        Case {
            name: "project < user < command line for a scalar",
            project: "model: sonnet\n",
            user: "model: opus\n",
            command_line: "model: haiku\n",
            check: |r| {
                assert_eq!(r.settings.model.as_deref(), Some("haiku"));
                assert_eq!(source(r, "model"), "command line");
            },
        },
        Case {
            name: "the user's file wins over the project's",
            project: "model: sonnet\npermissionMode: plan\n",
            user: "model: opus\n",
            command_line: "",
            check: |r| {
                assert_eq!(r.settings.model.as_deref(), Some("opus"));
                assert_eq!(source(r, "model"), USER);
                assert_eq!(source(r, "permissionMode"), PROJECT);
            },
        },
        Case {
            name: "team-member extends solo-developer and adds the mesh client and hooks",
            project: "",
            user: "mesh:\n  tokenFile: /home/dev/.config/nsh/alice.jwt\n",
            command_line: "profile: team-member\n",
            check: |r| {
                assert_eq!(r.profile, "team-member");
                assert_eq!(servers(r), ["filesystem", "git", "mesh"]);
                let mesh = &r.servers["mesh"];
                assert_eq!(mesh.command.as_deref(), Some("/usr/bin/nsh"));
                assert!(
                    mesh.args
                        .as_ref()
                        .unwrap()
                        .contains(&"/home/dev/.config/nsh/alice.jwt".to_owned())
                );
                assert_eq!(r.settings.mesh.as_ref().unwrap().hooks, Some(true));
                assert_eq!(source(r, "mesh.hooks"), "profile team-member");
                assert_eq!(source(r, "mesh.tokenFile"), USER);
                assert_eq!(source(r, "mcp.presets[2]"), "profile team-member");
            },
        },
        Case {
            name: "args accumulate across layers; presets too, without repeats",
            project: "args: [--verbose]\nmcp:\n  presets: [github, git]\n",
            user: "",
            command_line: "args: [--debug]\n",
            check: |r| {
                assert_eq!(
                    r.settings.args.as_deref().unwrap(),
                    ["--verbose", "--debug"]
                );
                assert_eq!(source(r, "args[1]"), "command line");
                assert_eq!(servers(r), ["filesystem", "git", "github"]);
                assert_eq!(source(r, "mcp.presets[2]"), PROJECT);
            },
        },
        Case {
            name: "a file overrides one field of a preset and adds its own server",
            project: "mcp:\n  servers:\n    filesystem:\n      args: [-y, '@modelcontextprotocol/server-filesystem', /data]\n    docs:\n      url: https://docs.example/mcp\n",
            user: "",
            command_line: "",
            check: |r| {
                let fs = &r.servers["filesystem"];
                assert_eq!(fs.command.as_deref(), Some("npx"));
                assert_eq!(fs.args.as_ref().unwrap()[2], "/data");
                assert_eq!(
                    source(r, "mcp.servers.filesystem.command"),
                    "preset filesystem"
                );
                assert_eq!(source(r, "mcp.servers.filesystem.args[2]"), PROJECT);
                assert_eq!(
                    r.servers["docs"].url.as_deref(),
                    Some("https://docs.example/mcp")
                );
            },
        },
        Case {
            name: "a user-defined profile extends a built-in one; the project picks it",
            project: "profile: reviewer\n",
            user: "profiles:\n  reviewer:\n    profile: team-member\n    model: opus\n    permissionMode: plan\nmesh:\n  tokenFile: /t\n",
            command_line: "",
            check: |r| {
                assert_eq!(r.profile, "reviewer");
                assert_eq!(r.settings.model.as_deref(), Some("opus"));
                assert_eq!(source(r, "model"), "profile reviewer");
                assert!(r.servers.contains_key("mesh"));
            },
        },
    ];
    for case in cases {
        let resolved = resolve(&inputs(case.project, case.user, case.command_line))
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let result = std::panic::catch_unwind(|| (case.check)(&resolved));
        assert!(result.is_ok(), "case failed: {}", case.name);
    }
}

#[test]
fn errors_name_the_layer_at_fault() {
    let cases: [(&str, &str, &str, &[&str]); 6] = [
        (
            "profile: nope\n",
            "",
            "",
            &[
                PROJECT,
                "profile `nope` is not defined",
                "solo-developer, team-member",
            ],
        ),
        (
            "",
            "profiles:\n  a:\n    profile: b\n  b:\n    profile: a\n",
            "profile: a\n",
            &["in a circle: a -> b -> a"],
        ),
        (
            "",
            "",
            "profile: team-member\n",
            &[
                "mcp.presets",
                "the `mesh` preset needs `mesh.tokenFile`",
                "profile team-member",
            ],
        ),
        (
            "mcp:\n  presets: [gopher]\n",
            "",
            "",
            &[
                &format!("{PROJECT} line 2: mcp.presets"),
                "there is no preset `gopher`",
            ],
        ),
        (
            "mcp:\n  servers:\n    x:\n      command: a\n      url: http://b\n",
            "",
            "",
            &[PROJECT, "mcp.servers.x: has both `command` and `url`"],
        ),
        (
            "",
            "profiles:\n  p:\n    profiles: {}\n",
            "profile: p\n",
            &[USER, "`profiles` cannot be nested inside profile `p`"],
        ),
    ];
    for (project, user, command_line, needles) in cases {
        let err = resolve(&inputs(project, user, command_line))
            .unwrap_err()
            .to_string();
        for needle in needles {
            assert!(err.contains(needle), "{err:?} should contain {needle:?}");
        }
    }
}

#[test]
fn explain_lists_every_value_with_its_source() {
    let resolved = resolve(&inputs("model: sonnet\n", "", "")).unwrap();
    let lines = nsh_agent_config::layers::explain(&resolved);
    let find = |path: &str| lines.iter().find(|(p, _, _)| p == path).cloned().unwrap();
    assert_eq!(
        find("model"),
        ("model".into(), "\"sonnet\"".into(), PROJECT.into())
    );
    assert_eq!(find("profile").1, "\"solo-developer\"");
    assert_eq!(find("mcp.servers.git.command").2, "preset git");
}
