//! Bad input to `nsh mesh client`: missing or expired tokens fail at start-up with a clear
//! error; a mesh that is down is reported, not hung on; `mesh_connect` refuses a bad token.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

fn start_up_error(args: &[String]) -> String {
    let output = Command::new(common::nsh_path())
        .args(args)
        .env_remove("NSH_MESH_TOKEN")
        .env_remove("NSH_MESH_TOKEN_FILE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success(), "{args:?} should fail");
    assert!(
        output.stdout.is_empty(),
        "stdout is the MCP channel: nothing else goes there"
    );
    String::from_utf8(output.stderr).unwrap()
}

#[tokio::test]
async fn tokens_that_cannot_work_are_refused_at_start_up() {
    let mesh = common::MeshProcess::start().await;
    let inbox = mesh.path("inbox");
    let base = ["mesh", "client", "--server", &mesh.url(), "--inbox-dir"]
        .map(str::to_owned)
        .to_vec();
    let with = |extra: &[&str]| {
        let mut args = base.clone();
        args.push(inbox.display().to_string());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };

    let missing = start_up_error(&with(&[]));
    assert!(missing.contains("no token: pass --token-file"), "{missing}");

    let expired = mesh.token("alice", &[], -3600);
    let err = start_up_error(&with(&["--token", &expired]));
    assert!(
        err.contains("the token expired") && err.contains("nsh mesh token"),
        "{err}"
    );

    let err = start_up_error(&with(&["--token", "not-a-jwt"]));
    assert!(err.contains("not a JWT"), "{err}");

    let err = start_up_error(&with(&["--token-file", "/nonexistent/alice.jwt"]));
    assert!(
        err.contains("cannot read the token file /nonexistent/alice.jwt"),
        "{err}"
    );

    let token = mesh.token("alice", &[], 3600);
    let mut args = vec![
        "mesh".to_owned(),
        "client".to_owned(),
        "--server".to_owned(),
        "ftp://x".to_owned(),
    ];
    args.extend(["--token".to_owned(), token]);
    let err = start_up_error(&args);
    assert!(err.contains("--server"), "{err}");
}

#[tokio::test]
async fn a_mesh_that_is_down_is_reported_and_mesh_connect_checks_tokens() {
    let mesh = common::MeshProcess::start().await;
    // A port this test holds without listening on it: connections to it are refused.
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let nowhere = format!("ws://127.0.0.1:{}", held.local_addr().unwrap().port());
    let alice = common::mcp_client(
        &common::client_args(
            &nowhere,
            &mesh.token_file("alice", &[]),
            &mesh.path("inbox"),
        ),
        &mesh.path("alice.log"),
    )
    .await;

    // Nothing listens there: the session works, tools say why they cannot reach the mesh.
    let presence = nsh_testenv::wait_for("a failed attempt", Duration::from_secs(15), || async {
        let (_, presence) = common::call(&alice, "mesh_presence", json!({})).await;
        Ok((presence["connection"]["state"] == "disconnected").then_some(presence))
    })
    .await;
    assert!(
        presence["connection"]["reason"]
            .as_str()
            .unwrap()
            .contains("could not reach"),
        "{presence}"
    );
    let (failed, error) =
        common::call(&alice, "mesh_send", json!({ "to": "bob", "text": "hi" })).await;
    assert!(failed);
    assert_eq!(error["error"]["code"], "not_connected");
    assert!(
        error["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("mesh_connect")
    );

    // A new token must be valid and for this agent; the connection is left alone otherwise.
    let expired = mesh.token("alice", &[], -3600);
    let (failed, error) = common::call(
        &alice,
        "mesh_connect",
        json!({ "server": mesh.url(), "token": expired }),
    )
    .await;
    assert!(failed);
    assert_eq!(error["error"]["code"], "bad_token", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    let other = mesh.token("mallory", &[], 3600);
    let (failed, error) = common::call(&alice, "mesh_connect", json!({ "token": other })).await;
    assert!(failed);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`alpha/mallory`"),
        "{error}"
    );
    let (failed, error) =
        common::call(&alice, "mesh_connect", json!({ "server": "gopher://x" })).await;
    assert!(failed);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("server:"),
        "{error}"
    );

    // Pointed at the live mesh, it connects at once and says so.
    let (failed, connected) =
        common::call(&alice, "mesh_connect", json!({ "server": mesh.url() })).await;
    assert!(!failed, "{connected}");
    assert_eq!(connected["connection"]["state"], "connected");
    alice.cancel().await.unwrap();
}

/// A token whose `sub` is a path (the server refuses it, but the client reads its claims
/// without the key) must not make the client touch files outside its inbox folder.
#[tokio::test]
async fn a_token_naming_a_path_touches_no_file() {
    let mesh = common::MeshProcess::start().await;
    let key = std::fs::read_to_string(mesh.path("keys").join(common::TEAM)).unwrap();
    let now = nsh_mesh_transport::token::now_unix();
    let claims = json!({ "sub": "../../escape", "team": common::TEAM, "iss": "nsh-mesh",
        "aud": "nsh-mesh", "iat": now, "exp": now + 600, "jti": "j" });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some(common::TEAM.into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key.trim().as_bytes()).unwrap(),
    )
    .unwrap();
    let inbox = mesh.path("a/b/inbox");
    let args: Vec<String> = [
        "mesh",
        "client",
        "--server",
        &mesh.url(),
        "--token",
        &token,
        "--inbox-dir",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([inbox.display().to_string()])
    .collect();
    let err = start_up_error(&args);
    assert!(
        err.contains("../../escape") && err.contains("file name"),
        "{err}"
    );
    for planted in [
        "escape.lock",
        "escape.cursor",
        "escape.jsonl",
        "a/escape.lock",
    ] {
        assert!(!mesh.path(planted).exists(), "{planted} was created");
    }
    assert!(!inbox.exists(), "nothing was created");
}
