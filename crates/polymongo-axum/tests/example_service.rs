//! The tenant-service example's routes, through both of its backends, against a real server.

#[allow(dead_code)] // the test drives the routes, not every helper of the example
#[path = "../examples/tenant-service/app.rs"]
mod app;
mod common;

use axum::http::StatusCode;
use axum::Router;
use common::{send, server, Req};
use serde_json::json;

/// The tenants the example serves in these tests.
fn tenants() -> Vec<String> {
    vec!["acme".to_owned(), "globex".to_owned()]
}

async fn exercise(app: &Router) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, body) = send(
            app,
            Req::post("/notes", json!({"text": format!("note {i}")})).header("x-tenant", "acme"),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["id"].as_str().expect("id").to_owned());
    }
    // Another tenant's note never shows in acme's pages.
    let (status, _) = send(
        app,
        Req::post("/notes", json!({"text": "other"})).header("x-tenant", "globex"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // Pages of 2: 2 + 2 + 1, in creation order, `next` absent on the last.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..3 {
        let path = match &after {
            Some(a) => format!("/notes?limit=2&after={a}"),
            None => "/notes?limit=2".to_owned(),
        };
        let (status, body) = send(app, Req::get(path).header("x-tenant", "acme")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for n in body["notes"].as_array().expect("notes") {
            seen.push(n["id"].as_str().expect("id").to_owned());
        }
        after = body["next"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, ids);
    assert_eq!(after, None);

    let (status, body) = send(
        app,
        Req::get(format!("/notes/{}", ids[0])).header("x-tenant", "acme"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["text"], "note 0");
    // The id exists, but not for this tenant.
    let (status, _) = send(
        app,
        Req::get(format!("/notes/{}", ids[0])).header("x-tenant", "globex"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let delete = || Req {
        method: "DELETE",
        ..Req::get(format!("/notes/{}", ids[0])).header("x-tenant", "acme")
    };
    assert_eq!(send(app, delete()).await.0, StatusCode::NO_CONTENT);
    assert_eq!(send(app, delete()).await.0, StatusCode::NOT_FOUND);

    let (status, body) = send(app, Req::get("/notes/not-an-id").header("x-tenant", "acme")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_id");
    let (status, body) = send(
        app,
        Req::post("/notes", json!({"text": ""})).header("x-tenant", "acme"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"], "invalid_note");
    // A tenant outside the list is refused, by both backends.
    let (status, body) = send(
        app,
        Req::post("/notes", json!({"text": "x"})).header("x-tenant", "initech"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"], "unknown_tenant");
}

#[tokio::test]
async fn the_polymongo_service_creates_pages_gets_and_deletes_per_tenant() {
    let server = server().await;
    let poly = common::manager(&server).await;
    let tenancy = app::tenancy(&poly, "localhost", &tenants()).unwrap();
    let router = app::router(app::Backend::Poly(tenancy), Some(&poly));
    exercise(&router).await;
    let (status, body) = send(
        &router,
        Req::get("/notes").header("host", "acme.localhost:3000"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["notes"].as_array().unwrap().len(), 4);
    let (status, body) = send(&router, Req::get("/healthz")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn the_naive_service_answers_the_same() {
    let server = server().await;
    let clients = std::sync::Arc::new(app::NaiveClients::new(server.uri().to_owned(), &tenants()));
    let router = app::router(app::Backend::Naive(std::sync::Arc::clone(&clients)), None);
    exercise(&router).await;
    assert_eq!(clients.len(), 2, "one client per tenant");
}
