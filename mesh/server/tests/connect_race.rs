//! A client may emit the moment it is connected (socket.io-client users do it in their
//! `connect` callback, `nsh mesh send` does it): the event is answered, never dropped because
//! the server had not yet set the socket up.

mod common;

use std::time::Duration;

use common::{TestMesh, token_for};
use nsh_mesh_transport::client::{Client, ClientConfig};
use nsh_mesh_transport::wire::{GroupAck, GroupRequest, PresenceList, event};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_emitted_at_once_after_connect_are_answered() {
    let limits = nsh_mesh_server::Limits {
        connect_rate: nsh_mesh_server::RateLimit {
            per_second: 1000.0,
            burst: 1000,
        },
        ..nsh_mesh_server::Limits::default()
    };
    let mesh = TestMesh::with_limits(limits).await;
    // Many at once, so connect handlers queue behind each other while events arrive.
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let url = mesh.url.clone();
            tokio::spawn(async move {
                let agent = format!("agent-{i}");
                let config = ClientConfig {
                    ack_timeout: Duration::from_secs(5),
                    ..ClientConfig::new(&url).with_token(token_for("alpha", &agent, &["*"]))
                };
                let (client, _incoming) = Client::connect(config).await.unwrap();
                let (group, empty) = (
                    GroupRequest {
                        group: "ops".into(),
                    },
                    json!({}),
                );
                // Nothing between the connect and the emits.
                let joined = client.request::<_, GroupAck>(event::GROUP_JOIN, &group);
                let list = client.request::<_, PresenceList>(event::PRESENCE, &empty);
                let (joined, list) = tokio::join!(joined, list);
                let joined = joined.unwrap_or_else(|e| panic!("{agent}: group:join: {e}"));
                assert!(joined.ok, "{agent}: {joined:?}");
                let list = list.unwrap_or_else(|e| panic!("{agent}: presence: {e}"));
                assert!(
                    list.agents.iter().any(|a| a.id == agent),
                    "{agent} sees itself online: the connection was set up first"
                );
                client.disconnect().await;
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}
