//! Starting servers: ping, kind, URI shape, several servers at once.

mod common;

use mongodb::bson::{doc, Document};
use polymongo_testkit::{ServerKind, ServerOptions, TestServer};

#[tokio::test]
async fn start_gives_a_server_that_answers_ping() {
    let server = TestServer::start().await.expect("start");
    assert_eq!(server.kind(), common::expected_default_kind());
    let client = common::client(&server).await;
    let reply = client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .expect("ping");
    assert_eq!(
        reply
            .get_f64("ok")
            .ok()
            .or(reply.get_i32("ok").ok().map(f64::from)),
        Some(1.0)
    );
    client.shutdown().await;
}

#[tokio::test]
async fn nx_server_describes_itself() {
    let server = TestServer::start_with(ServerOptions::new().kind(ServerKind::Nx27017))
        .await
        .expect("start nx");
    assert_eq!(server.kind(), ServerKind::Nx27017);
    let port = server.port().expect("port");
    assert_eq!(
        server.uri(),
        format!("mongodb://127.0.0.1:{port}/?directConnection=true")
    );
    assert!(server.pid().is_some());
    assert!(!server.supports_transactions());
    assert!(!server.is_replica_set());
    let debug = format!("{server:?}");
    assert!(
        debug.contains("Nx27017") && debug.contains(&port.to_string()),
        "{debug}"
    );
}

#[tokio::test]
async fn two_servers_at_once_are_independent() {
    let opts = ServerOptions::new().managed(true);
    let (a, b) = tokio::join!(
        TestServer::start_with(opts.clone()),
        TestServer::start_with(opts)
    );
    let (a, b) = (a.expect("server a"), b.expect("server b"));
    assert_ne!(a.port(), b.port());
    assert_ne!(a.pid(), b.pid());

    let (ca, cb) = (common::client(&a).await, common::client(&b).await);
    ca.database("app")
        .collection::<Document>("c")
        .insert_one(doc! { "_id": 1, "only": "in a" })
        .await
        .expect("insert into a");
    let in_a = ca
        .database("app")
        .collection::<Document>("c")
        .count_documents(doc! {})
        .await;
    let in_b = cb
        .database("app")
        .collection::<Document>("c")
        .count_documents(doc! {})
        .await;
    assert_eq!(in_a.expect("count a"), 1);
    assert_eq!(
        in_b.expect("count b"),
        0,
        "a document inserted in server a appeared in server b"
    );
    ca.shutdown().await;
    cb.shutdown().await;
}
