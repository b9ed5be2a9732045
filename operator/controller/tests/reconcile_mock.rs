//! Reconcile branches against a scripted apiserver (tower-test), fast and without a cluster:
//! which requests each branch makes, in order, and what status it writes. The real-apiserver
//! tests (`reconcile.rs`) cover the happy paths end to end.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use nsh_operator::{Context, Error};
use nsh_operator_api::conditions::reason;
use nsh_operator_api::{Agent, MeshServer, Team};
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

/// One expected request: its method and path, and the answer to give.
struct Step {
    method: Method,
    path: &'static str,
    status: StatusCode,
    answer: Value,
}

fn step(method: Method, path: &'static str, status: StatusCode, answer: Value) -> Step {
    Step {
        method,
        path,
        status,
        answer,
    }
}

fn not_found(path: &'static str) -> Step {
    step(
        Method::GET,
        path,
        StatusCode::NOT_FOUND,
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404 }),
    )
}

/// Serves `steps` in order and returns the body of every request it got; a request out of
/// script, or any after it, fails the test.
fn apiserver(steps: Vec<Step>) -> (Context, tokio::task::JoinHandle<Vec<Value>>) {
    let (service, handle): (_, Handle<Request<Body>, Response<Body>>) = mock::pair();
    let script = tokio::spawn(async move {
        let mut handle = handle;
        let mut bodies = Vec::new();
        for expected in steps {
            let (request, respond) = handle.next_request().await.unwrap_or_else(|| {
                panic!("no request; expected {} {}", expected.method, expected.path)
            });
            assert_eq!(
                (request.method(), request.uri().path()),
                (&expected.method, expected.path),
                "request out of script"
            );
            let body = request.into_body().collect_bytes().await.unwrap();
            bodies.push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            respond.send_response(
                Response::builder()
                    .status(expected.status)
                    .body(Body::from(serde_json::to_vec(&expected.answer).unwrap()))
                    .unwrap(),
            );
        }
        // Nothing after the script: a request here is one the branch must not make.
        if let Ok(Some((request, _))) =
            tokio::time::timeout(std::time::Duration::from_millis(200), handle.next_request()).await
        {
            panic!("unexpected {} {}", request.method(), request.uri().path());
        }
        bodies
    });
    let client = kube::Client::new(service, "ns");
    (Context::new(client, "nsh:test"), script)
}

fn object<K: serde::de::DeserializeOwned>(value: Value) -> Arc<K> {
    Arc::new(serde_json::from_value(value).unwrap())
}

fn agent() -> Arc<Agent> {
    object(json!({
        "apiVersion": "nsh.dev/v1alpha1", "kind": "Agent",
        "metadata": { "name": "alice", "namespace": "ns", "uid": "a1", "generation": 1 },
        "spec": { "teamRef": { "name": "alpha" } },
    }))
}

#[tokio::test]
async fn an_agent_without_its_team_reports_it_and_creates_nothing() {
    let agent = agent();
    let (ctx, script) = apiserver(vec![
        not_found("/apis/nsh.dev/v1alpha1/namespaces/ns/teams/alpha"),
        step(
            Method::PATCH,
            "/apis/nsh.dev/v1alpha1/namespaces/ns/agents/alice/status",
            StatusCode::OK,
            serde_json::to_value(agent.as_ref()).unwrap(),
        ),
    ]);
    let err = nsh_operator::agent::reconcile(agent, Arc::new(ctx))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Waiting { reason: why, .. } if why == reason::REFERENCE_MISSING),
        "{err}"
    );
    let bodies = script.await.unwrap();
    let status = &bodies[1]["status"];
    assert_eq!(status["conditions"][0]["reason"], reason::REFERENCE_MISSING);
    assert!(
        status["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Team `alpha` does not exist"),
        "{status}"
    );
    assert_eq!(status["phase"], "Pending");
    assert!(status.get("tokenExpiry").is_none(), "no token: {status}");
}

#[tokio::test]
async fn a_team_with_a_bad_token_lifetime_mints_no_key() {
    let team: Arc<Team> = object(json!({
        "apiVersion": "nsh.dev/v1alpha1", "kind": "Team",
        "metadata": { "name": "alpha", "namespace": "ns", "uid": "t1", "generation": 4 },
        "spec": { "meshRef": { "name": "mesh" }, "tokenTtl": "10s" },
    }));
    let (ctx, script) = apiserver(vec![
        not_found("/apis/nsh.dev/v1alpha1/namespaces/ns/meshservers/mesh"),
        step(
            Method::GET,
            "/apis/nsh.dev/v1alpha1/namespaces/ns/agents",
            StatusCode::OK,
            json!({ "apiVersion": "nsh.dev/v1alpha1", "kind": "AgentList", "metadata": {}, "items": [] }),
        ),
        not_found("/api/v1/namespaces/ns/secrets/alpha-team-key"),
        // Straight to the status: no POST of a key Secret.
        step(
            Method::PATCH,
            "/apis/nsh.dev/v1alpha1/namespaces/ns/teams/alpha/status",
            StatusCode::OK,
            serde_json::to_value(team.as_ref()).unwrap(),
        ),
    ]);
    let err = nsh_operator::team::reconcile(team, Arc::new(ctx))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidSpec { .. }), "{err}");
    let bodies = script.await.unwrap();
    let status = &bodies[3]["status"];
    assert_eq!(status["conditions"][0]["reason"], reason::INVALID_SPEC);
    assert_eq!(status["observedGeneration"], 4);
    assert!(
        status["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.tokenTtl:"),
        "{status}"
    );
}

#[tokio::test]
async fn a_failed_api_call_writes_no_status_and_backs_off() {
    let mesh: Arc<MeshServer> = object(json!({
        "apiVersion": "nsh.dev/v1alpha1", "kind": "MeshServer",
        "metadata": { "name": "mesh", "namespace": "ns", "uid": "m1" },
        "spec": {},
    }));
    let (ctx, script) = apiserver(vec![step(
        Method::GET,
        "/apis/nsh.dev/v1alpha1/namespaces/ns/teams",
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "etcd is away", "code": 500 }),
    )]);
    let err = nsh_operator::mesh_server::reconcile(mesh, Arc::new(ctx))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Kube(_)), "{err}");
    assert_eq!(
        err.requeue(),
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(5))
    );
    // One call, and no status patch after it.
    assert_eq!(script.await.unwrap().len(), 1);
}
