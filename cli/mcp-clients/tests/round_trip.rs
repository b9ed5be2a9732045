//! Real-world config files of every client (comments, trailing commas, unknown fields, other
//! servers): install then uninstall leaves each file byte for byte as it was, edits are backed
//! up, and a file that does not parse is refused and left alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nsh_agent_config::settings::McpServer;
use nsh_mcp_clients::clients::{Env, Os, Scope, client};
use nsh_mcp_clients::{InstallOptions, install, list_installed, uninstall};

/// A home and a project folder holding the fixture files where each client keeps them.
struct Home {
    root: tempfile::TempDir,
}

const FIXTURES: [(&str, &str, &str); 9] = [
    (
        "claude-code",
        "claude-code/claude.json",
        "home/.claude.json",
    ),
    ("claude-code", "claude-code/mcp.json", "project/.mcp.json"),
    (
        "claude-desktop",
        "claude-desktop/claude_desktop_config.json",
        "home/.config/Claude/claude_desktop_config.json",
    ),
    ("cursor", "cursor/mcp.json", "home/.cursor/mcp.json"),
    (
        "vscode",
        "vscode/mcp.json",
        "home/.config/Code/User/mcp.json",
    ),
    ("vscode", "vscode/mcp.json", "project/.vscode/mcp.json"),
    (
        "windsurf",
        "windsurf/mcp_config.json",
        "home/.codeium/windsurf/mcp_config.json",
    ),
    ("codex", "codex/config.toml", "home/.codex/config.toml"),
    (
        "gemini",
        "gemini/settings.json",
        "home/.gemini/settings.json",
    ),
];

impl Home {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        for (_, fixture, target) in FIXTURES {
            let target = root.path().join(target);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(fixture_path(fixture), target).unwrap();
        }
        Self { root }
    }

    fn env(&self) -> Env {
        Env {
            home: self.root.path().join("home"),
            project_dir: PathBuf::from("/src/app"),
            os: Os::Linux,
            appdata: None,
            xdg_config_home: None,
            codex_home: None,
        }
    }

    fn project_env(&self) -> Env {
        Env {
            project_dir: self.root.path().join("project"),
            ..self.env()
        }
    }

    /// Every file under the root, with its bytes.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.insert(path.clone(), std::fs::read(&path).unwrap());
                }
            }
        }
        let mut files = BTreeMap::new();
        walk(self.root.path(), &mut files);
        files
    }
}

fn fixture_path(name: &str) -> PathBuf {
    // At run time, not `env!`: the target dir is shared between checkouts.
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test"))
        .join("tests/fixtures")
        .join(name)
}

fn stdio() -> McpServer {
    McpServer {
        command: Some("/usr/local/bin/nsh".into()),
        args: Some(vec![
            "mesh".into(),
            "client".into(),
            "--token-file".into(),
            "/t".into(),
        ]),
        env: Some(BTreeMap::from([("NSH_LOG".into(), "info".into())])),
        ..McpServer::default()
    }
}

fn remote() -> McpServer {
    McpServer {
        url: Some("http://gateway.team.svc:8080/mcp".into()),
        ..McpServer::default()
    }
}

#[test]
fn fixtures_list_their_existing_servers() {
    let home = Home::new();
    let (installed, problems) = list_installed(&home.project_env(), None);
    assert!(problems.is_empty(), "{problems:?}");
    let found: Vec<(String, String, String)> = installed
        .iter()
        .map(|i| {
            (
                i.client.id.to_owned(),
                i.scope.as_str().to_owned(),
                i.name.clone(),
            )
        })
        .collect();
    for expected in [
        ("claude-code", "user", "sentry"),
        ("claude-code", "project", "postgres"),
        ("claude-desktop", "user", "filesystem"),
        ("cursor", "user", "linear"),
        ("cursor", "user", "browser"),
        ("vscode", "user", "github"),
        ("vscode", "project", "github"),
        ("windsurf", "user", "context7"),
        ("codex", "user", "docs"),
        ("gemini", "user", "playwright"),
    ] {
        let expected = (
            expected.0.to_owned(),
            expected.1.to_owned(),
            expected.2.to_owned(),
        );
        assert!(found.contains(&expected), "{expected:?} not in {found:?}");
    }
    let windsurf = installed.iter().find(|i| i.name == "context7").unwrap();
    assert_eq!(
        windsurf.server.url.as_deref(),
        Some("https://mcp.context7.com/mcp")
    );
    let codex = installed.iter().find(|i| i.name == "docs").unwrap();
    assert_eq!(codex.server.env.as_ref().unwrap()["DOCS_ROOT"], "/srv/docs");
}

#[test]
fn install_then_uninstall_leaves_every_file_byte_for_byte() {
    let cases: [(&str, Scope, bool); 10] = [
        ("claude-code", Scope::User, true),
        ("claude-code", Scope::Project, true),
        ("claude-code", Scope::Local, true),
        ("claude-desktop", Scope::User, false),
        ("cursor", Scope::User, true),
        ("vscode", Scope::User, true),
        ("vscode", Scope::Project, true),
        ("windsurf", Scope::User, true),
        ("codex", Scope::User, true),
        ("gemini", Scope::User, true),
    ];
    for (id, scope, takes_urls) in cases {
        for (label, server) in [("stdio", stdio()), ("remote", remote())] {
            if label == "remote" && !takes_urls {
                continue;
            }
            let home = Home::new();
            // Claude Code's local scope lives in the project's entry of ~/.claude.json, which
            // the fixture has for /src/app; the project scope's files are under `project/`.
            let env = if scope == Scope::Local {
                home.env()
            } else {
                home.project_env()
            };
            let client = client(id).unwrap();
            let before = home.snapshot();
            let path = client.location(&env, scope).unwrap().path;

            let change = install(
                client,
                &env,
                scope,
                "nsh-mesh",
                &server,
                InstallOptions::default(),
            )
            .unwrap();
            assert!(change.changed, "{id} {scope:?} {label}");
            assert_eq!(change.path, path);
            let backup = change.backup.clone().unwrap();
            assert_eq!(
                std::fs::read(&backup).unwrap(),
                before[&path],
                "{id}: the backup is the old file"
            );
            let text = std::fs::read_to_string(&path).unwrap();
            // Everything that was there is still there (but the empty object we filled).
            for line in String::from_utf8(before[&path].clone()).unwrap().lines() {
                let line = line.trim().trim_end_matches(',');
                if !line.is_empty()
                    && !line.ends_with("{}")
                    && !["{", "}", "]", "[", "},"].contains(&line)
                {
                    assert!(
                        text.contains(line),
                        "{id} {scope:?} {label}: lost {line:?}\n{text}"
                    );
                }
            }
            let (installed, problems) = list_installed(&env, Some(client));
            assert!(problems.is_empty(), "{id}: {problems:?}\n{text}");
            let ours = installed
                .iter()
                .find(|i| i.name == "nsh-mesh" && i.scope == scope)
                .unwrap();
            assert_eq!(
                (&ours.server.command, &ours.server.url),
                (&server.command, &server.url),
                "{id}\n{text}"
            );

            // Installing the same again is a no-op: no write, no new backup.
            let again = install(
                client,
                &env,
                scope,
                "nsh-mesh",
                &server,
                InstallOptions::default(),
            )
            .unwrap();
            assert!(!again.changed && again.backup.is_none(), "{id}");

            uninstall(client, &env, Some(scope), "nsh-mesh").unwrap();
            let after = std::fs::read(&path).unwrap();
            assert_eq!(
                String::from_utf8(after).unwrap(),
                String::from_utf8(before[&path].clone()).unwrap(),
                "{id} {scope:?} {label}: uninstall restores the file exactly"
            );
        }
    }
}

#[test]
fn a_new_file_is_created_and_a_missing_scope_is_named() {
    let home = Home::new();
    let env = home.env();
    let cursor = client("cursor").unwrap();
    let project = tempfile::tempdir().unwrap();
    let env = Env {
        project_dir: project.path().to_owned(),
        ..env
    };
    let change = install(
        cursor,
        &env,
        Scope::Project,
        "nsh-mesh",
        &stdio(),
        InstallOptions::default(),
    )
    .unwrap();
    assert!(change.backup.is_none(), "nothing to back up");
    let written: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(project.path().join(".cursor/mcp.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        written["mcpServers"]["nsh-mesh"]["command"],
        "/usr/local/bin/nsh"
    );

    let err = install(
        client("windsurf").unwrap(),
        &env,
        Scope::Project,
        "x",
        &stdio(),
        InstallOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Windsurf has no project scope (it has: user)"
    );
    let err = install(
        client("claude-desktop").unwrap(),
        &env,
        Scope::User,
        "x",
        &remote(),
        InstallOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("cannot take a server by URL"),
        "{err}"
    );
    let err = uninstall(cursor, &env, None, "never-installed").unwrap_err();
    assert_eq!(
        err.to_string(),
        "`never-installed` is not installed in Cursor"
    );
}

#[test]
fn a_corrupt_file_is_refused_and_left_untouched() {
    for (id, relative, broken) in [
        (
            "cursor",
            "home/.cursor/mcp.json",
            "{\n  \"mcpServers\": {\n    \"a\": { \"command\": \"x\" \n  }\n",
        ),
        (
            "codex",
            "home/.codex/config.toml",
            "model = \"gpt\"\n[mcp_servers.docs\ncommand = 1\n",
        ),
        ("gemini", "home/.gemini/settings.json", "[1, 2]"),
        (
            "windsurf",
            "home/.codeium/windsurf/mcp_config.json",
            "{ \"mcpServers\": [] }",
        ),
    ] {
        let home = Home::new();
        let path = home.root.path().join(relative);
        std::fs::write(&path, broken).unwrap();
        let before = home.snapshot();
        let err = install(
            client(id).unwrap(),
            &home.env(),
            Scope::User,
            "nsh-mesh",
            &stdio(),
            InstallOptions::default(),
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&path.display().to_string()),
            "{id}: {message}"
        );
        assert!(message.contains("left untouched"), "{id}: {message}");
        assert_eq!(home.snapshot(), before, "{id}: nothing written, no backup");
        let (_, problems) = list_installed(&home.env(), Some(client(id).unwrap()));
        assert_eq!(problems.len(), 1, "{id}: listing reports the broken file");
    }
}

#[test]
fn a_different_server_of_the_same_name_is_replaced_only_with_force() {
    let home = Home::new();
    let env = home.project_env();
    let cursor = client("cursor").unwrap();
    let path = home.root.path().join("home/.cursor/mcp.json");
    let ours = stdio();
    install(
        cursor,
        &env,
        Scope::User,
        "mesh",
        &ours,
        InstallOptions::default(),
    )
    .unwrap();
    let installed = std::fs::read(&path).unwrap();
    let other = McpServer {
        command: Some("foo".into()),
        ..McpServer::default()
    };

    let err = install(
        cursor,
        &env,
        Scope::User,
        "mesh",
        &other,
        InstallOptions::default(),
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("`mesh` is already in") && message.contains("--force"),
        "{message}"
    );
    assert!(
        message.contains("-      \"command\": \"/usr/local/bin/nsh\"")
            && message.contains("+      \"command\": \"foo\""),
        "the difference is shown: {message}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), installed, "nothing written");

    let dry = InstallOptions {
        force: true,
        dry_run: true,
    };
    let change = install(cursor, &env, Scope::User, "mesh", &other, dry).unwrap();
    assert!(change.changed && !change.written && change.backup.is_none());
    assert!(change.diff.starts_with("--- "), "{}", change.diff);
    assert!(
        change.diff.contains("+      \"command\": \"foo\""),
        "{}",
        change.diff
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        installed,
        "a dry run writes nothing"
    );

    let force = InstallOptions {
        force: true,
        dry_run: false,
    };
    let change = install(cursor, &env, Scope::User, "mesh", &other, force).unwrap();
    assert!(change.written);
    let (now, _) = list_installed(&env, Some(cursor));
    let mesh = now.iter().find(|i| i.name == "mesh").unwrap();
    assert_eq!(mesh.server.command.as_deref(), Some("foo"));
}

#[test]
fn uninstall_leaves_a_file_it_created_as_it_found_it_and_names_the_right_scope() {
    let home = Home::new();
    let project = tempfile::tempdir().unwrap();
    let env = Env {
        project_dir: project.path().to_owned(),
        ..home.env()
    };
    let vscode = client("vscode").unwrap();
    let path = project.path().join(".vscode/mcp.json");
    assert!(!path.exists());
    install(
        vscode,
        &env,
        Scope::Project,
        "mesh",
        &stdio(),
        InstallOptions::default(),
    )
    .unwrap();
    assert!(path.exists());

    let err = uninstall(vscode, &env, Some(Scope::User), "mesh").unwrap_err();
    assert_eq!(
        err.to_string(),
        "`mesh` is not installed in VS Code's user scope; it is in the project scope: pass --scope project"
    );

    let change = uninstall(vscode, &env, Some(Scope::Project), "mesh").unwrap();
    assert!(change.deleted, "{change:?}");
    assert!(!path.exists(), "no `{{\"servers\": {{}}}}` left behind");
    assert!(
        std::fs::read_to_string(change.backup.unwrap())
            .unwrap()
            .contains("\"mesh\"")
    );
}
