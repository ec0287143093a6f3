//! The figures route against a real server: a bounded, versioned document of the pools and
//! the busiest, erroring and slow tenants, with no secrets and not cached.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use common::{all_sources, notes_app, send, server, Req};
use polymongo::{DbConfig, Figures, PolyMongo, FIGURES_MAX_TENANTS, FIGURES_TOP, FIGURES_VERSION};
use tower::ServiceExt;

/// GETs `/figures` from `app`: the raw response's headers and body.
async fn get_figures(app: &Router) -> (axum::http::HeaderMap, String) {
    let response = app
        .clone()
        .oneshot(Request::get("/figures").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (headers, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn figures_rank_tenants_within_the_bound_and_show_no_secret() {
    let server = server().await;
    let port = server.port().expect("a local server");
    // A second cluster (the same server, reached with a password in its URI): its pool is
    // listed, its password never.
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .default_db("main")
        .max_pool_size(4)
        .app_name("figures-test")
        .db(
            "vault",
            DbConfig::new().uri(format!(
                "mongodb://ops:hunter2@127.0.0.1:{port}/?authSource=admin"
            )),
        )
        .build()
        .await
        .expect("manager builds");
    let _ = tokio::time::timeout(Duration::from_secs(2), poly.ping("vault")).await;

    let app = notes_app(all_sources(poly.clone()).prefix("tenant_").build().unwrap());
    // More tenants than the document may hold: one operation each.
    let quiet = FIGURES_MAX_TENANTS + 5;
    for i in 0..quiet {
        let req = Req::post("/notes", serde_json::json!({"text": "x"}))
            .header("x-tenant", &format!("q{i:03}"));
        assert_eq!(send(&app, req).await.0, StatusCode::CREATED);
    }
    // The busiest.
    for _ in 0..20 {
        let req = Req::post("/notes", serde_json::json!({"text": "hot"})).header("x-tenant", "hot");
        assert_eq!(send(&app, req).await.0, StatusCode::CREATED);
    }
    // One that fails: the same `_id` inserted again is refused (E11000).
    for _ in 0..4 {
        let req = Req::post("/notes", serde_json::json!({"_id": "same", "text": "bad"}))
            .header("x-tenant", "bad");
        send(&app, req).await;
    }

    let ops = Router::new().route("/figures", polymongo_axum::figures(poly.clone()));
    let (headers, text) = get_figures(&ops).await;
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["content-type"], "application/json");
    assert!(!text.contains("hunter2"), "a password leaked: {text}");

    // The documented schema, read back with the type the command-line tool uses.
    let figures: Figures = serde_json::from_str(&text).expect("a figures document");
    assert_eq!(figures.version, FIGURES_VERSION);
    assert_eq!(figures.instance, "figures-test");
    assert_eq!(figures.pid, std::process::id());
    assert!(figures.taken_at_ms > 1_700_000_000_000, "{text}");
    let raw: serde_json::Value = serde_json::from_str(&text).unwrap();
    for field in [
        "version",
        "instance",
        "pid",
        "taken_at_ms",
        "pools",
        "tenants",
        "general",
    ] {
        assert!(raw.get(field).is_some(), "{field} missing: {text}");
    }

    // Pools: the main cluster's first; the vault's cluster listed, redacted.
    assert_eq!(figures.pools[0].kind, "shared");
    assert_eq!(figures.pools[0].state, "connected");
    assert_eq!(figures.pools[0].max_size, 4);
    assert!(
        figures.pools.iter().any(|p| p.cluster.contains("ops:***@")),
        "the vault's cluster, password redacted: {text}"
    );

    // Tenants: bounded, each once, the busiest first, the erroring one ranked for its errors.
    assert!(
        figures.tenants.len() <= FIGURES_MAX_TENANTS,
        "{}",
        figures.tenants.len()
    );
    assert!(figures.tenants.len() >= FIGURES_TOP, "{text}");
    let names: BTreeSet<&str> = figures
        .tenants
        .iter()
        .map(|t| t.database.as_str())
        .collect();
    assert_eq!(
        names.len(),
        figures.tenants.len(),
        "listed once each: {text}"
    );
    let hot = &figures.tenants[0];
    assert_eq!(hot.database, "tenant_hot", "{text}");
    assert_eq!(hot.operations, 20);
    assert_eq!(hot.recent_operations, 20);
    assert!(hot.ranked.iter().any(|r| r == "operations"), "{hot:?}");
    let bad = figures
        .tenants
        .iter()
        .find(|t| t.database == "tenant_bad")
        .unwrap_or_else(|| panic!("the erroring tenant is listed: {text}"));
    assert!(bad.errors >= 3, "{bad:?}");
    assert!(bad.ranked.iter().any(|r| r == "errors"), "{bad:?}");
    let slow: Vec<u64> = figures
        .tenants
        .iter()
        .filter(|t| t.ranked.iter().any(|r| r == "latency"))
        .map(|t| t.recent_mean_us())
        .collect();
    assert!(!slow.is_empty() && slow.len() <= FIGURES_TOP, "{text}");

    // Every database's usage summed: at least what the listed ones add up to.
    let general = &figures.general;
    assert!(general.usage_analytics);
    let total = general.usage.as_ref().expect("usage on");
    let expected = quiet as u64 + 20 + 4;
    assert!(
        total.operations >= expected,
        "{} < {expected}",
        total.operations
    );
    assert!(total.errors >= bad.errors);
    assert!(general.databases_in_use >= quiet + 2, "{text}");
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn figures_of_an_idle_manager_list_its_pool_and_no_tenant() {
    let server = server().await;
    let poly = common::manager(&server).await;
    let ops = Router::new().route("/figures", polymongo_axum::figures(poly.clone()));
    let (_, text) = get_figures(&ops).await;
    let figures: Figures = serde_json::from_str(&text).unwrap();
    assert_eq!(figures.pools.len(), 1, "{text}");
    assert!(figures.tenants.is_empty(), "{text}");
    assert!(figures.instance.starts_with("pid:"), "{text}");
    assert_eq!(
        figures.general.usage.as_ref().map(|u| u.operations),
        Some(0)
    );
}
