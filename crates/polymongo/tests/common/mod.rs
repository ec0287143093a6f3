//! Shared set-up of the integration tests: a test-kit server per test, raw clients for checking
//! effects independently of the library, and polling with a deadline.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod ledger;

use std::future::Future;
use std::time::Duration;

use mongodb::Client;
use polymongo::PolyMongo;
use polymongo_testkit::TestServer;

/// Connections a driver `Client` keeps to a server besides its pool: the monitor, and on
/// servers that stream `hello` responses a second, round-trip-time monitor.
pub const MONITOR_CONNECTIONS: i64 = 2;

pub async fn server() -> TestServer {
    match TestServer::start().await {
        Ok(s) => s,
        Err(e) => panic!("test server did not start: {e}"),
    }
}

/// A manager on `server` with the given pool size, cold start.
pub async fn manager(server: &TestServer, pool: u32) -> PolyMongo {
    PolyMongo::builder()
        .uri(server.uri())
        .default_db("main")
        .max_pool_size(pool)
        .build()
        .await
        .expect("manager builds")
}

/// An independent client, to check what the library did.
pub async fn raw(server: &TestServer) -> Client {
    Client::with_uri_str(server.uri())
        .await
        .expect("raw client")
}

/// Polls `probe` until it returns `Some`, failing the test after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Server-side connection count (the probe's own connection excluded).
pub async fn connections(server: &TestServer) -> i64 {
    server.connection_count().await.expect("serverStatus")
}
