//! The deadline model, with handlers that call the driver through `Deref` (as the example
//! service does): a full pool is answered 503 before the handler runs, and a handler stuck on
//! the network is answered 504 at the request's deadline.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use common::{eventually, raw, raw_texts, send, server, Note, Req};
use polymongo::PolyMongo;
use polymongo_axum::{DbError, Tenancy, Tenant};
use polymongo_testkit::TestServer;
use serde_json::json;
use tokio::sync::Semaphore;

/// The gate held handlers wait on before they write.
#[derive(Clone)]
struct Gate {
    tenancy: Tenancy,
    /// Permits to go on: none at first.
    go: Arc<Semaphore>,
    /// One permit per handler that started.
    entered: Arc<Semaphore>,
}

impl axum::extract::FromRef<Gate> for Tenancy {
    fn from_ref(g: &Gate) -> Tenancy {
        g.tenancy.clone()
    }
}

async fn gated(
    State(gate): State<Gate>,
    notes: Tenant<Note>,
    Json(note): Json<Note>,
) -> Result<StatusCode, DbError> {
    gate.entered.add_permits(1);
    if let Ok(p) = gate.go.acquire().await {
        p.forget();
    }
    notes.insert_one(&note).await?;
    Ok(StatusCode::CREATED)
}

fn tenancy(poly: &PolyMongo, queue: Duration, request: Duration) -> Tenancy {
    common::all_sources(poly.clone())
        .prefix("tenant_")
        .queue_timeout(queue)
        .request_timeout(request)
        .build()
        .unwrap()
}

fn gated_app(tenancy: Tenancy) -> (Router, Gate) {
    let gate = Gate {
        tenancy: tenancy.clone(),
        go: Arc::new(Semaphore::new(0)),
        entered: Arc::new(Semaphore::new(0)),
    };
    let app = Router::new()
        .route("/notes", post(gated))
        .layer(tenancy.layer())
        .with_state(gate.clone());
    (app, gate)
}

/// A manager whose pool holds two connections.
async fn two_connections(server: &TestServer) -> PolyMongo {
    PolyMongo::builder()
        .uri(server.uri())
        .max_pool_size(2)
        .build()
        .await
        .unwrap()
}

fn post_note(text: &str) -> Req {
    Req::post("/notes", json!({ "text": text })).header("x-tenant", "a")
}

#[tokio::test]
async fn a_full_pool_is_answered_503_before_the_handler_runs_and_nothing_is_sent() {
    let server = server().await;
    let poly = two_connections(&server).await;
    let (app, gate) = gated_app(tenancy(
        &poly,
        Duration::from_millis(200),
        Duration::from_secs(30),
    ));
    // Two requests take the pool's two places and wait inside their handlers.
    let held: Vec<_> = ["one", "two"]
        .into_iter()
        .map(|t| {
            let app = app.clone();
            tokio::spawn(async move { send(&app, post_note(t)).await })
        })
        .collect();
    let _both = gate.entered.acquire_many(2).await.unwrap();
    // A third finds no place within the queue timeout: refused before its handler runs.
    let refused = send(&app, post_note("three")).await;
    assert_eq!(refused.0, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.1);
    assert_eq!(refused.1["error"], "busy");
    assert_eq!(gate.entered.available_permits(), 0, "its handler never ran");
    gate.go.add_permits(2);
    for h in held {
        assert_eq!(h.await.unwrap().0, StatusCode::CREATED);
    }
    let raw = raw(&server).await;
    assert_eq!(
        raw_texts(&raw, "tenant_a").await,
        vec!["one".to_owned(), "two".to_owned()]
    );
    // The places were given back: the next request is served.
    gate.go.add_permits(1);
    assert_eq!(send(&app, post_note("four")).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn a_refusal_for_a_full_pool_carries_retry_after_and_a_timeout_does_not() {
    let server = server().await;
    let (proxy, poly) = common::proxied_manager(&server, 1).await;
    poly.ping("tenant_a").await.unwrap();
    let (app, gate) = gated_app(tenancy(
        &poly,
        Duration::from_millis(200),
        Duration::from_millis(800),
    ));
    let (addr, serving) = common::listen(app).await;
    gate.go.add_permits(10);
    // The network stops answering: the handler's insert (through `Deref`) would wait for
    // the driver, which has no socket timeout.
    proxy.black_hole();
    let stuck = tokio::spawn(raw_post(addr, "stuck"));
    let _entered = gate.entered.acquire().await.unwrap();
    // Meanwhile the pool's one place is taken: refused, with Retry-After.
    let (status, retry_after, body) = raw_post(addr, "refused").await;
    assert_eq!(status, 503, "{body}");
    assert!(retry_after, "{body}");
    // The stuck one is answered at its deadline, without Retry-After: it may have written.
    let (status, retry_after, body) = stuck.await.unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(!retry_after, "{body}");
    assert!(body.contains("\"timeout\""), "{body}");
    // Its place is given back with the dropped handler: once the network answers again,
    // the next request is served.
    proxy.pass_through();
    let raw = raw(&server).await;
    eventually(
        "a request to be served again",
        Duration::from_secs(30),
        || async { (raw_post(addr, "after").await.0 == 201).then_some(()) },
    )
    .await;
    assert!(raw_texts(&raw, "tenant_a")
        .await
        .contains(&"after".to_owned()));
    assert!(!raw_texts(&raw, "tenant_a")
        .await
        .contains(&"refused".to_owned()));
    serving.abort();
}

/// Posts a note for tenant `a` over a real connection: (status, Retry-After present, body).
async fn raw_post(addr: std::net::SocketAddr, text: &str) -> (u16, bool, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = json!({ "text": text }).to_string();
    let request = format!(
        "POST /notes HTTP/1.1\r\nhost: x\r\nx-tenant: a\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let retry_after = answer.to_ascii_lowercase().contains("\r\nretry-after:");
    (status, retry_after, answer)
}

/// A request limit too long to name an instant (`Duration::MAX`, "no limit") serves requests:
/// the layer computed each request's deadline as `now + limit`, which panicked.
#[tokio::test]
async fn a_request_limit_of_duration_max_serves_requests() {
    let server = server().await;
    let poly = two_connections(&server).await;
    let (app, gate) = gated_app(tenancy(&poly, Duration::MAX, Duration::MAX));
    gate.go.add_permits(1);
    assert_eq!(
        send(&app, post_note("unbounded")).await.0,
        StatusCode::CREATED
    );
    let raw = raw(&server).await;
    assert_eq!(
        raw_texts(&raw, "tenant_a").await,
        vec!["unbounded".to_owned()]
    );
}
