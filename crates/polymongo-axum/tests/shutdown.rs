//! Graceful shutdown over a real listener: stop accepting, finish requests in flight, then
//! close the pools.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use common::{all_sources, eventually, manager, raw, raw_texts, server, Note};
use http_body_util::BodyExt;
use polymongo_axum::{DbError, ServeReport, ShutdownDeadlines, Tenancy, Tenant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};

#[derive(Clone)]
struct AppState {
    tenancy: Tenancy,
    /// Notified when a slow request has started.
    entered: Arc<Notify>,
    /// Notified by the test to let the slow request go on.
    release: Arc<Notify>,
}

impl FromRef<AppState> for Tenancy {
    fn from_ref(s: &AppState) -> Tenancy {
        s.tenancy.clone()
    }
}

/// Writes a note once the test releases it.
async fn slow(State(s): State<AppState>, notes: Tenant<Note>) -> Result<StatusCode, DbError> {
    s.entered.notify_one();
    s.release.notified().await;
    let note = Note {
        id: None,
        text: "in-flight".into(),
    };
    notes.run(|c| c.insert_one(&note)).await?;
    Ok(StatusCode::CREATED)
}

struct Running {
    addr: std::net::SocketAddr,
    state: AppState,
    stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<std::io::Result<ServeReport>>,
}

async fn start(poly: polymongo::PolyMongo, deadlines: ShutdownDeadlines) -> Running {
    let state = AppState {
        tenancy: all_sources(poly.clone()).prefix("tenant_").build().unwrap(),
        entered: Arc::new(Notify::new()),
        release: Arc::new(Notify::new()),
    };
    let app = Router::new()
        .route("/slow", post(slow))
        .layer(state.tenancy.layer())
        .with_state(state.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(polymongo_axum::serve(
        listener,
        app,
        poly,
        async move {
            let _ = stopped.await;
        },
        deadlines,
    ));
    Running {
        addr,
        state,
        stop,
        served,
    }
}

/// Sends `POST /slow` for tenant `t` over its own connection; resolves to the status, whether
/// it came with `Retry-After`, and the body.
fn send_slow(
    addr: std::net::SocketAddr,
    t: &str,
) -> tokio::task::JoinHandle<(StatusCode, bool, String)> {
    let t = t.to_owned();
    tokio::spawn(async move {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::post("/slow")
            .header("host", "localhost")
            .header("x-tenant", t)
            .body(http_body_util::Empty::<axum::body::Bytes>::new())
            .unwrap();
        let response = sender.send_request(req).await.unwrap();
        let status = response.status();
        let retry_after = response.headers().contains_key("retry-after");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            retry_after,
            String::from_utf8_lossy(&body).into_owned(),
        )
    })
}

async fn wait_entered(state: &AppState) {
    tokio::time::timeout(Duration::from_secs(10), state.entered.notified())
        .await
        .expect("the slow request started");
}

async fn wait_refused(addr: std::net::SocketAddr) {
    eventually(
        "the listener to stop accepting",
        Duration::from_secs(10),
        || async { TcpStream::connect(addr).await.is_err().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn shutdown_stops_accepting_finishes_requests_in_flight_then_closes_the_pools() {
    let server = server().await;
    let poly = manager(&server).await;
    let running = start(poly.clone(), ShutdownDeadlines::default()).await;
    let in_flight = send_slow(running.addr, "a");
    wait_entered(&running.state).await;

    running.stop.send(()).unwrap();
    wait_refused(running.addr).await;
    // Still waiting for the request in flight: the pools stay open under it.
    assert!(!running.served.is_finished());
    assert!(!poly.is_closed());

    running.state.release.notify_one();
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let report = running.served.await.unwrap().unwrap();
    assert!(report.drained, "{report:?}");
    assert!(!report.close.already_closed);
    assert!(poly.is_closed());
    let raw = raw(&server).await;
    assert_eq!(
        raw_texts(&raw, "tenant_a").await,
        vec!["in-flight".to_owned()]
    );
}

/// The answer to a request the close cut: never "try again" — it may have written.
fn assert_not_told_to_retry(status: StatusCode, retry_after: bool, body: &str) {
    assert_ne!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(!retry_after, "{body}");
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"], "outcome_unknown", "{body}");
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn a_request_cut_at_the_drain_deadline_before_writing_is_not_told_to_retry() {
    let server = server().await;
    let poly = manager(&server).await;
    let running = start(
        poly.clone(),
        ShutdownDeadlines {
            drain: Duration::from_millis(200),
            close: Duration::from_secs(5),
        },
    )
    .await;
    let in_flight = send_slow(running.addr, "b");
    wait_entered(&running.state).await;
    running.stop.send(()).unwrap();
    // The drain deadline passes with the handler blocked; the pools close under it.
    eventually("the pools to close", Duration::from_secs(10), || async {
        poly.is_closed().then_some(())
    })
    .await;
    running.state.release.notify_one();
    // Its write is refused now; but the handler had started, and from outside a handler
    // that wrote before being cut looks the same: the answer says "check", not "retry".
    let (status, retry_after, body) = in_flight.await.unwrap();
    assert_not_told_to_retry(status, retry_after, &body);
    let report = running.served.await.unwrap().unwrap();
    assert!(!report.drained, "{report:?}");
    let raw = raw(&server).await;
    assert!(raw_texts(&raw, "tenant_b").await.is_empty());
}

#[tokio::test]
async fn a_write_sent_and_stored_when_the_close_cuts_it_is_not_told_to_retry() {
    let server = server().await;
    let (proxy, poly) = common::proxied_manager(&server, 4).await;
    // A pooled connection exists before the network slows, so the write is sent at once.
    poly.ping("tenant_c").await.unwrap();
    let running = start(
        poly.clone(),
        ShutdownDeadlines {
            drain: Duration::from_millis(100),
            close: Duration::from_millis(100),
        },
    )
    .await;
    // Each chunk now reaches the server 600 ms after it was sent: the close (drain + close,
    // about 200 ms after the signal) cuts the insert while it is on its way.
    proxy.set_latency(Duration::from_millis(600));
    let in_flight = send_slow(running.addr, "c");
    wait_entered(&running.state).await;
    running.state.release.notify_one();
    running.stop.send(()).unwrap();
    let (status, retry_after, body) = in_flight.await.unwrap();
    assert_not_told_to_retry(status, retry_after, &body);
    // And the write did land: exactly the case a "try again" would have duplicated.
    let raw = raw(&server).await;
    eventually(
        "the cut write to be stored",
        Duration::from_secs(10),
        || async {
            (raw_texts(&raw, "tenant_c").await == vec!["in-flight".to_owned()]).then_some(())
        },
    )
    .await;
    let _ = running.served.await;
}
