//! `nsh mesh keygen|token|server` as a user runs them.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use nsh_mesh_transport::token::{self, TeamKey};
use predicates::prelude::*;

fn nsh() -> Command {
    Command::cargo_bin("nsh").expect("the nsh binary is built by cargo test")
}

#[test]
fn keygen_writes_a_private_key_file_and_never_overwrites_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alpha");
    nsh()
        .args(["mesh", "keygen", "--out"])
        .arg(&path)
        .assert()
        .success();
    let first = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        first.trim().len(),
        44,
        "32 random bytes in base64: {first:?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    nsh()
        .args(["mesh", "keygen", "--out"])
        .arg(&path)
        .assert()
        .failure()
        .stderr(predicate::str::starts_with("error: --out"))
        .stderr(predicate::str::contains("never overwritten"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
}

#[test]
fn token_prints_a_jwt_that_verifies_with_the_team_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alpha");
    nsh()
        .args(["mesh", "keygen", "--out"])
        .arg(&path)
        .assert()
        .success();
    let output = nsh()
        .args([
            "mesh",
            "token",
            "--team",
            "alpha",
            "--agent",
            "alice",
            "--groups",
            "ops,dev",
            "--ttl",
            "2h",
            "--key-file",
        ])
        .arg(&path)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let jwt = String::from_utf8(output).unwrap();
    let keys = HashMap::from([(
        "alpha".to_owned(),
        TeamKey::from_file_contents(&std::fs::read(&path).unwrap()).unwrap(),
    )]);
    let claims = token::verify(&jwt, &keys).unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.team.as_str()),
        ("alice", "alpha")
    );
    assert_eq!(claims.groups, ["ops", "dev"]);
    assert_eq!(claims.exp - claims.iat, 7200);
}

#[test]
fn token_errors_name_the_flag() {
    nsh()
        .args([
            "mesh",
            "token",
            "--team",
            "alpha",
            "--agent",
            "alice",
            "--key-file",
            "/nonexistent/key",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--key-file /nonexistent/key"));
    nsh()
        .args([
            "mesh",
            "server",
            "--team-keys-dir",
            "/nonexistent",
            "--rate-limit",
            "fast",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--rate-limit"))
        .stderr(predicate::str::contains("e.g. 50/s"));
}

#[test]
fn server_serves_readyz_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    nsh()
        .args(["mesh", "keygen", "--out"])
        .arg(dir.path().join("alpha"))
        .assert()
        .success();
    let mut server = StdCommand::new(assert_cmd::cargo::cargo_bin("nsh"))
        .args([
            "--log-format",
            "json",
            "mesh",
            "server",
            "--listen",
            "127.0.0.1:0",
            "--team-keys-dir",
        ])
        .arg(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut logs = BufReader::new(server.stderr.take().unwrap()).lines();
    let first: serde_json::Value =
        serde_json::from_str(&logs.next().unwrap().unwrap()).expect("JSON log line");
    assert_eq!(
        first["fields"]["message"], "mesh server listening",
        "{first}"
    );
    // It listens where it says: port 0 picked a free one.
    let addr: std::net::SocketAddr = first["fields"]["addr"].as_str().unwrap().parse().unwrap();
    let port = addr.port();
    assert_ne!(port, 0);

    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read as _, Write as _};
            stream.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").unwrap();
            let mut response = String::new();
            let _ = stream.read_to_string(&mut response);
            break response;
        }
        assert!(Instant::now() < deadline, "server never listened");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        ready.starts_with("HTTP/1.0 200") && ready.ends_with("ok"),
        "{ready}"
    );

    StdCommand::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    let status = server.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let rest: Vec<String> = logs.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("mesh server stopped")),
        "{rest:?}"
    );
}

#[test]
fn up_runs_the_mesh_with_a_local_team_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let mut up = StdCommand::new(assert_cmd::cargo::cargo_bin("nsh"))
        .args([
            "up",
            "--mesh-port",
            "0",
            "--gateway-port",
            "0",
            "--data-dir",
        ])
        .arg(data.path())
        // No npx or uvx: no gateway upstream to start, this test is about the mesh.
        .env("PATH", data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(up.stdout.take().unwrap()).lines();
    let banner = stdout
        .find(|l| {
            l.as_ref()
                .is_ok_and(|l| l.starts_with("mesh-server: ws://"))
        })
        .unwrap()
        .unwrap();
    // Port 0: the banner says which port was picked.
    let port: u16 = banner
        .strip_prefix("mesh-server: ws://127.0.0.1:")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no bound address in {banner}"));
    assert_ne!(port, 0, "{banner}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "the mesh listens where the banner says: {banner}"
    );

    // The printed recipe works: a token minted with the local key verifies against it.
    let key_path = data.path().join("team-keys/local");
    let key = TeamKey::from_file_contents(&std::fs::read(&key_path).unwrap()).unwrap();
    let output = nsh()
        .args([
            "mesh",
            "token",
            "--team",
            "local",
            "--agent",
            "me",
            "--key-file",
        ])
        .arg(&key_path)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let keys = HashMap::from([("local".to_owned(), key)]);
    token::verify(&String::from_utf8(output).unwrap(), &keys).unwrap();

    StdCommand::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .unwrap();
    assert!(up.wait().unwrap().success());
}
