//! Hostile and malformed requests, each answered by one rule: a present but invalid tenant is
//! refused (never skipped for the next source), one case rule, an allow policy before any
//! state, one JSON body for every refusal, and database failures answered by what they mean.

mod common;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Query};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use common::{
    all_sources, assert_refused, listen, manager, notes_app, raw, raw_http, raw_texts, send,
    server, sources_only, Note, Req,
};
use mongodb::bson::doc;
use polymongo::mongodb::IndexModel;
use polymongo::Model;
use polymongo_axum::{DbError, Tenancy, Tenant};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The databases on the server whose name starts with `tenant_`, by a raw client.
async fn tenant_databases(client: &mongodb::Client) -> Vec<String> {
    let mut names: Vec<String> = client
        .list_database_names()
        .await
        .expect("list databases")
        .into_iter()
        .filter(|n| n.starts_with("tenant_"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_present_but_invalid_value_is_refused_not_passed_to_the_next_source() {
    let server = server().await;
    let poly = manager(&server).await;
    // The path first, then the host, then a claim, then a default: every source the client
    // could use to "correct" a bad value sits behind another.
    let app = notes_app(
        Tenancy::builder(poly)
            .path_param("tenant")
            .header(axum::http::HeaderName::from_static("x-tenant"))
            .subdomain("example.test")
            .custom(|parts| {
                parts
                    .extensions
                    .get::<common::Claims>()
                    .map(|c| c.tenant.clone())
            })
            .allow(|_| true)
            .prefix("tenant_")
            .default_tenant("fallback")
            .build()
            .unwrap(),
    );
    // A path value that is not UTF-8 once decoded, with a valid host and claim behind it.
    let req = Req::post("/t/%FF/notes", json!({"text": "pwn"}))
        .header("host", "victim.example.test")
        .claims("victim");
    assert_refused(
        &send(&app, req).await,
        StatusCode::BAD_REQUEST,
        "invalid_tenant",
        "%FF path",
    );
    // A Host that is not a host, with a claim behind it.
    for host in [
        "a b.example.test",
        "user@victim.example.test",
        ".example.test",
    ] {
        let req = Req::post("/notes", json!({"text": "pwn"}))
            .header("host", host)
            .claims("victim");
        assert_refused(
            &send(&app, req).await,
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            host,
        );
    }
    // A header that is not text, with a valid host behind it.
    let req = Req::post("/notes", json!({"text": "pwn"}))
        .header_bytes("x-tenant", b"\xffvictim")
        .header("host", "victim.example.test");
    assert_refused(
        &send(&app, req).await,
        StatusCode::BAD_REQUEST,
        "invalid_tenant",
        "bytes header",
    );
    // None of them reached the victim, nor the default tenant.
    assert!(tenant_databases(&raw(&server).await).await.is_empty());
}

#[tokio::test]
async fn two_host_headers_are_refused_and_an_absolute_target_wins_over_host() {
    let server = server().await;
    let poly = manager(&server).await;
    let app = notes_app(all_sources(poly).prefix("tenant_").build().unwrap());
    let (addr, serving) = listen(app).await;

    let body = r#"{"text":"abs"}"#;
    let request = |head: &str| {
        format!(
            "{head}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let two_hosts =
        request("POST /notes HTTP/1.1\r\nhost: victim.example.test\r\nhost: attacker.example.test");
    assert_refused(
        &raw_http(addr, two_hosts.as_bytes()).await,
        StatusCode::BAD_REQUEST,
        "invalid_tenant",
        "two Host headers",
    );
    // RFC 9112 §3.2.2: the absolute-form target names the host; the Host header is ignored.
    let absolute =
        request("POST http://owner.example.test/notes HTTP/1.1\r\nhost: victim.example.test");
    let (status, answer) = raw_http(addr, absolute.as_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let raw = raw(&server).await;
    assert_eq!(
        raw_texts(&raw, "tenant_owner").await,
        vec!["abs".to_owned()]
    );
    assert_eq!(
        tenant_databases(&raw).await,
        vec!["tenant_owner".to_owned()]
    );
    serving.abort();
}

#[tokio::test]
async fn one_case_rule_for_every_source() {
    let server = server().await;
    let poly = manager(&server).await;
    let app = notes_app(all_sources(poly).prefix("tenant_").build().unwrap());
    for (case, req) in [
        (
            "header",
            Req::post("/notes", json!({"text": "x"})).header("x-tenant", "Gamma"),
        ),
        ("path", Req::post("/t/ACME/notes", json!({"text": "x"}))),
        (
            "claim",
            Req::post("/notes", json!({"text": "x"})).claims("Acme"),
        ),
    ] {
        assert_refused(
            &send(&app, req).await,
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            case,
        );
    }
    // A host is case-insensitive: GAMMA.example.test is the tenant `gamma`, the same one the
    // header reaches with the lower-case name.
    let req = Req::post("/notes", json!({"text": "g"})).header("host", "GAMMA.Example.TEST");
    assert_eq!(send(&app, req).await.0, StatusCode::CREATED);
    let (status, body) = send(&app, Req::get("/notes").header("x-tenant", "gamma")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body[0]["text"], "g", "{body}");
    assert_eq!(
        tenant_databases(&raw(&server).await).await,
        vec!["tenant_gamma".to_owned()]
    );
}

#[derive(Debug, Serialize, Deserialize)]
struct Indexed {
    text: String,
}

impl Model for Indexed {
    const COLLECTION: &'static str = "indexed";

    fn indexes() -> Vec<IndexModel> {
        vec![IndexModel::builder().keys(doc! { "text": 1 }).build()]
    }
}

async fn create_indexed(
    notes: Tenant<Indexed>,
    Json(note): Json<Indexed>,
) -> Result<StatusCode, DbError> {
    notes.insert_one(&note).await?;
    Ok(StatusCode::CREATED)
}

#[tokio::test]
async fn unknown_tenants_are_refused_before_any_state_or_database_is_made() {
    let server = server().await;
    let poly = manager(&server).await;
    let tenancy = sources_only(poly.clone())
        .prefix("tenant_")
        .allow_list(["known"])
        .build()
        .unwrap();
    let app = Router::new()
        .route("/notes", post(create_indexed))
        .layer(tenancy.layer())
        .with_state(tenancy);
    let before = poly.cached_databases();
    // Distinct names, each with an invalid body that never reaches the server, and each
    // for a model whose indexes the extractor would create.
    for i in 0..300 {
        let req = Req::post("/notes", json!({"wrong": i})).header("x-tenant", &format!("t{i}"));
        assert_refused(
            &send(&app, req).await,
            StatusCode::NOT_FOUND,
            "unknown_tenant",
            "unknown",
        );
    }
    assert_eq!(
        poly.cached_databases(),
        before,
        "no entry for unknown tenants"
    );
    let raw = raw(&server).await;
    assert!(tenant_databases(&raw).await.is_empty());
    // The known tenant is served, and only it exists.
    let req = Req::post("/notes", json!({"text": "k"})).header("x-tenant", "known");
    assert_eq!(send(&app, req).await.0, StatusCode::CREATED);
    assert_eq!(
        tenant_databases(&raw).await,
        vec!["tenant_known".to_owned()]
    );
}

#[derive(Deserialize)]
struct Limit {
    #[allow(dead_code)] // only its parsing matters here
    limit: u32,
}

async fn limited(_notes: Tenant<Note>, Query(_): Query<Limit>) -> StatusCode {
    StatusCode::OK
}

async fn echo(_notes: Tenant<Note>, Json(note): Json<Note>) -> Json<Note> {
    Json(note)
}

async fn plain_text_failure() -> (StatusCode, &'static str) {
    (StatusCode::BAD_GATEWAY, "upstream 10.1.2.3 refused")
}

#[tokio::test]
async fn axum_rejections_are_answered_with_the_same_json_body() {
    let server = server().await;
    let poly = manager(&server).await;
    let tenancy = all_sources(poly).prefix("tenant_").build().unwrap();
    let app = Router::new()
        .route("/limited", get(limited))
        .route("/echo", post(echo).layer(DefaultBodyLimit::max(64)))
        .route("/plain", get(plain_text_failure))
        .layer(tenancy.layer())
        .with_state(tenancy);
    let with_tenant = |r: Req| r.header("x-tenant", "a");
    let raw_post = |content_type: Option<&'static str>, body: String| {
        let mut req = Req::get("/echo");
        req.method = "POST";
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.raw_body = Some(body);
        with_tenant(req)
    };
    let cases = [
        (
            "bad query",
            with_tenant(Req::get("/limited?limit=abc")),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "bad JSON",
            raw_post(Some("application/json"), "{not json".into()),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "wrong JSON shape",
            raw_post(Some("application/json"), r#"{"txt": 1}"#.into()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "no content type",
            raw_post(None, r#"{"text": "x"}"#.into()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "body too large",
            raw_post(
                Some("application/json"),
                json!({"text": "x".repeat(200)}).to_string(),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "no such route",
            with_tenant(Req::get("/nowhere")),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "no such method",
            with_tenant(Req {
                method: "DELETE",
                ..Req::get("/limited")
            }),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "plain-text handler error",
            Req::get("/plain"),
            StatusCode::BAD_GATEWAY,
            "internal_error",
        ),
    ];
    for (case, req, status, code) in cases {
        let answer = send(&app, req).await;
        assert_refused(&answer, status, code, case);
        assert!(
            !answer.1.to_string().contains("10.1.2.3"),
            "{case}: server text passed on: {}",
            answer.1
        );
    }
}

#[tokio::test]
async fn an_extractor_without_the_layer_refuses_rather_than_run_unbounded() {
    let server = server().await;
    let poly = manager(&server).await;
    let tenancy = all_sources(poly).prefix("tenant_").build().unwrap();
    let app = Router::new()
        .route("/notes", post(echo))
        .with_state(tenancy);
    let req = Req::post("/notes", json!({"text": "x"})).header("x-tenant", "a");
    assert_refused(
        &send(&app, req).await,
        StatusCode::INTERNAL_SERVER_ERROR,
        "misconfigured",
        "no layer",
    );
    assert!(tenant_databases(&raw(&server).await).await.is_empty());
}

async fn insert_direct(notes: Tenant<Note>, Json(note): Json<Note>) -> Result<StatusCode, DbError> {
    notes.insert_one(&note).await?;
    Ok(StatusCode::CREATED)
}

#[tokio::test]
async fn a_name_the_server_refuses_is_400_not_500() {
    let server = server().await;
    let poly = manager(&server).await;
    // Lax names admit what MongoDB's rules admit; a server may still refuse some.
    let tenancy = all_sources(poly)
        .strict_names(false)
        .prefix("tenant_")
        .build()
        .unwrap();
    let app = Router::new()
        .route("/notes", post(insert_direct))
        .layer(tenancy.layer())
        .with_state(tenancy);
    let raw = raw(&server).await;
    let probe = raw
        .database("tenant_caf\u{e9}")
        .collection::<mongodb::bson::Document>("probe")
        .insert_one(doc! { "a": 1 })
        .await;
    if probe.is_ok() {
        polymongo_testkit::record_skip("this server accepts non-ASCII database names");
        return;
    }
    let req = Req::post("/notes", json!({"text": "x"})).claims("caf\u{e9}");
    assert_refused(
        &send(&app, req).await,
        StatusCode::BAD_REQUEST,
        "invalid_tenant",
        "refused by the server",
    );
}

#[tokio::test]
async fn refused_credentials_are_503_like_health_not_500() {
    let server = server().await;
    let port = server.port().unwrap();
    let poly = polymongo::PolyMongo::builder()
        .uri(format!(
            "mongodb://nobody:wrong@127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=2000"
        ))
        .default_db("main")
        .build()
        .await
        .unwrap();
    let raw = raw(&server).await;
    let tenancy = all_sources(poly.clone()).prefix("tenant_").build().unwrap();
    let app = Router::new()
        .route("/notes", post(insert_direct))
        .route("/healthz", polymongo_axum::health(poly.clone()))
        .layer(tenancy.layer())
        .with_state(tenancy);
    let (status, _) = send(&app, Req::get("/healthz")).await;
    if status == StatusCode::OK {
        polymongo_testkit::record_skip("this server accepts any credentials");
        return;
    }
    let req = Req::post("/notes", json!({"text": "x"})).header("x-tenant", "a");
    assert_refused(
        &send(&app, req).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "credentials refused",
    );
    assert!(tenant_databases(&raw).await.is_empty());
    poly.force_close_all().await;
}

#[tokio::test]
async fn a_driver_call_after_close_all_is_503_shutting_down_and_sends_nothing() {
    let server = server().await;
    let poly = manager(&server).await;
    let tenancy = all_sources(poly.clone()).prefix("tenant_").build().unwrap();
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let gates = std::sync::Arc::new(std::sync::Mutex::new(Some((entered_tx, release_rx))));
    let handler = {
        let gates = std::sync::Arc::clone(&gates);
        move |notes: Tenant<Note>, Json(note): Json<Note>| {
            let gates = gates.lock().unwrap().take();
            async move {
                if let Some((entered, release)) = gates {
                    let _ = entered.send(());
                    let _ = release.await;
                }
                // Through `Deref`: the driver itself refuses, its client shut down.
                notes.insert_one(&note).await.map_err(DbError::from)?;
                Ok::<_, DbError>(StatusCode::CREATED)
            }
        }
    };
    let app = Router::new()
        .route("/notes", post(handler))
        .layer(tenancy.layer())
        .with_state(tenancy);
    let request = {
        let app = app.clone();
        tokio::spawn(async move {
            send(
                &app,
                Req::post("/notes", json!({"text": "late"})).header("x-tenant", "a"),
            )
            .await
        })
    };
    entered_rx.await.unwrap();
    poly.close_all(Duration::from_secs(5)).await;
    release_tx.send(()).unwrap();
    let answer = request.await.unwrap();
    assert_refused(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "after close_all",
    );
    assert!(raw_texts(&raw(&server).await, "tenant_a").await.is_empty());
}

#[tokio::test]
async fn database_for_applies_the_same_policy_outside_a_request() {
    let server = server().await;
    let poly = manager(&server).await;
    let tenancy: Tenancy = sources_only(poly)
        .prefix("tenant_")
        .allow_list(["acme"])
        .build()
        .unwrap();
    assert_eq!(tenancy.database_for("acme").await.unwrap(), "tenant_acme");
    assert!(tenancy.database_for("Acme").await.is_err());
    assert!(tenancy.database_for("other").await.is_err());
}
