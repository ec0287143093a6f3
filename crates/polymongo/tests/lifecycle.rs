//! Cold start, connect, ping, connection state and closing, checked against the server's own
//! connection count.

mod common;

use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{doc, Document};
use polymongo::{ConnectionState, Error, ErrorKind, Model, PolyMongo};
use serde::{Deserialize, Serialize};

use common::{connections, eventually, manager, server, MONITOR_CONNECTIONS};

#[derive(Debug, Serialize, Deserialize)]
struct Note {
    text: String,
}
impl Model for Note {
    const COLLECTION: &'static str = "notes";
}

#[tokio::test]
async fn cold_start_opens_no_connection_before_first_use() {
    let server = server().await;
    let baseline = connections(&server).await;
    let poly = manager(&server, 5).await;
    let notes = poly.model::<Note>();
    assert_eq!(poly.connection_state(), ConnectionState::Disconnected);
    assert!(!poly.is_connected());
    // Nothing connected: give a wrongly opened monitor time to show up, bounded by the test's
    // own deadline, and check it never does.
    for _ in 0..10 {
        assert_eq!(
            connections(&server).await,
            baseline,
            "connected before first use"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    notes
        .db("cold")
        .unwrap()
        .insert_one(Note {
            text: "first use".into(),
        })
        .await
        .unwrap();
    let used = connections(&server).await - baseline;
    assert!((1..=5 + MONITOR_CONNECTIONS).contains(&used), "{used}");
    eventually("state Connected", Duration::from_secs(10), || async {
        poly.is_connected().then_some(())
    })
    .await;
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn warm_start_connects_at_build() {
    let server = server().await;
    let baseline = connections(&server).await;
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .cold_start(false)
        .build()
        .await
        .unwrap();
    assert!(connections(&server).await > baseline);
    assert_eq!(poly.connection_state(), ConnectionState::Connected);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn warm_start_against_nothing_fails_with_a_retryable_connection_error() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = PolyMongo::builder()
        .uri(format!("mongodb://127.0.0.1:{port}/?directConnection=true"))
        .cold_start(false)
        .server_selection_timeout(Duration::from_millis(200))
        .retry(2, Duration::from_millis(10))
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    assert!(err.is_retryable());
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn connect_and_ping_report_the_cluster() {
    let server = server().await;
    let poly = manager(&server, 2).await;
    poly.connect().await.unwrap();
    assert!(poly.is_connected());
    let rtt = poly.ping("any_db").await.unwrap();
    assert!(rtt < Duration::from_secs(5), "{rtt:?}");
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn close_all_refuses_new_work_and_gives_back_every_connection() {
    let server = server().await;
    let baseline = connections(&server).await;
    let poly = manager(&server, 3).await;
    let notes = poly.model::<Note>();
    let handle = notes.db("closing").unwrap();
    handle
        .insert_one(Note {
            text: "kept".into(),
        })
        .await
        .unwrap();
    assert!(connections(&server).await > baseline);

    let report = poly.close_all(Duration::from_secs(5)).await;
    assert_eq!(report.pools_closed, 1);
    assert_eq!(report.pools_forced, 0);
    assert!(!report.already_closed);
    assert!(poly.is_closed());
    assert_eq!(poly.connection_state(), ConnectionState::Disconnected);
    eventually("connections to close", Duration::from_secs(10), || async {
        (connections(&server).await == baseline).then_some(())
    })
    .await;

    // New work is refused with a typed error, whatever the path.
    assert!(matches!(notes.db("closing"), Err(Error::Closed)));
    assert!(matches!(notes.db("never_used"), Err(Error::Closed)));
    assert!(matches!(poly.database("x"), Err(Error::Closed)));
    assert!(matches!(poly.ping("x").await, Err(Error::Closed)));
    // A handle taken before the close fails at its next operation; it does not reconnect.
    assert!(handle.find_one(doc! {}).await.is_err());
    assert_eq!(connections(&server).await, baseline);

    // Idempotent: a later call does nothing more and reports the one close.
    let again = poly.close_all(Duration::from_secs(5)).await;
    assert!(again.already_closed);
    assert_eq!(again.pools_closed, report.pools_closed);

    // The write made before closing is there.
    let check = common::raw(&server).await;
    let n = check
        .database("closing")
        .collection::<Document>("notes")
        .count_documents(doc! { "text": "kept" })
        .await
        .unwrap();
    assert_eq!(n, 1);
    check.shutdown().await;
}

#[tokio::test]
async fn concurrent_close_all_calls_close_once() {
    let server = server().await;
    let poly = manager(&server, 2).await;
    poly.connect().await.unwrap();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let p = poly.clone();
            tokio::spawn(async move { p.close_all(Duration::from_secs(5)).await })
        })
        .collect();
    let mut already = 0;
    for c in calls {
        let r = c.await.unwrap();
        // Every caller sees the one close's figures; exactly one of them started it.
        assert_eq!(r.pools_closed, 1, "{r:?}");
        already += usize::from(r.already_closed);
    }
    assert_eq!(already, 7);
}

#[tokio::test]
async fn concurrent_first_uses_create_one_client() {
    const POOL: u32 = 1;
    let server = server().await;
    let baseline = connections(&server).await;
    let poly = Arc::new(manager(&server, POOL).await);
    let start = Arc::new(tokio::sync::Barrier::new(32));
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let (poly, start) = (Arc::clone(&poly), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                let h = poly.model::<Note>().db(&format!("race_{i}")).unwrap();
                h.insert_one(Note {
                    text: i.to_string(),
                })
                .await
                .unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // Two clients would be two monitors plus two pools.
    let used = connections(&server).await - baseline;
    assert!(
        used <= POOL as i64 + MONITOR_CONNECTIONS,
        "{used} connections: more than one client was created"
    );
    poly.close_all(Duration::from_secs(5)).await;
}

#[test]
fn dropping_the_manager_after_its_runtime_ended_does_not_panic() {
    // mongo-rust-driver #1287: in 3.2 the last clone of a live Client dropped outside a runtime
    // panicked. A manager kept past its runtime (a static, a value returned from main) must
    // not; this guards against the driver regressing as much as against our own drops.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (server, poly, handle) = rt.block_on(async {
        let server = server().await;
        let poly = manager(&server, 2).await;
        let handle = poly.model::<Note>().db("after_runtime").unwrap();
        handle.insert_one(Note { text: "x".into() }).await.unwrap();
        (server, poly, handle)
    });
    drop(rt);
    drop(handle);
    drop(poly);
    drop(server);
}

#[test]
fn dropping_the_manager_on_a_plain_thread_while_its_runtime_runs_does_not_panic() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (server, poly) = rt.block_on(async {
        let server = server().await;
        let poly = manager(&server, 2).await;
        poly.ping("plain_thread").await.unwrap();
        (server, poly)
    });
    std::thread::spawn(move || drop(poly)).join().unwrap();
    drop(server);
    drop(rt);
}

#[tokio::test]
async fn close_all_racing_first_uses_leaves_no_usable_handle_behind() {
    let server = server().await;
    let poly = manager(&server, 2).await;
    let notes = poly.model::<Note>();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (notes, stop) = (notes.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut i = 0usize;
                // Resolve fresh and warm databases until the manager refuses.
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match notes.db(&format!("close_race_{}", (w + i) % 12)) {
                        Ok(_) => i += 1,
                        Err(Error::Closed) => return i,
                        Err(e) => panic!("unexpected {e}"),
                    }
                    tokio::task::yield_now().await;
                }
                i
            })
        })
        .collect();
    poly.ping("close_race_0").await.unwrap();
    poly.close_all(Duration::from_secs(5)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    for i in 0..12 {
        let name = format!("close_race_{i}");
        assert!(matches!(notes.db(&name), Err(Error::Closed)), "{name}");
        assert!(matches!(poly.database(&name), Err(Error::Closed)), "{name}");
    }
}
