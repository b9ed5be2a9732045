//! Bad `.agent.yaml` files are refused with the file, the line and the key named.

use std::path::Path;

use nsh_agent_config::files::parse;

fn error(text: &str) -> String {
    parse(Path::new("/src/app/.agent.yaml"), text)
        .unwrap_err()
        .to_string()
}

#[test]
fn an_unknown_key_names_file_line_and_key() {
    let err = error("model: opus\nmesh:\n  server: ws://x\n  tokn_file: /t\n");
    assert!(err.starts_with("/src/app/.agent.yaml:"), "{err}");
    assert!(err.contains("tokn_file"), "{err}");
    assert!(err.contains("line 4 column 3"), "{err}");
    assert!(err.contains("expected one of server, tokenFile"), "{err}");
    // The snippet points into the file by its name.
    assert!(err.contains("--> /src/app/.agent.yaml:4:3"), "{err}");
}

#[test]
fn a_bad_type_names_the_key() {
    let err = error("model: opus\nargs: --verbose\n");
    assert!(
        err.contains("line 2 column 7") && err.contains("args: --verbose"),
        "{err}"
    );
    let err = error("mesh:\n  hooks: maybe\n");
    assert!(err.contains("line 2 column 10: invalid boolean"), "{err}");
    let err = error("permissionMode: yolo\n");
    assert!(err.contains("yolo"), "{err}");
}

#[test]
fn empty_and_valid_files_parse() {
    assert_eq!(
        parse(Path::new("a"), "").unwrap().settings,
        Default::default()
    );
    let file = parse(
        Path::new("a"),
        "profile: team-member\nmodel: opus\nmcp:\n  presets: [github]\n  servers:\n    docs:\n      url: https://docs.example/mcp\n",
    )
    .unwrap();
    assert_eq!(file.settings.model.as_deref(), Some("opus"));
}

#[test]
fn token_file_paths_are_resolved_against_home_and_the_config_folder() {
    use nsh_agent_config::files::{check_files, resolve_paths};
    let resolved = |text: &str| {
        let mut file = parse(Path::new("/src/app/.agent.yaml"), text).unwrap();
        resolve_paths(&mut file, Some(Path::new("/home/dev"))).map(|()| file)
    };
    let token = |file: &nsh_agent_config::layers::ConfigFile| {
        file.settings
            .mesh
            .as_ref()
            .unwrap()
            .token_file
            .clone()
            .unwrap()
    };
    assert_eq!(
        token(&resolved("mesh:\n  tokenFile: ~/.config/nsh/alice.jwt\n").unwrap()),
        "/home/dev/.config/nsh/alice.jwt"
    );
    assert_eq!(
        token(&resolved("mesh:\n  tokenFile: keys/alice.jwt\n").unwrap()),
        "/src/app/keys/alice.jwt",
        "relative to the config file, not the working folder"
    );
    assert_eq!(
        token(&resolved("mesh:\n  tokenFile: /abs/alice.jwt\n").unwrap()),
        "/abs/alice.jwt"
    );
    let profile = resolved("profiles:\n  p:\n    mesh:\n      tokenFile: p.jwt\n").unwrap();
    let p = &profile.settings.profiles.as_ref().unwrap()["p"];
    assert_eq!(
        p.mesh.as_ref().unwrap().token_file.as_deref(),
        Some("/src/app/p.jwt")
    );
    let err = resolved("model: x\nmesh:\n  tokenFile: ~bob/alice.jwt\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/src/app/.agent.yaml: line 3: mesh.tokenFile") && err.contains("~/"),
        "{err}"
    );

    // A missing file names the config file, the line and how to make it.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join(".agent.yaml");
    let mut file = parse(&config, "mesh:\n  tokenFile: alice.jwt\n").unwrap();
    resolve_paths(&mut file, None).unwrap();
    let err = check_files(&file).unwrap_err().to_string();
    assert!(
        err.contains(&format!("{}: line 2: mesh.tokenFile: ", config.display()))
            && err.contains("does not exist")
            && err.contains("nsh mesh token"),
        "{err}"
    );
    std::fs::write(dir.path().join("alice.jwt"), "x").unwrap();
    check_files(&file).unwrap();
}
