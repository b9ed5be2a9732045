//! Smoke tests of the harness's Redis: a real server, and a real outage a client recovers from.

use std::time::Duration;

use nsh_testenv::{RedisServer, wait_for};
use redis::AsyncCommands as _;

#[tokio::test]
async fn a_key_round_trips_through_redis() {
    let server = RedisServer::start().unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let () = connection.set("nsh:smoke", "hello").await.unwrap();
    let value: String = connection.get("nsh:smoke").await.unwrap();
    assert_eq!(value, "hello");
    // Persistence is off, as the harness promises.
    let save: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(save, ["save", ""]);
}

#[tokio::test]
async fn a_client_reconnects_after_redis_restarts() {
    let mut server = RedisServer::start().unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(1)));
    let mut connection = client
        .get_connection_manager_with_config(config)
        .await
        .unwrap();
    let () = connection.set("before", 1).await.unwrap();

    server.stop();
    assert!(!server.is_running());
    let down: redis::RedisResult<Option<i64>> = connection.get("before").await;
    assert!(down.is_err(), "a stopped server answered: {down:?}");

    server.start_again().unwrap();
    // Same port, fresh process: the data is gone (no persistence) and the client is back.
    let value: Option<i64> = wait_for(
        "the connection manager to reconnect",
        Duration::from_secs(20),
        || {
            let mut connection = connection.clone();
            async move {
                connection
                    .get::<_, Option<i64>>("before")
                    .await
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await;
    assert_eq!(value, None);
    let () = connection.set("after", 2).await.unwrap();
    let after: i64 = connection.get("after").await.unwrap();
    assert_eq!(after, 2);
}
