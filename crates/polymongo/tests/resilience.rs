//! Resilience and shutdown against real server processes: an outage under write load with
//! recovery, graceful and forced close under load, and SIGTERM to a child process.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use polymongo::{Error, Model, PolyMongo};
use polymongo_testkit::{ServerOptions, TestServer};
use serde::{Deserialize, Serialize};

use common::raw;

#[derive(Debug, Serialize, Deserialize)]
struct Tick {
    n: u64,
}
impl Model for Tick {
    const COLLECTION: &'static str = "ticks";
}

/// A bound no healthy step of these tests comes near; reaching it means a hang.
const HANG: Duration = Duration::from_secs(60);

/// The writer's next outcome; a writer silent for [`HANG`] fails the test.
async fn next(
    progress: &mut tokio::sync::mpsc::UnboundedReceiver<Result<(), Error>>,
) -> Result<(), Error> {
    tokio::time::timeout(HANG, progress.recv())
        .await
        .expect("the writer hung")
        .expect("the writer is alive")
}

#[tokio::test]
async fn an_outage_under_write_load_fails_typed_and_recovers_without_losing_acknowledged_writes() {
    let mut server = TestServer::start_with(ServerOptions::new().persistent(true).managed(true))
        .await
        .expect("server");
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .server_selection_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let ticks = poly.model::<Tick>();
    let acknowledged = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (progress_tx, mut progress) = tokio::sync::mpsc::unbounded_channel::<Result<(), Error>>();

    // Steady load: one write after another, each through `run`.
    let writer = {
        let (ticks, acknowledged, failed) = (
            ticks.clone(),
            Arc::clone(&acknowledged),
            Arc::clone(&failed),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            while !*stop_rx.borrow() {
                n += 1;
                let outcome = match ticks.db("outage") {
                    Ok(h) => h.run(|c| c.insert_one(Tick { n })).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                match &outcome {
                    Ok(()) => acknowledged.fetch_add(1, Ordering::SeqCst),
                    Err(_) => failed.fetch_add(1, Ordering::SeqCst),
                };
                let _ = progress_tx.send(outcome);
            }
        })
    };
    // Some writes before the outage.
    for _ in 0..20 {
        next(&mut progress).await.expect("healthy write");
    }
    server.kill().await.unwrap();
    // During the outage every failure is typed, and retryable unless the insert was under
    // way when the connection broke: that one's outcome is unknown (the driver did not label
    // it `RetryableWriteError`), and it says so.
    let mut outage_errors = 0;
    while outage_errors < 3 {
        if let Err(e) = next(&mut progress).await {
            let unknown = matches!(
                e,
                Error::Connection {
                    outcome_unknown: true,
                    ..
                }
            );
            assert_eq!(e.is_retryable(), !unknown, "{e:?}");
            assert!(
                matches!(
                    e,
                    Error::Connection { .. } | Error::Driver(_) | Error::Timeout { .. }
                ),
                "{e:?}"
            );
            outage_errors += 1;
        }
    }
    server.restart().await.unwrap();
    let restarted = Instant::now();
    // The same manager recovers by itself.
    loop {
        if next(&mut progress).await.is_ok() {
            break;
        }
    }
    let recovery = restarted.elapsed();
    for _ in 0..20 {
        next(&mut progress).await.expect("healthy after recovery");
    }
    stop_tx.send_replace(true);
    drop(progress);
    writer.await.unwrap();

    let raw = raw(&server).await;
    let stored: Vec<Document> = raw
        .database("outage")
        .collection::<Document>("ticks")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let acked = acknowledged.load(Ordering::SeqCst);
    // Every acknowledged write is there; a write that failed may or may not have landed.
    assert!(
        stored.len() as u64 >= acked,
        "{} stored < {acked} acknowledged",
        stored.len()
    );
    eprintln!(
        "outage: {acked} writes acknowledged, {} failed during the outage, {} stored, \
         recovered {:?} after the restart",
        failed.load(Ordering::SeqCst),
        stored.len(),
        recovery
    );
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn close_all_lets_work_in_flight_finish_and_refuses_new_work() {
    let server = common::server().await;
    let raw = raw(&server).await;
    raw.database("closing")
        .collection::<Document>("ticks")
        .insert_many((0..300).map(|n| doc! { "n": n as i64 }))
        .await
        .unwrap();
    let poly = common::manager(&server, 4).await;
    let ticks = poly.model::<Tick>();
    // Work in flight: 40 reads of the whole collection through `run`, each under way (its
    // closure entered) before the close begins.
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let mut readers = Vec::new();
    for _ in 0..40 {
        let h = ticks.db("closing").unwrap();
        let started_tx = started_tx.clone();
        readers.push(tokio::spawn(async move {
            h.run(|c| async move {
                let _ = started_tx.send(());
                let docs: Vec<Tick> = c.find(doc! {}).await?.try_collect().await?;
                Ok(docs.len())
            })
            .await
        }));
    }
    for _ in 0..40 {
        started.recv().await;
    }
    let late = ticks.db("closing").unwrap();
    let report = tokio::time::timeout(HANG, poly.close_all(Duration::from_secs(20)))
        .await
        .expect("close_all hung");
    assert_eq!(report.pools_forced, 0, "{report:?}");
    // New work is refused at once, on a new handle or on one taken before the close…
    assert!(matches!(ticks.db("closing"), Err(Error::Closed)));
    let refused = late.run(|c| c.count_documents(doc! {})).await;
    assert!(matches!(refused, Err(Error::Closed)), "{refused:?}");
    assert!(matches!(poly.ping("closing").await, Err(Error::Closed)));
    // …and the work in flight finished.
    for r in readers {
        let read = r.await.unwrap();
        assert_eq!(read.as_ref().ok(), Some(&300), "{read:?}");
    }
    assert_eq!(poly.live_clients(), 0);
    raw.shutdown().await;
    common::eventually("every connection to close", HANG, || async {
        (common::connections(&server).await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn force_close_all_cuts_a_graceful_close_short_and_both_are_idempotent() {
    let server = common::server().await;
    let raw = raw(&server).await;
    raw.database("forced")
        .collection::<Document>("ticks")
        .insert_many((0..300).map(|n| doc! { "n": n as i64 }))
        .await
        .unwrap();
    let poly = common::manager(&server, 4).await;
    // A cursor kept open: a graceful close waits for it up to its deadline.
    let h = poly.model::<Tick>().db("forced").unwrap();
    let mut cursor = h.find(doc! {}).batch_size(10).await.unwrap();
    assert!(cursor.advance().await.unwrap());

    let graceful = {
        let poly = poly.clone();
        tokio::spawn(async move { poly.close_all(Duration::from_secs(600)).await })
    };
    // The graceful close has begun once new work is refused.
    common::eventually("the close to begin", HANG, || async {
        poly.is_closed().then_some(())
    })
    .await;
    let forced = tokio::time::timeout(HANG, poly.force_close_all())
        .await
        .expect("force_close_all returned");
    let graceful = tokio::time::timeout(HANG, graceful)
        .await
        .expect("the graceful close was cut short")
        .unwrap();
    assert_eq!(
        (graceful.pools_closed, graceful.pools_forced),
        (1, 1),
        "{graceful:?}"
    );
    assert!(forced.already_closed, "{forced:?}");
    // Idempotent, in any order.
    assert!(poly.close_all(Duration::from_secs(1)).await.already_closed);
    assert!(poly.force_close_all().await.already_closed);
    assert_eq!(poly.live_clients(), 0);
    // The cursor's client is gone: its next batch fails instead of hanging.
    let next = tokio::time::timeout(HANG, async {
        while cursor.advance().await? {}
        Ok::<_, mongodb::error::Error>(())
    })
    .await
    .expect("the cursor hung");
    assert!(next.is_err(), "a cut cursor cannot finish");
    raw.shutdown().await;
    common::eventually("every connection to close", HANG, || async {
        (common::connections(&server).await == 0).then_some(())
    })
    .await;
}

/// Environment variable that turns this test binary into the child of the signal test.
const CHILD: &str = "POLYMONGO_SIGNAL_CHILD_URI";

/// The child: a manager under load with `close_on_signals`, exiting with the signal's code.
#[tokio::test]
async fn signal_child() {
    let Ok(uri) = std::env::var(CHILD) else {
        return; // Only runs as the child of `sigterm_closes_gracefully_and_exits_with_143`.
    };
    let poly = PolyMongo::builder().uri(&uri).build().await.unwrap();
    let shutdown = poly.close_on_signals(Duration::from_secs(10)).unwrap();
    let ticks = poly.model::<Tick>();
    let load = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                n += 1;
                let Ok(h) = ticks.db("signal") else { return n };
                if h.run(|c| c.insert_one(Tick { n })).await.is_err() {
                    return n;
                }
            }
        })
    };
    ticks
        .db("signal")
        .unwrap()
        .run(|c| c.insert_one(Tick { n: 0 }))
        .await
        .unwrap();
    println!("READY");
    let done = shutdown.await.unwrap();
    let writes = load.await.unwrap();
    println!(
        "CLOSED {} pools_closed={} pools_forced={} writes={writes}",
        done.signal, done.report.pools_closed, done.report.pools_forced
    );
    std::process::exit(done.signal.exit_code());
}

#[tokio::test]
async fn sigterm_closes_gracefully_and_exits_with_143() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let server = common::server().await;
    let exe = std::env::current_exe().unwrap();
    let mut child = tokio::process::Command::new(exe)
        .args(["--exact", "signal_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, server.uri())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(HANG, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("READY") {
                return;
            }
        }
        panic!("the child ended before it was ready");
    })
    .await
    .expect("the child never got ready");
    let pid = child.id().unwrap();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let mut closed = None;
    while let Ok(Some(line)) = tokio::time::timeout(HANG, lines.next_line())
        .await
        .expect("the child hung")
    {
        if line.contains("CLOSED") {
            closed = Some(line);
        }
    }
    let status = tokio::time::timeout(HANG, child.wait())
        .await
        .expect("exit")
        .unwrap();
    let closed = closed.expect("the child reported its close");
    assert!(
        closed.contains("CLOSED SIGTERM pools_closed=1 pools_forced=0"),
        "{closed}"
    );
    assert_eq!(status.code(), Some(143), "{closed}");
    // The child's connections are gone from the server.
    common::eventually("the child's connections to close", HANG, || async {
        (common::connections(&server).await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn connect_retries_with_back_off_and_reports_every_attempt() {
    // A port with nothing listening on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let poly = PolyMongo::builder()
        .uri(format!("mongodb://127.0.0.1:{port}/?directConnection=true"))
        .server_selection_timeout(Duration::from_millis(100))
        .retry_options(polymongo::RetryOptions::new(3, Duration::from_millis(50)))
        .build()
        .await
        .unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let _hook = {
        let seen = Arc::clone(&seen);
        poly.on_error(move |e| seen.lock().unwrap().push(e.message.clone()))
    };
    let started = Instant::now();
    let err = poly.connect().await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert!(err.is_retryable());
    // Pauses of 50 ms then 100 ms (doubling) came between the three attempts.
    assert!(took >= Duration::from_millis(150), "{took:?}");
    // Each attempt is reported (the monitor's own "unreachable" events come too).
    let attempts = common::eventually("the three attempts' error events", HANG, || async {
        let m: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.contains("attempt ") || m.starts_with("cannot reach cluster"))
            .cloned()
            .collect();
        (m.len() >= 3).then_some(m)
    })
    .await;
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert!(
        attempts[0].starts_with("attempt 1 of 3 failed, retrying in 50ms"),
        "{attempts:?}"
    );
    assert!(
        attempts[1].starts_with("attempt 2 of 3 failed, retrying in 100ms"),
        "{attempts:?}"
    );
    assert!(
        attempts[2].starts_with("cannot reach cluster"),
        "{attempts:?}"
    );
}

/// nx-27017 does not speak SCRAM, so any credentials fail there (the driver reports "SCRAM
/// failure: invalid server response"); a real server refusing a password gives the same kind.
#[tokio::test]
async fn refused_credentials_are_an_authentication_error() {
    let server = common::server().await;
    let uri = server
        .uri()
        .replacen("mongodb://", "mongodb://nobody:Wr0ngPass@", 1);
    let poly = PolyMongo::builder()
        .uri(uri)
        .retry(3, Duration::from_millis(10))
        .build()
        .await
        .unwrap();
    let err = poly.connect().await.unwrap_err();
    assert!(matches!(err, Error::Authentication { .. }), "{err:?}");
    assert_eq!(err.kind(), polymongo::ErrorKind::Authentication);
    assert!(
        !err.is_retryable(),
        "credentials do not get better by retrying"
    );
    assert!(!format!("{err} {err:?}").contains("Wr0ngPass"), "{err:?}");
}
