//! `FaultProxy` in front of a real test server: pass-through, latency, black
//! hole and drop-all, with a `mongodb::Client` connected through the proxy.

mod common;

use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use mongodb::options::ClientOptions;
use mongodb::Client;
use polymongo_testkit::{Fault, FaultProxy, TestServer};

/// Generous bound on anything that must not hang.
const NO_HANG: Duration = Duration::from_secs(30);

/// "host:port" of a test server (its first host for an external URI).
fn upstream_of(server: &TestServer) -> String {
    if let Some(port) = server.port() {
        return format!("127.0.0.1:{port}");
    }
    let rest = server
        .uri()
        .strip_prefix("mongodb://")
        .expect("an external test URI must be mongodb://");
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let hosts = authority.rsplit('@').next().expect("host");
    hosts.split(',').next().expect("host").to_owned()
}

async fn server_and_proxy() -> (TestServer, FaultProxy) {
    let server = TestServer::start().await.expect("start");
    let proxy = FaultProxy::start(&upstream_of(&server))
        .await
        .expect("proxy");
    (server, proxy)
}

/// A client through the proxy that gives up quickly when nothing answers.
async fn impatient_client(proxy: &FaultProxy, server: &TestServer) -> Client {
    let mut options = ClientOptions::parse(proxy.uri_for(server.uri()))
        .await
        .expect("parse");
    options.server_selection_timeout = Some(Duration::from_secs(1));
    options.connect_timeout = Some(Duration::from_millis(500));
    options.heartbeat_freq = Some(Duration::from_millis(500));
    Client::with_options(options).expect("client")
}

async fn ping(client: &Client) -> mongodb::error::Result<Document> {
    client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
}

/// Pings until one succeeds or `limit` passes; returns whether one did.
async fn recovers(client: &Client, limit: Duration) -> bool {
    common::eventually(limit, || async {
        matches!(
            tokio::time::timeout(Duration::from_secs(5), ping(client)).await,
            Ok(Ok(_))
        )
    })
    .await
}

#[tokio::test]
async fn pass_through_forwards_commands_and_counts_connections() {
    let (server, mut proxy) = server_and_proxy().await;
    assert_eq!(proxy.fault(), Fault::PassThrough);
    assert_eq!(proxy.connections(), 0);
    let uri = proxy.uri_for(server.uri());
    assert!(
        uri.starts_with(&format!("mongodb://{}/", proxy.addr())),
        "{uri}"
    );

    let client = Client::with_uri_str(&uri).await.expect("client");
    ping(&client).await.expect("ping through the proxy");
    let coll = client
        .database(&common::unique_name("proxy"))
        .collection::<Document>("c");
    coll.insert_one(doc! { "_id": 1, "v": "through" })
        .await
        .expect("insert");
    let found = coll.find_one(doc! { "_id": 1 }).await.expect("find");
    assert_eq!(found, Some(doc! { "_id": 1, "v": "through" }));

    assert!(proxy.connections() > 0, "the client holds connections");
    let stats = proxy.stats();
    assert!(stats.accepted > 0);
    assert!(stats.bytes_to_upstream > 0 && stats.bytes_to_client > 0);
    assert_eq!(stats.bytes_discarded, 0);

    client.shutdown().await;
    assert!(
        common::eventually(NO_HANG, || async { proxy.connections() == 0 }).await,
        "connections close when the client shuts down"
    );
    proxy.stop().await;
    assert!(proxy.is_stopped());
    assert!(
        tokio::net::TcpStream::connect(proxy.addr()).await.is_err(),
        "a stopped proxy no longer listens"
    );
}

#[tokio::test]
async fn latency_delays_every_round_trip() {
    let (server, proxy) = server_and_proxy().await;
    let client = Client::with_uri_str(proxy.uri_for(server.uri()))
        .await
        .expect("client");
    ping(&client).await.expect("warm-up ping");

    let delay = Duration::from_millis(200);
    proxy.set_latency(delay);
    assert_eq!(proxy.fault(), Fault::Latency(delay));
    let started = Instant::now();
    tokio::time::timeout(NO_HANG, ping(&client))
        .await
        .expect("no hang")
        .expect("ping under latency");
    let took = started.elapsed();
    // The request and the reply are each held for `delay`.
    assert!(
        took >= 2 * delay,
        "ping took {took:?} under {delay:?} latency"
    );

    proxy.pass_through();
    tokio::time::timeout(NO_HANG, ping(&client))
        .await
        .expect("no hang")
        .expect("ping after pass_through");
    client.shutdown().await;
}

#[tokio::test]
async fn black_hole_fails_operations_then_recovers() {
    let (server, proxy) = server_and_proxy().await;
    let client = impatient_client(&proxy, &server).await;
    ping(&client).await.expect("ping before the fault");

    proxy.black_hole();
    let started = Instant::now();
    let result = tokio::time::timeout(NO_HANG, ping(&client))
        .await
        .expect("an operation in a black hole fails instead of hanging");
    let err = result.expect_err("nothing is answered in a black hole");
    eprintln!("black hole: failed after {:?}: {err}", started.elapsed());
    assert!(proxy.connections() > 0, "black-holed connections stay open");
    assert!(proxy.stats().bytes_discarded > 0);

    proxy.pass_through();
    let started = Instant::now();
    assert!(
        recovers(&client, NO_HANG).await,
        "the same client recovers after pass_through"
    );
    eprintln!("black hole: recovered after {:?}", started.elapsed());
    client.shutdown().await;
}

#[tokio::test]
async fn drop_all_closes_connections_and_the_client_reconnects() {
    let (server, proxy) = server_and_proxy().await;
    let client = impatient_client(&proxy, &server).await;
    let coll = client
        .database(&common::unique_name("proxy"))
        .collection::<Document>("c");
    coll.insert_one(doc! { "_id": 1 }).await.expect("insert");
    assert!(proxy.connections() > 0);

    // Refusing new connections while we look makes "0 open" observable on
    // any server: a streaming monitor (mongod 4.4+) would otherwise reconnect
    // within milliseconds of losing its connection.
    proxy.refuse_new(true);
    proxy.drop_all();
    assert!(
        common::eventually(NO_HANG, || async { proxy.connections() == 0 }).await,
        "drop_all closes every connection (still open: {})",
        proxy.connections()
    );
    assert!(proxy.stats().dropped > 0);
    proxy.refuse_new(false);

    // The next operation may fail once (its pooled connection is gone) ...
    let started = Instant::now();
    let first = tokio::time::timeout(NO_HANG, ping(&client))
        .await
        .expect("no hang after drop_all");
    eprintln!(
        "drop_all: first ping after {:?}: {:?}",
        started.elapsed(),
        first.as_ref().map(|_| "ok").map_err(ToString::to_string)
    );
    // ... and then the same client works again, through new connections.
    assert!(recovers(&client, NO_HANG).await, "the client recovers");
    let found = coll.find_one(doc! { "_id": 1 }).await.expect("find");
    assert_eq!(found, Some(doc! { "_id": 1 }));
    assert!(proxy.connections() > 0);
    client.shutdown().await;
}

#[tokio::test]
async fn refuse_new_rejects_only_new_connections() {
    let (server, proxy) = server_and_proxy().await;
    let client = Client::with_uri_str(proxy.uri_for(server.uri()))
        .await
        .expect("client");
    ping(&client).await.expect("ping");

    proxy.refuse_new(true);
    ping(&client)
        .await
        .expect("an open connection is not affected");
    let fresh = impatient_client(&proxy, &server).await;
    tokio::time::timeout(NO_HANG, ping(&fresh))
        .await
        .expect("no hang")
        .expect_err("a new client cannot connect");
    assert!(proxy.stats().refused > 0);

    proxy.refuse_new(false);
    assert!(
        recovers(&fresh, NO_HANG).await,
        "new connections work again"
    );
    fresh.shutdown().await;
    client.shutdown().await;
}

#[tokio::test]
async fn dropping_the_proxy_closes_its_connections() {
    let (server, proxy) = server_and_proxy().await;
    let client = impatient_client(&proxy, &server).await;
    ping(&client).await.expect("ping");
    let addr = proxy.addr();
    drop(proxy);
    assert!(
        common::eventually(NO_HANG, || async {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await,
        "a dropped proxy stops listening"
    );
    tokio::time::timeout(NO_HANG, ping(&client))
        .await
        .expect("no hang")
        .expect_err("the proxy is gone");
    client.shutdown().await;
}

#[tokio::test]
async fn stop_closes_live_connections_before_returning() {
    let (server, mut proxy) = server_and_proxy().await;
    let client = impatient_client(&proxy, &server).await;
    ping(&client).await.expect("ping");
    assert!(proxy.connections() > 0);
    tokio::time::timeout(NO_HANG, proxy.stop())
        .await
        .expect("stop does not hang");
    assert_eq!(proxy.connections(), 0, "every connection task has ended");
    proxy.stop().await; // a no-op the second time
    tokio::time::timeout(NO_HANG, ping(&client))
        .await
        .expect("no hang")
        .expect_err("the proxy is stopped");
    client.shutdown().await;
}
