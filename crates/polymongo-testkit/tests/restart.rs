//! kill / stop / restart: same port, data kept by persistent servers.

mod common;

use std::net::{Ipv4Addr, TcpListener};

use mongodb::bson::{doc, Document};
use polymongo_testkit::{ServerKind, ServerOptions, TestKitError, TestServer};

#[tokio::test]
async fn persistent_server_keeps_data_across_kill_and_restart() {
    let mut server = TestServer::start_with(ServerOptions::new().persistent(true).managed(true))
        .await
        .expect("start");
    let port = server.port();
    let first_pid = server.pid().expect("pid");
    let client = common::client(&server).await;
    client
        .database("keep")
        .collection::<Document>("c")
        .insert_one(doc! { "_id": 1, "v": "kept" })
        .await
        .expect("insert");
    client.shutdown().await;

    server.kill().await.expect("kill");
    assert_eq!(server.pid(), None);
    assert!(!common::pid_exists(first_pid), "killed and reaped");

    server.restart().await.expect("restart");
    assert_eq!(server.port(), port, "restart keeps the port");
    assert_ne!(server.pid(), Some(first_pid));

    let client = common::client(&server).await;
    let found = client
        .database("keep")
        .collection::<Document>("c")
        .find_one(doc! { "_id": 1 })
        .await
        .expect("find");
    assert_eq!(found, Some(doc! { "_id": 1, "v": "kept" }));
    client.shutdown().await;
}

#[tokio::test]
async fn in_memory_nx_restarts_empty() {
    let mut server = TestServer::start_with(ServerOptions::new().kind(ServerKind::Nx27017))
        .await
        .expect("start");
    let port = server.port();
    let client = common::client(&server).await;
    let coll = client.database("gone").collection::<Document>("c");
    coll.insert_one(doc! { "_id": 1 }).await.expect("insert");
    client.shutdown().await;

    // restart() of a running server stops it (SIGTERM) first.
    server.restart().await.expect("restart");
    assert_eq!(server.port(), port);

    let client = common::client(&server).await;
    let count = client
        .database("gone")
        .collection::<Document>("c")
        .count_documents(doc! {})
        .await
        .expect("count");
    assert_eq!(count, 0, "an in-memory nx server loses its data on restart");
    client.shutdown().await;
}

#[tokio::test]
async fn stop_then_restart() {
    let mut server = TestServer::start_with(ServerOptions::new().managed(true))
        .await
        .expect("start");
    let pid = server.pid().expect("pid");
    server.stop().await.expect("stop");
    assert_eq!(server.pid(), None);
    assert!(!common::pid_exists(pid));
    server
        .stop()
        .await
        .expect("stopping a stopped server is a no-op");
    server.restart().await.expect("restart");
    assert_eq!(server.connection_count().await.expect("count"), 0);
}

#[tokio::test]
async fn restart_on_a_taken_port_is_port_in_use() {
    let mut server = TestServer::start_with(ServerOptions::new().managed(true))
        .await
        .expect("start");
    let port = server.port().expect("port");
    server.kill().await.expect("kill");

    let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("take the port");
    let err = server.restart().await.expect_err("port is taken");
    assert!(
        matches!(err, TestKitError::PortInUse { port: p } if p == port),
        "expected PortInUse, got {err}"
    );
    assert!(err.to_string().contains("already in use"), "{err}");
    assert_eq!(server.pid(), None);

    drop(squatter);
    server
        .restart()
        .await
        .expect("restart once the port is free");
    assert_eq!(server.port(), Some(port));
}
