//! The health and metrics routes against a real server.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use common::{all_sources, manager, notes_app, send, server, Req};
use tower::ServiceExt;

fn ops(poly: &polymongo::PolyMongo) -> Router {
    Router::new()
        .route("/healthz", polymongo_axum::health(poly.clone()))
        .route("/metrics", polymongo_axum::metrics(poly.clone()))
}

#[tokio::test]
async fn health_pings_the_default_database_and_lists_each_pool() {
    let server = server().await;
    let poly = manager(&server).await;
    // Some tenants in use first, so the pool has databases to report.
    let app = notes_app(all_sources(poly.clone()).prefix("tenant_").build().unwrap());
    for t in ["a", "b", "c"] {
        let req = Req::post("/notes", serde_json::json!({"text": t})).header("x-tenant", t);
        assert_eq!(send(&app, req).await.0, StatusCode::CREATED);
    }
    let (status, body) = send(&ops(&poly), Req::get("/healthz")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database"], "main");
    assert!(body["ping_ms"].as_f64().is_some(), "{body}");
    let pools = body["pools"].as_array().expect("pools");
    assert_eq!(pools.len(), 1, "one shared pool: {body}");
    assert_eq!(pools[0]["kind"], "shared");
    assert_eq!(pools[0]["state"], "connected");
    assert_eq!(pools[0]["max_size"], 4);
    // The three tenants and the default database share the one pool.
    assert_eq!(pools[0]["databases"], 4, "{body}");
    assert_eq!(body["databases_in_use"], 4, "{body}");
}

#[tokio::test]
async fn health_is_503_once_closed_and_when_the_cluster_is_unreachable() {
    let server = server().await;
    let poly = manager(&server).await;
    poly.close_all(Duration::from_secs(5)).await;
    let (status, body) = send(&ops(&poly), Req::get("/healthz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["reason"], "closed");

    // Nothing listens on the port: the ping fails (or times out) and no error text shows.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = polymongo::PolyMongo::builder()
        .uri(format!("mongodb://127.0.0.1:{port}/"))
        .server_selection_timeout(Duration::from_millis(300))
        .retry(1, Duration::from_millis(10))
        .build()
        .await
        .unwrap();
    let (status, body) = send(&ops(&unreachable), Req::get("/healthz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let reason = body["reason"].as_str().expect("reason");
    assert!(reason == "ping_failed" || reason == "timeout", "{body}");
    assert!(!body.to_string().contains("Server selection"), "{body}");
    unreachable.force_close_all().await;
}

#[tokio::test]
async fn metrics_answers_prometheus_text_with_its_content_type() {
    let server = server().await;
    let poly = manager(&server).await;
    poly.ping("main").await.unwrap();
    let response = ops(&poly)
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        polymongo::metrics::CONTENT_TYPE
    );
    let text = String::from_utf8(
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    // The same text the library renders (modulo figures that moved in between).
    assert!(
        text.lines().any(|l| l.starts_with("# TYPE polymongo_")),
        "{text}"
    );
    let names = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("# TYPE"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(names(&text), names(&polymongo::metrics::render(&poly)));
}
