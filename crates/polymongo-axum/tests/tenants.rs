//! The tenant extractor against a real server: isolation, refusals with their status and body,
//! reserved databases unreachable through every source.

mod common;

use axum::http::StatusCode;
use common::{all_sources, assert_refused, manager, notes_app, raw, raw_texts, send, server, Req};
use serde_json::json;

fn texts(body: &serde_json::Value) -> Vec<String> {
    let mut t: Vec<String> = body
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {body}"))
        .iter()
        .map(|n| n["text"].as_str().expect("text").to_owned())
        .collect();
    t.sort();
    t
}

#[tokio::test]
async fn a_note_created_for_one_tenant_is_never_visible_to_another() {
    let server = server().await;
    let poly = manager(&server).await;
    let app = notes_app(all_sources(poly).prefix("tenant_").build().unwrap());

    // Each tenant written through a different source.
    let created = [
        Req::post("/notes", json!({"text": "a-secret"})).header("x-tenant", "a"),
        Req::post("/notes", json!({"text": "b-secret"})).header("host", "b.example.test"),
        Req::post("/t/c/notes", json!({"text": "c-secret"})),
        Req::post("/notes", json!({"text": "d-secret"})).claims("d"),
    ];
    for req in created {
        let (status, body) = send(&app, req).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    // Read back through every source: each tenant sees its own note only, whichever source
    // names it.
    for (tenant, own) in [
        ("a", "a-secret"),
        ("b", "b-secret"),
        ("c", "c-secret"),
        ("d", "d-secret"),
    ] {
        let reads = [
            Req::get("/notes").header("x-tenant", tenant),
            Req::get("/notes").header("host", &format!("{tenant}.example.test:8080")),
            Req::get(format!("/t/{tenant}/notes")),
            Req::get("/notes").claims(tenant),
        ];
        for req in reads {
            let (status, body) = send(&app, req).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(texts(&body), vec![own.to_owned()], "tenant {tenant}");
        }
    }

    // And the server agrees, seen by a client that knows nothing of polymongo.
    let raw = raw(&server).await;
    for (tenant, own) in [
        ("a", "a-secret"),
        ("b", "b-secret"),
        ("c", "c-secret"),
        ("d", "d-secret"),
    ] {
        assert_eq!(
            raw_texts(&raw, &format!("tenant_{tenant}")).await,
            vec![own.to_owned()]
        );
    }
    assert!(raw_texts(&raw, "main").await.is_empty());
}

#[tokio::test]
async fn the_first_source_that_names_a_tenant_decides() {
    let server = server().await;
    let poly = manager(&server).await;
    let app = notes_app(all_sources(poly).prefix("tenant_").build().unwrap());
    // Header before subdomain: written to `x`, not `y`.
    let req = Req::post("/notes", json!({"text": "hx"}))
        .header("x-tenant", "x")
        .header("host", "y.example.test");
    assert_eq!(send(&app, req).await.0, StatusCode::CREATED);
    // A refused header is refused: the valid subdomain does not rescue it.
    let req = Req::get("/notes")
        .header("x-tenant", "no.dots")
        .header("host", "y.example.test");
    assert_refused(
        &send(&app, req).await,
        StatusCode::BAD_REQUEST,
        "invalid_tenant",
        "bad header, good host",
    );
    let raw = raw(&server).await;
    assert_eq!(raw_texts(&raw, "tenant_x").await, vec!["hx".to_owned()]);
    assert!(raw_texts(&raw, "tenant_y").await.is_empty());
}

#[tokio::test]
async fn each_bad_tenant_name_is_answered_400_with_a_json_body() {
    let server = server().await;
    let poly = manager(&server).await;
    let app = notes_app(all_sources(poly).prefix("tenant_").build().unwrap());
    let long = "x".repeat(60); // tenant_ + 60 = 67 bytes: over MongoDB's 63
    let cases: Vec<(&str, Req)> = vec![
        (
            "dot in header",
            Req::get("/notes").header("x-tenant", "a.b"),
        ),
        (
            "space in header",
            Req::get("/notes").header("x-tenant", "a b"),
        ),
        (
            "dollar in header",
            Req::get("/notes").header("x-tenant", "a$b"),
        ),
        (
            "slash in header",
            Req::get("/notes").header("x-tenant", "a/b"),
        ),
        ("empty header", Req::get("/notes").header("x-tenant", "")),
        (
            "leading underscore",
            Req::get("/notes").header("x-tenant", "_a"),
        ),
        (
            "non-ASCII header bytes",
            Req::get("/notes").header_bytes("x-tenant", "café".as_bytes()),
        ),
        (
            "too long once prefixed",
            Req::get("/notes").header("x-tenant", &long),
        ),
        (
            "two headers",
            Req::get("/notes")
                .header("x-tenant", "a")
                .header("x-tenant", "b"),
        ),
        (
            "nested subdomain",
            Req::get("/notes").header("host", "a.b.example.test"),
        ),
        ("encoded dot in path", Req::get("/t/a%2Eb/notes")),
        ("encoded slash in path", Req::get("/t/a%2Fb/notes")),
        ("encoded NUL in path", Req::get("/t/a%00b/notes")),
        ("unicode in path", Req::get("/t/caf%C3%A9/notes")),
        ("dot in claim", Req::get("/notes").claims("../admin")),
    ];
    for (case, req) in cases {
        assert_refused(
            &send(&app, req).await,
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            case,
        );
    }
    // Nothing was created for any of them.
    let names = raw(&server).await.list_database_names().await.unwrap();
    assert!(
        names.iter().all(|n| !n.starts_with("tenant_")),
        "databases: {names:?}"
    );
}

#[tokio::test]
async fn a_missing_tenant_is_400_or_the_configured_default() {
    let server = server().await;
    let poly = manager(&server).await;
    let strict = notes_app(all_sources(poly.clone()).prefix("tenant_").build().unwrap());
    assert_refused(
        &send(&strict, Req::get("/notes")).await,
        StatusCode::BAD_REQUEST,
        "missing_tenant",
        "no tenant",
    );
    // A host that is the base domain itself, or another domain, names no tenant.
    for host in ["example.test", "acme.elsewhere.test"] {
        assert_refused(
            &send(&strict, Req::get("/notes").header("host", host)).await,
            StatusCode::BAD_REQUEST,
            "missing_tenant",
            host,
        );
    }

    let defaulted = notes_app(
        all_sources(poly)
            .prefix("tenant_")
            .default_tenant("demo")
            .build()
            .unwrap(),
    );
    let (status, _) = send(&defaulted, Req::post("/notes", json!({"text": "d"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let raw = raw(&server).await;
    assert_eq!(raw_texts(&raw, "tenant_demo").await, vec!["d".to_owned()]);
}

#[tokio::test]
async fn tenants_outside_the_allow_list_are_404() {
    let server = server().await;
    let poly = manager(&server).await;
    let sync = notes_app(
        all_sources(poly.clone())
            .prefix("tenant_")
            .allow(|t| t.starts_with("paying"))
            .build()
            .unwrap(),
    );
    let asynchronous = notes_app(
        all_sources(poly)
            .prefix("tenant_")
            .allow_async(|t| async move {
                tokio::task::yield_now().await; // a registry lookup would await here
                t.starts_with("paying")
            })
            .build()
            .unwrap(),
    );
    for app in [&sync, &asynchronous] {
        let req = Req::post("/notes", json!({"text": "p"})).header("x-tenant", "paying1");
        assert_eq!(send(app, req).await.0, StatusCode::CREATED);
        for req in [
            Req::post("/notes", json!({"text": "f"})).header("x-tenant", "free1"),
            Req::get("/t/free1/notes"),
            Req::get("/notes").claims("free1"),
        ] {
            assert_refused(
                &send(app, req).await,
                StatusCode::NOT_FOUND,
                "unknown_tenant",
                "free1",
            );
        }
    }
    let raw = raw(&server).await;
    assert_eq!(raw_texts(&raw, "tenant_paying1").await.len(), 2);
    assert!(raw_texts(&raw, "tenant_free1").await.is_empty());
}

#[tokio::test]
async fn reserved_databases_cannot_be_reached_through_any_source() {
    let server = server().await;
    let poly = manager(&server).await;
    // The worst case: no prefix, tenant name = database name, every valid name allowed.
    let bare = notes_app(all_sources(poly.clone()).build().unwrap());
    for name in ["admin", "local", "config"] {
        let reqs = [
            Req::post("/notes", json!({"text": "pwn"})).header("x-tenant", name),
            Req::post("/notes", json!({"text": "pwn"}))
                .header("host", &format!("{name}.example.test")),
            Req::post(format!("/t/{name}/notes"), json!({"text": "pwn"})),
            Req::post("/notes", json!({"text": "pwn"})).claims(name),
            Req::get("/notes").header("x-tenant", name),
        ];
        for req in reqs {
            assert_refused(
                &send(&bare, req).await,
                StatusCode::NOT_FOUND,
                "unknown_tenant",
                name,
            );
        }
    }
    // Upper-case spellings break the case rule (400) from every source but the host, which
    // is read lower-cased and then meets the reserved rule (404): refused either way.
    for name in ["ADMIN", "Config"] {
        for req in [
            Req::post("/notes", json!({"text": "pwn"})).header("x-tenant", name),
            Req::post(format!("/t/{name}/notes"), json!({"text": "pwn"})),
            Req::post("/notes", json!({"text": "pwn"})).claims(name),
        ] {
            assert_refused(
                &send(&bare, req).await,
                StatusCode::BAD_REQUEST,
                "invalid_tenant",
                name,
            );
        }
        let req = Req::post("/notes", json!({"text": "pwn"}))
            .header("host", &format!("{name}.example.test"));
        assert_refused(
            &send(&bare, req).await,
            StatusCode::NOT_FOUND,
            "unknown_tenant",
            name,
        );
    }
    // A mapping that lands on a reserved database is refused as well.
    let mapped = notes_app(
        all_sources(poly.clone())
            .map(|_| "admin".to_owned())
            .build()
            .unwrap(),
    );
    let req = Req::post("/notes", json!({"text": "pwn"})).header("x-tenant", "anyone");
    assert_refused(
        &send(&mapped, req).await,
        StatusCode::NOT_FOUND,
        "unknown_tenant",
        "mapped",
    );

    // With a prefix the same names are ordinary tenants, in their own databases.
    let prefixed = notes_app(all_sources(poly).prefix("tenant_").build().unwrap());
    let req = Req::post("/notes", json!({"text": "ok"})).header("x-tenant", "admin");
    assert_eq!(send(&prefixed, req).await.0, StatusCode::CREATED);

    let raw = raw(&server).await;
    for db in ["admin", "local", "config"] {
        assert!(raw_texts(&raw, db).await.is_empty(), "{db} was written");
    }
    assert_eq!(raw_texts(&raw, "tenant_admin").await, vec!["ok".to_owned()]);
}

#[tokio::test]
async fn a_closed_manager_is_503_not_500() {
    let server = server().await;
    let poly = manager(&server).await;
    let app = notes_app(all_sources(poly.clone()).prefix("tenant_").build().unwrap());
    poly.close_all(std::time::Duration::from_secs(5)).await;
    assert_refused(
        &send(&app, Req::get("/notes").header("x-tenant", "a")).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "closed",
    );
}

#[tokio::test]
async fn a_duplicate_key_is_409_without_driver_text() {
    let server = server().await;
    let poly = manager(&server).await;
    let app = notes_app(all_sources(poly).prefix("tenant_").build().unwrap());
    let note = json!({"_id": "n1", "text": "once"});
    let first = send(
        &app,
        Req::post("/notes", note.clone()).header("x-tenant", "a"),
    )
    .await;
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.1);
    let second = send(&app, Req::post("/notes", note).header("x-tenant", "a")).await;
    assert_refused(&second, StatusCode::CONFLICT, "conflict", "duplicate _id");
}

#[test]
fn bad_settings_are_refused_when_built() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // A manager that never connects: building a policy does no I/O.
        let poly = polymongo::PolyMongo::builder()
            .uri("mongodb://127.0.0.1:1")
            .build()
            .await
            .unwrap();
        use polymongo_axum::{ConfigError, Tenancy};
        assert_eq!(
            Tenancy::builder(poly.clone()).build().unwrap_err(),
            ConfigError::NoSource
        );
        let bad_prefix = Tenancy::builder(poly.clone())
            .header(axum::http::HeaderName::from_static("x-tenant"))
            .allow(|_| true)
            .prefix("t.")
            .build()
            .unwrap_err();
        assert!(
            matches!(bad_prefix, ConfigError::InvalidPrefix { .. }),
            "{bad_prefix}"
        );
        let bad_default = Tenancy::builder(poly.clone())
            .default_tenant("admin")
            .build()
            .unwrap_err();
        assert!(
            matches!(bad_default, ConfigError::InvalidDefault { .. }),
            "{bad_default}"
        );
        assert_eq!(
            Tenancy::builder(poly.clone())
                .subdomain("")
                .allow(|_| true)
                .build()
                .unwrap_err(),
            ConfigError::EmptyBaseDomain
        );
        // Sources with no allow policy: anyone could name any tenant.
        assert_eq!(
            Tenancy::builder(poly.clone())
                .header(axum::http::HeaderName::from_static("x-tenant"))
                .build()
                .unwrap_err(),
            ConfigError::NoAllowPolicy
        );
        for bad in ["Acme", "a.b", "admin"] {
            let e = Tenancy::builder(poly.clone())
                .header(axum::http::HeaderName::from_static("x-tenant"))
                .allow_list(["ok", bad])
                .build()
                .unwrap_err();
            assert!(
                matches!(e, ConfigError::InvalidAllowed { .. }),
                "{bad}: {e}"
            );
        }
        let e = Tenancy::builder(poly.clone())
            .header(axum::http::HeaderName::from_static("x-tenant"))
            .allow(|_| true)
            .queue_timeout(std::time::Duration::from_secs(5))
            .request_timeout(std::time::Duration::from_secs(1))
            .build()
            .unwrap_err();
        assert!(matches!(e, ConfigError::InvalidLimits { .. }), "{e}");
        poly.force_close_all().await;
    });
}
