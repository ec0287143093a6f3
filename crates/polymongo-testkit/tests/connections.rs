//! `connection_count`: exact server-side counts, rising with a pool's work
//! and falling back after `Client::shutdown`.

mod common;

use std::time::Duration;

use mongodb::bson::{doc, Document};
use mongodb::options::ClientOptions;
use mongodb::Client;
use polymongo_testkit::{connection_count, ServerKind, ServerOptions, TestServer};

#[tokio::test]
async fn probe_footprint_is_exactly_zero() {
    let server = TestServer::start_with(ServerOptions::new().managed(true))
        .await
        .expect("start");
    let first = server.connection_count().await.expect("count");
    if server.kind() == ServerKind::Nx27017 {
        assert_eq!(first, 0, "a fresh nx server has no client connections");
    }
    // Back-to-back probes never see each other.
    for _ in 0..20 {
        assert_eq!(server.connection_count().await.expect("count"), first);
    }
    // The free function on the URI agrees.
    assert_eq!(
        connection_count(server.uri()).await.expect("count by uri"),
        first
    );
}

#[tokio::test]
async fn count_rises_with_a_pool_and_drops_after_shutdown() {
    let server = TestServer::start_with(ServerOptions::new().managed(true))
        .await
        .expect("start");
    let baseline = server.connection_count().await.expect("baseline");

    let mut options = ClientOptions::parse(server.uri()).await.expect("parse");
    options.max_pool_size = Some(4);
    options.min_pool_size = Some(0);
    let client = Client::with_options(options).expect("client");
    let coll = client
        .database(&common::unique_name("conn"))
        .collection::<Document>("c");
    let mut tasks = Vec::new();
    for i in 0..16 {
        let coll = coll.clone();
        tasks.push(tokio::spawn(async move {
            coll.insert_one(doc! { "i": i }).await.expect("insert");
            coll.count_documents(doc! {}).await.expect("count")
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let busy = server.connection_count().await.expect("busy count");
    // At least one pooled connection plus the monitor; at most the pool plus
    // the monitoring connections (monitor, and RTT monitor when streaming).
    assert!(
        busy >= baseline + 2 && busy <= baseline + 4 + 2,
        "baseline {baseline}, with a 4-connection pool {busy}"
    );

    client.shutdown().await;
    let dropped = common::eventually(Duration::from_secs(5), || async {
        server.connection_count().await.ok() == Some(baseline)
    })
    .await;
    assert!(
        dropped,
        "count did not return to {baseline} after shutdown: {:?}",
        server.connection_count().await
    );
}

#[tokio::test]
async fn count_of_a_stopped_server_is_an_error() {
    let mut server = TestServer::start_with(ServerOptions::new().managed(true))
        .await
        .expect("start");
    server.kill().await.expect("kill");
    let err = server
        .connection_count()
        .await
        .expect_err("nothing listens");
    assert!(err.to_string().contains("connecting to 127.0.0.1"), "{err}");
}
