//! Network faults through the test kit's fault proxy: pool exhaustion under latency, and a
//! black-holed network.

mod common;

use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use polymongo::{Error, Model, PolyMongo};
use polymongo_testkit::FaultProxy;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Item {
    n: i64,
}
impl Model for Item {
    const COLLECTION: &'static str = "items";
}

/// A bound no healthy step comes near; reaching it means a hang.
const HANG: Duration = Duration::from_secs(60);

async fn proxy_for(server: &polymongo_testkit::TestServer) -> FaultProxy {
    let port = server.port().expect("a local server");
    FaultProxy::start(&format!("127.0.0.1:{port}"))
        .await
        .expect("proxy")
}

#[tokio::test]
async fn an_exhausted_pool_ends_every_wait_within_the_bound() {
    let server = common::server().await;
    common::raw(&server)
        .await
        .database("exhaust")
        .collection::<Document>("items")
        .insert_one(doc! { "n": 1_i64 })
        .await
        .unwrap();
    let proxy = proxy_for(&server).await;
    let wait = Duration::from_millis(300);
    let poly = PolyMongo::builder()
        .uri(proxy.uri_for(server.uri()))
        .max_pool_size(2)
        .wait_queue_timeout(wait)
        .build()
        .await
        .unwrap();
    let items = poly.model::<Item>();
    items
        .db("exhaust")
        .unwrap()
        .run(|c| c.find_one(doc! {}))
        .await
        .unwrap();
    // A slow server: every round trip takes at least 200 ms.
    proxy.set_latency(Duration::from_millis(100));

    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let h = items.db("exhaust").unwrap();
            tokio::spawn(async move {
                tokio::time::timeout(HANG, h.run(|c| c.find_one(doc! {})))
                    .await
                    .expect("an operation hung")
            })
        })
        .collect();
    let (mut done, mut exhausted) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(Some(_)) => done += 1,
            Err(Error::PoolExhausted {
                max_pool_size,
                waited,
                ..
            }) => {
                assert_eq!(max_pool_size, 2);
                assert!(waited >= wait, "gave up after {waited:?}, before the bound");
                exhausted += 1;
            }
            other => panic!("neither done nor exhausted: {other:?}"),
        }
    }
    assert_eq!(done + exhausted, 200);
    assert!(
        done >= 2 && exhausted > 0,
        "done {done}, exhausted {exhausted}"
    );
    assert!(matches!(
        Error::PoolExhausted {
            cluster: String::new(),
            max_pool_size: 2,
            waited: wait
        }
        .kind(),
        polymongo::ErrorKind::PoolExhausted
    ));
    // The server never saw more than the pool plus its monitor through the proxy.
    assert!(proxy.stats().accepted <= 2 + 2, "{:?}", proxy.stats());
    eprintln!("exhaustion: {done} completed, {exhausted} refused after waiting {wait:?}");
    proxy.pass_through();
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_black_holed_network_fails_typed_and_recovers() {
    let server = common::server().await;
    let proxy = proxy_for(&server).await;
    // The driver has no socket timeout: a black-holed connection is given up when the server
    // monitor's check times out (heartbeat + connect timeout).
    let poly = PolyMongo::builder()
        .uri(proxy.uri_for(server.uri()))
        .heartbeat_frequency(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .server_selection_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let items = poly.model::<Item>();
    let h = items.db("blackhole").unwrap();
    h.run(|c| c.insert_one(Item { n: 1 })).await.unwrap();

    proxy.black_hole();
    let started = Instant::now();
    let err = tokio::time::timeout(HANG, h.run(|c| c.find_one(doc! {})))
        .await
        .expect("the operation hung in the black hole")
        .unwrap_err();
    let failed_after = started.elapsed();
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        matches!(err, Error::Connection { .. } | Error::Driver(_)),
        "{err:?}"
    );

    proxy.pass_through();
    let recovered = common::eventually("the manager to recover", HANG, || async {
        h.run(|c| c.find_one(doc! {})).await.ok().flatten()
    })
    .await;
    assert_eq!(recovered.n, 1);
    eprintln!("black hole: failed after {failed_after:?} with {err}");
    poly.close_all(Duration::from_secs(5)).await;
}
