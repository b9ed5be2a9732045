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
