//! Lifecycle hooks: once per transition, per-database filtering, panics contained.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::bson::doc;
use polymongo::{ConnectionState, DbConfig, ErrorEvent, Model, PolyMongo, PoolEvent, PoolKind};
use serde::{Deserialize, Serialize};

use common::{eventually, server};

#[derive(Debug, Serialize, Deserialize)]
struct Thing {
    n: i64,
}
impl Model for Thing {
    const COLLECTION: &'static str = "things";
}

type Log = Arc<Mutex<Vec<(String, PoolEvent)>>>;

fn recorder(log: &Log, tag: &'static str) -> impl Fn(&PoolEvent) + Send + Sync + 'static {
    let log = Arc::clone(log);
    move |e: &PoolEvent| log.lock().unwrap().push((tag.to_owned(), e.clone()))
}

fn tags(log: &Log) -> Vec<String> {
    log.lock().unwrap().iter().map(|(t, _)| t.clone()).collect()
}

/// Signals reach hooks in order: once an error hook has seen `marker`, every transition
/// reported before it has been handled.
async fn flush(poly: &PolyMongo, errors: &Arc<Mutex<Vec<ErrorEvent>>>, marker: &str) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    poly.scale()
        .set_db(
            &[marker],
            DbConfig::new().uri(format!(
                "mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=100"
            )),
        )
        .await
        .unwrap();
    assert!(poly.ping(marker).await.is_err());
    eventually(
        "the marker error to reach its hook",
        Duration::from_secs(10),
        || async {
            errors
                .lock()
                .unwrap()
                .iter()
                .any(|e| e.database.as_deref() == Some(marker))
                .then_some(())
        },
    )
    .await;
}

fn error_log(poly: &PolyMongo) -> Arc<Mutex<Vec<ErrorEvent>>> {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&errors);
    let _keep = poly.on_error(move |e| sink.lock().unwrap().push(e.clone()));
    errors
}

#[tokio::test]
async fn connect_and_disconnect_fire_once_per_transition() {
    let (a, b) = (server().await, server().await);
    let poly = PolyMongo::builder()
        .uri(a.uri())
        .retry(1, Duration::ZERO)
        .db(
            "cache",
            DbConfig::new()
                .uri(b.uri())
                .max_connections(2)
                .auto_close(Duration::from_millis(60)),
        )
        .build()
        .await
        .unwrap();
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let _c = poly.on_db_connect(recorder(&log, "connect"));
    let _d = poly.on_db_disconnect(recorder(&log, "disconnect"));
    let only: Log = Arc::new(Mutex::new(Vec::new()));
    let _oc = poly.on_these_db_connect(&["cache"], recorder(&only, "connect"));
    let _od = poly.on_these_db_disconnect(&["cache"], recorder(&only, "disconnect"));
    let errors = error_log(&poly);
    let things = poly.model::<Thing>();

    // Main pool: many operations, one connect.
    for n in 0..20 {
        things
            .db(&format!("t{}", n % 4))
            .unwrap()
            .insert_one(Thing { n })
            .await
            .unwrap();
    }
    // The dedicated pool: two open/idle-close cycles.
    for round in 0..2 {
        things
            .db("cache")
            .unwrap()
            .insert_one(Thing { n: round })
            .await
            .unwrap();
        eventually("cache to connect", Duration::from_secs(10), || async {
            (only.lock().unwrap().len() == 2 * round as usize + 1).then_some(())
        })
        .await;
        eventually(
            "cache to close for idleness",
            Duration::from_secs(10),
            || async { (poly.open_dedicated_pools() == 0).then_some(()) },
        )
        .await;
    }
    flush(&poly, &errors, "marker_one").await;
    assert_eq!(
        tags(&only),
        ["connect", "disconnect", "connect", "disconnect"]
    );
    for (_, e) in only.lock().unwrap().iter() {
        assert_eq!(e.databases, ["cache"]);
        assert_eq!(e.kind, PoolKind::Dedicated);
    }
    let all = log.lock().unwrap().clone();
    let main: Vec<&str> = all
        .iter()
        .filter(|(_, e)| e.kind == PoolKind::Shared)
        .map(|(t, _)| t.as_str())
        .collect();
    assert_eq!(main, ["connect"], "{all:?}");
    let main_event = &all
        .iter()
        .find(|(_, e)| e.kind == PoolKind::Shared)
        .unwrap()
        .1;
    assert_eq!(main_event.state, ConnectionState::Connected);
    assert!(
        main_event.databases.iter().any(|d| d == "t0"),
        "{:?}",
        main_event.databases
    );
    assert_eq!(
        all.iter()
            .filter(|(_, e)| e.kind == PoolKind::Dedicated)
            .count(),
        4
    );

    poly.close_all(Duration::from_secs(5)).await;
    eventually(
        "the main pool's disconnect",
        Duration::from_secs(10),
        || async {
            (log.lock()
                .unwrap()
                .iter()
                .filter(|(t, e)| t == "disconnect" && e.kind == PoolKind::Shared)
                .count()
                == 1)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_server_lost_is_a_disconnect_and_an_error() {
    let a = server().await;
    let mut b = server().await;
    let poly = PolyMongo::builder()
        .uri(a.uri())
        .db(
            "remote",
            // A short heartbeat so the monitor notices the kill quickly.
            DbConfig::new()
                .uri(format!("{}&heartbeatFrequencyMS=500", b.uri()))
                .max_connections(1),
        )
        .build()
        .await
        .unwrap();
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let _c = poly.on_these_db_connect(&["remote"], recorder(&log, "connect"));
    let _d = poly.on_these_db_disconnect(&["remote"], recorder(&log, "disconnect"));
    let errors = error_log(&poly);
    poly.model::<Thing>()
        .db("remote")
        .unwrap()
        .insert_one(Thing { n: 1 })
        .await
        .unwrap();
    eventually("connect", Duration::from_secs(10), || async {
        (tags(&log) == ["connect"]).then_some(())
    })
    .await;
    b.kill().await.unwrap();
    eventually(
        "disconnect after the kill",
        Duration::from_secs(30),
        || async { (tags(&log) == ["connect", "disconnect"]).then_some(()) },
    )
    .await;
    let errs = errors.lock().unwrap().clone();
    assert!(
        errs.iter().any(|e| e.message.contains("unreachable")),
        "{errs:?}"
    );
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_panicking_hook_stops_nothing_and_unregistering_works() {
    let server = server().await;
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .db(
            "flappy",
            DbConfig::new()
                .max_connections(1)
                .auto_close(Duration::from_millis(50)),
        )
        .build()
        .await
        .unwrap();
    let _bad = poly.on_db_connect(|_| panic!("a hook that panics"));
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let good = poly.on_db_connect(recorder(&log, "connect"));
    let things = poly.model::<Thing>();
    things
        .db("flappy")
        .unwrap()
        .insert_one(Thing { n: 1 })
        .await
        .unwrap();
    eventually(
        "the good hook after the bad one",
        Duration::from_secs(10),
        || async { (!log.lock().unwrap().is_empty()).then_some(()) },
    )
    .await;
    // The next operation, and the next transition, go through.
    things
        .db("flappy")
        .unwrap()
        .find_one(doc! {})
        .await
        .unwrap();
    eventually("an idle close", Duration::from_secs(10), || async {
        (poly.open_dedicated_pools() == 0).then_some(())
    })
    .await;
    let seen = log.lock().unwrap().len();
    assert!(good.unregister());
    things
        .db("flappy")
        .unwrap()
        .find_one(doc! {})
        .await
        .unwrap();
    let errors = error_log(&poly);
    flush(&poly, &errors, "marker_two").await;
    assert_eq!(
        log.lock().unwrap().len(),
        seen,
        "an unregistered hook was called"
    );
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn builder_hooks_see_the_connections_build_makes() {
    let server = server().await;
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .cold_start(false)
        .on_db_connect(recorder(&log, "connect"))
        .on_db_disconnect(recorder(&log, "disconnect"))
        .build()
        .await
        .unwrap();
    eventually(
        "the connect made by build",
        Duration::from_secs(10),
        || async { (tags(&log) == ["connect"]).then_some(()) },
    )
    .await;
    poly.close_all(Duration::from_secs(5)).await;
    eventually(
        "the disconnect made by close_all",
        Duration::from_secs(10),
        || async { (tags(&log) == ["connect", "disconnect"]).then_some(()) },
    )
    .await;
}
