use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn init(id: i64, version: &str, capabilities: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize",
           "params": {"protocolVersion": version, "capabilities": capabilities,
                      "clientInfo": {"name": "t", "version": "1"}}})
}

fn call(id: Value, token: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "echo", "arguments": {"token": token}}})
}

/// A mux with a running, initialized server and `clients` initialized clients (ids 1..).
fn ready(clients: u64) -> Mux {
    let mut mux = Mux::new();
    let mut out = Vec::new();
    mux.upstream_started(&mut out);
    for client in 1..=clients {
        mux.join(client);
        mux.from_client(client, init(0, "2025-06-18", json!({})), &mut out);
        if client == 1 {
            let Out::Upstream(first) = &out[0] else {
                panic!("{out:?}")
            };
            let result = json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                                "serverInfo": {"name": "s", "version": "1"}});
            mux.from_upstream(
                json!({"jsonrpc": "2.0", "id": first["id"], "result": result}),
                &mut out,
            );
        }
        mux.from_client(
            client,
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            &mut out,
        );
    }
    mux
}

fn upstream(out: &[Out]) -> Vec<&Value> {
    out.iter()
        .filter_map(|o| match o {
            Out::Upstream(v) => Some(v),
            Out::Client(..) => None,
        })
        .collect()
}

fn to_client(out: &[Out], client: ClientId) -> Vec<&Value> {
    out.iter()
        .filter_map(|o| match o {
            Out::Client(c, v) if *c == client => Some(v),
            _ => None,
        })
        .collect()
}

#[test]
fn initialize_reaches_the_server_once_and_later_clients_get_their_own_version() {
    let mut mux = Mux::new();
    let mut out = Vec::new();
    mux.upstream_started(&mut out);
    mux.join(1);
    mux.join(2);
    mux.from_client(1, init(7, "2025-06-18", json!({})), &mut out);
    // The second asks before the server answered: it waits for the same answer.
    mux.from_client(2, init(7, "2024-11-05", json!({})), &mut out);
    let sent = upstream(&out);
    assert_eq!(sent.len(), 1, "one initialize at the server: {out:?}");
    let result = json!({"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "s", "version": "1"}});
    let mut out = Vec::new();
    mux.from_upstream(
        json!({"jsonrpc": "2.0", "id": sent[0]["id"], "result": result}),
        &mut out,
    );
    assert_eq!(
        to_client(&out, 1)[0]["result"]["protocolVersion"],
        "2025-06-18"
    );
    assert_eq!(
        to_client(&out, 2)[0]["result"]["protocolVersion"],
        "2024-11-05"
    );
    assert_eq!(to_client(&out, 2)[0]["id"], 7);
    assert_eq!(
        upstream(&out),
        vec![&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})]
    );
    // A third, asking for a newer revision than the server speaks, gets the server's.
    mux.join(3);
    let mut out = Vec::new();
    mux.from_client(3, init(1, "2099-01-01", json!({})), &mut out);
    assert!(upstream(&out).is_empty());
    assert_eq!(
        to_client(&out, 3)[0]["result"]["protocolVersion"],
        "2025-06-18"
    );
    // Clients' own `initialized` never reaches the server a second time.
    let mut out = Vec::new();
    mux.from_client(
        3,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        &mut out,
    );
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn the_same_id_from_two_clients_comes_back_to_each_its_own_answer() {
    let mut mux = ready(2);
    let mut out = Vec::new();
    mux.from_client(1, call(json!(1), "a"), &mut out);
    mux.from_client(2, call(json!(1), "b"), &mut out);
    let sent: Vec<Value> = upstream(&out).into_iter().cloned().collect();
    assert_ne!(sent[0]["id"], sent[1]["id"], "the server sees two ids");
    // Answers in the opposite order.
    let mut out = Vec::new();
    for request in sent.iter().rev() {
        let token = request["params"]["arguments"]["token"].clone();
        mux.from_upstream(
            json!({"jsonrpc": "2.0", "id": request["id"], "result": {"token": token}}),
            &mut out,
        );
    }
    assert_eq!(
        to_client(&out, 1),
        vec![&json!({"jsonrpc": "2.0", "id": 1, "result": {"token": "a"}})]
    );
    assert_eq!(
        to_client(&out, 2),
        vec![&json!({"jsonrpc": "2.0", "id": 1, "result": {"token": "b"}})]
    );
}

#[test]
fn progress_and_cancellation_reach_only_their_own_request() {
    let mut mux = ready(2);
    let mut out = Vec::new();
    let mut with_progress = call(json!("x"), "a");
    with_progress["params"]["_meta"] = json!({"progressToken": 5});
    mux.from_client(1, with_progress.clone(), &mut out);
    mux.from_client(2, with_progress, &mut out);
    let sent: Vec<Value> = upstream(&out).into_iter().cloned().collect();
    let token_1 = sent[0]["params"]["_meta"]["progressToken"].clone();
    let token_2 = sent[1]["params"]["_meta"]["progressToken"].clone();
    assert_ne!(
        token_1, token_2,
        "both clients chose 5; the server sees two tokens"
    );

    let mut out = Vec::new();
    mux.from_upstream(json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token_2, "progress": 1}}), &mut out);
    assert!(to_client(&out, 1).is_empty());
    assert_eq!(to_client(&out, 2)[0]["params"]["progressToken"], 5);

    // Client 1 cancels its "x": the server is told the upstream id; client 2's "x" runs on.
    let mut out = Vec::new();
    mux.from_client(1, json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "x"}}), &mut out);
    assert_eq!(upstream(&out)[0]["params"]["requestId"], sent[0]["id"]);
    let mut out = Vec::new();
    mux.from_upstream(
        json!({"jsonrpc": "2.0", "id": sent[0]["id"], "result": {}}),
        &mut out,
    );
    assert!(
        out.is_empty(),
        "a cancelled request's late answer is dropped: {out:?}"
    );
    mux.from_upstream(
        json!({"jsonrpc": "2.0", "id": sent[1]["id"], "result": {}}),
        &mut out,
    );
    assert_eq!(to_client(&out, 2)[0]["id"], "x");
}

#[test]
fn a_client_that_leaves_has_its_requests_cancelled_and_nothing_kept() {
    let mut mux = ready(2);
    let mut out = Vec::new();
    mux.from_client(1, call(json!(1), "a"), &mut out);
    mux.from_client(1, call(json!(2), "b"), &mut out);
    let mut out = Vec::new();
    mux.leave(1, &mut out);
    let cancels = upstream(&out);
    assert_eq!(cancels.len(), 2);
    assert!(
        cancels
            .iter()
            .all(|c| c["method"] == "notifications/cancelled")
    );
    assert_eq!(mux.in_flight(), 0);
    assert_eq!(mux.clients(), 1);
}

#[test]
fn server_requests_go_to_the_one_caller_in_flight_or_are_refused() {
    let mut mux = Mux::new();
    let mut out = Vec::new();
    mux.upstream_started(&mut out);
    mux.join(1);
    mux.join(2);
    mux.from_client(1, init(0, "2025-06-18", json!({"sampling": {}})), &mut out);
    let first = upstream(&out)[0]["id"].clone();
    mux.from_upstream(json!({"jsonrpc": "2.0", "id": first, "result": {"protocolVersion": "2025-06-18", "capabilities": {}}}), &mut out);
    mux.from_client(2, init(0, "2025-06-18", json!({})), &mut out);

    let sample =
        json!({"jsonrpc": "2.0", "id": 900, "method": "sampling/createMessage", "params": {}});
    // Nobody is calling: refused.
    let mut out = Vec::new();
    mux.from_upstream(sample.clone(), &mut out);
    assert!(
        upstream(&out)[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no client")
    );

    // Client 1 (which declared sampling) is calling: it gets the request, its answer goes back.
    mux.from_client(1, call(json!(1), "a"), &mut Vec::new());
    let mut out = Vec::new();
    mux.from_upstream(sample.clone(), &mut out);
    assert_eq!(to_client(&out, 1)[0]["method"], "sampling/createMessage");
    // Client 2 cannot answer a request it was not sent.
    let mut out = Vec::new();
    mux.from_client(
        2,
        json!({"jsonrpc": "2.0", "id": 900, "result": {"forged": true}}),
        &mut out,
    );
    assert!(out.is_empty(), "{out:?}");
    mux.from_client(
        1,
        json!({"jsonrpc": "2.0", "id": 900, "result": {"role": "assistant"}}),
        &mut out,
    );
    assert_eq!(upstream(&out)[0]["result"]["role"], "assistant");

    // Both calling: cannot be tied to one.
    mux.from_client(2, call(json!(1), "b"), &mut Vec::new());
    let mut out = Vec::new();
    mux.from_upstream(
        json!({"jsonrpc": "2.0", "id": 901, "method": "roots/list"}),
        &mut out,
    );
    assert!(
        upstream(&out)[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 clients")
    );

    // A ping from the server is answered by the daemon.
    let mut out = Vec::new();
    mux.from_upstream(
        json!({"jsonrpc": "2.0", "id": 902, "method": "ping"}),
        &mut out,
    );
    assert_eq!(
        out,
        vec![Out::Upstream(
            json!({"jsonrpc": "2.0", "id": 902, "result": {}})
        )]
    );
}

#[test]
fn a_server_that_exits_fails_what_is_in_flight_and_comes_back_initialized_with_list_changed() {
    let mut mux = ready(2);
    let mut out = Vec::new();
    mux.from_client(1, call(json!(1), "a"), &mut out);
    let mut out = Vec::new();
    mux.upstream_exited("exit status: 3", &mut out);
    let failed = to_client(&out, 1);
    assert_eq!(failed[0]["id"], 1);
    assert!(
        failed[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exit status: 3")
    );

    // A request while it is down waits.
    let mut out = Vec::new();
    mux.from_client(2, call(json!(4), "b"), &mut out);
    assert!(out.is_empty());
    assert_eq!(mux.queued(), 1);

    // Restarted: the daemon initializes it, then everyone hears list_changed, then the queue goes.
    let mut out = Vec::new();
    mux.upstream_started(&mut out);
    let reinit = upstream(&out)[0].clone();
    assert_eq!(reinit["method"], "initialize");
    let mut out = Vec::new();
    mux.from_upstream(json!({"jsonrpc": "2.0", "id": reinit["id"], "result": {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}}}), &mut out);
    assert_eq!(upstream(&out)[0]["method"], "notifications/initialized");
    assert_eq!(upstream(&out)[1]["params"]["arguments"]["token"], "b");
    for client in [1, 2] {
        assert_eq!(
            to_client(&out, client)[0]["method"],
            "notifications/tools/list_changed"
        );
    }
}

#[test]
fn a_server_that_never_starts_fails_its_first_callers_at_once() {
    let mut mux = Mux::new();
    let mut out = Vec::new();
    mux.join(1);
    mux.from_client(1, init(3, "2025-06-18", json!({})), &mut out);
    assert!(out.is_empty(), "queued until the server runs");
    mux.upstream_exited("cannot start `nope`: No such file or directory", &mut out);
    let failed = to_client(&out, 1);
    assert_eq!(failed[0]["id"], 3);
    assert!(
        failed[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot start `nope`")
    );
    assert_eq!(mux.queued(), 0);
}

#[test]
fn requests_that_wait_too_long_for_a_restart_get_an_error() {
    let mut mux = ready(1);
    let mut out = Vec::new();
    mux.upstream_exited("killed", &mut out);
    mux.from_client(1, call(json!(1), "a"), &mut out);
    let mut out = Vec::new();
    mux.expire(
        Instant::now() + QUEUE_LIMIT + Duration::from_secs(1),
        &mut out,
    );
    assert_eq!(to_client(&out, 1)[0]["error"]["code"], UPSTREAM_UNAVAILABLE);
    assert_eq!(mux.queued(), 0);
}

#[test]
fn garbage_gets_a_json_rpc_error_for_its_sender_only() {
    let mut mux = ready(2);
    let mut out = Vec::new();
    mux.from_client(1, Value::Null, &mut out);
    mux.from_client(1, json!({"jsonrpc": "2.0"}), &mut out);
    assert_eq!(to_client(&out, 1)[0]["error"]["code"], PARSE_ERROR);
    assert_eq!(to_client(&out, 1)[1]["error"]["code"], INVALID_REQUEST);
    assert!(to_client(&out, 2).is_empty() && upstream(&out).is_empty());
}

/// One step of a random schedule: a client sends a call, or the server answers one.
#[derive(Debug, Clone)]
enum Step {
    Call {
        client: u64,
        id: u8,
        string_id: bool,
    },
    Answer {
        pick: usize,
    },
    Cancel {
        client: u64,
        id: u8,
    },
    Leave {
        client: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1u64..5, 0u8..4, any::<bool>()).prop_map(|(client, id, string_id)| Step::Call { client, id, string_id }),
        4 => any::<usize>().prop_map(|pick| Step::Answer { pick }),
        1 => (1u64..5, 0u8..4).prop_map(|(client, id)| Step::Cancel { client, id }),
        1 => (1u64..5).prop_map(|client| Step::Leave { client }),
    ]
}

proptest! {
    /// Whatever the clients' ids (few, so they collide) and the order of answers, every answer
    /// goes to the client that asked, with its id, carrying its token; nothing is answered twice.
    #[test]
    fn no_answer_ever_reaches_the_wrong_client(steps in proptest::collection::vec(step(), 1..200)) {
        let mut mux = ready(4);
        let mut at_server: Vec<Value> = Vec::new();
        let mut left = std::collections::HashSet::new();
        let mut delivered = std::collections::HashSet::new();
        for (n, step) in steps.into_iter().enumerate() {
            let mut out = Vec::new();
            match step {
                Step::Call { client, id, string_id } => {
                    if left.contains(&client) { continue; }
                    let id = if string_id { json!(id.to_string()) } else { json!(id) };
                    let token = format!("{client}/{id}/{n}");
                    mux.from_client(client, call(id, &token), &mut out);
                }
                Step::Answer { pick } if !at_server.is_empty() => {
                    let request = at_server.swap_remove(pick % at_server.len());
                    let token = request["params"]["arguments"]["token"].clone();
                    mux.from_upstream(json!({"jsonrpc": "2.0", "id": request["id"], "result": {"token": token}}), &mut out);
                }
                Step::Answer { .. } => {}
                Step::Cancel { client, id } => {
                    mux.from_client(client, json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": id}}), &mut out);
                }
                Step::Leave { client } => {
                    left.insert(client);
                    mux.leave(client, &mut out);
                }
            }
            for o in out {
                match o {
                    Out::Upstream(v) if v.get("method").and_then(Value::as_str) == Some("tools/call") => at_server.push(v),
                    Out::Upstream(_) => {}
                    Out::Client(client, v) => {
                        prop_assert!(!left.contains(&client), "an answer for a client that left");
                        let token = v["result"]["token"].as_str().expect("a token");
                        let mut parts = token.split('/');
                        let (owner, id) = (parts.next().unwrap(), parts.next().unwrap());
                        prop_assert_eq!(owner, client.to_string(), "answer to the wrong client");
                        prop_assert_eq!(id, v["id"].to_string(), "answer with the wrong id");
                        prop_assert!(delivered.insert(token.to_owned()), "answered twice: {}", token);
                    }
                }
            }
        }
    }
}
