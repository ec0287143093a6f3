//! A property over generated tenant values, for every source: the status and the body's shape
//! follow the policy's rules, and a raw client sees that no database other than the expected
//! one was touched — and that unknown or invalid names left no state in the manager.

mod common;

use std::collections::BTreeSet;

use axum::http::StatusCode;
use common::{manager, notes_app, raw, raw_texts, send, server, sources_only, Req};
use proptest::prelude::*;
use serde_json::json;

const PREFIX: &str = "tenant_";

/// Where the generated value is put.
#[derive(Debug, Clone, Copy)]
enum Source {
    Header,
    Host,
    Path,
    Claim,
}

/// The tenant the policy should accept for `value` given by `source`, if any: lower-case
/// letters, digits, `_`, `-`, starting with a letter or digit, short enough once prefixed,
/// and allowed (the test's policy refuses names starting with `z`). A host is read
/// lower-cased.
fn expected(value: &str, source: Source) -> Option<String> {
    let name = match source {
        Source::Host => value.to_ascii_lowercase(),
        _ => value.to_owned(),
    };
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && PREFIX.len() + name.len() < 64;
    (valid && allowed(&name)).then_some(name)
}

fn allowed(name: &str) -> bool {
    !name.starts_with('z')
}

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn request(value: &str, source: Source, text: &str) -> Option<Req> {
    let body = json!({ "text": text });
    Some(match source {
        Source::Header => Req::post("/notes", body).header_bytes("x-tenant", value.as_bytes()),
        Source::Host => {
            // A value the HTTP stack itself cannot carry as a header is not a request.
            axum::http::HeaderValue::from_str(&format!("{value}.example.test")).ok()?;
            Req::post("/notes", body).header("host", &format!("{value}.example.test"))
        }
        Source::Path => Req::post(format!("/t/{}/notes", percent_encode(value)), body),
        Source::Claim => Req::post("/notes", body).claims(value),
    })
}

fn values() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9][a-z0-9_-]{0,12}",
        "[a-zA-Z0-9_-]{1,10}",
        "[ -~]{0,12}",
        "\\PC{0,6}",
        Just("admin".to_owned()),
        Just("zeta".to_owned()),
        "[a-z]{50,60}",
    ]
}

fn sources() -> impl Strategy<Value = Source> {
    prop_oneof![
        Just(Source::Header),
        Just(Source::Host),
        Just(Source::Path),
        Just(Source::Claim),
    ]
}

#[test]
fn every_source_answers_by_the_rules_and_touches_only_the_expected_database() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (server, poly, client) = rt.block_on(async {
        let server = server().await;
        let poly = manager(&server).await;
        let client = raw(&server).await;
        (server, poly, client)
    });
    let app = notes_app(
        sources_only(poly.clone())
            .allow(allowed)
            .prefix(PREFIX)
            .build()
            .unwrap(),
    );
    let touched = std::cell::RefCell::new(BTreeSet::<String>::new());
    let case = std::cell::Cell::new(0u32);
    let config = ProptestConfig {
        cases: 160,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(value in values(), source in sources())| {
        case.set(case.get() + 1);
        let text = format!("case {}", case.get());
        let Some(req) = request(&value, source, &text) else {
            return Ok(());
        };
        let want = expected(&value, source);
        let (status, body) = rt.block_on(send(&app, req));
        match &want {
            Some(tenant) => {
                prop_assert_eq!(status, StatusCode::CREATED, "{:?} via {:?}: {}", value, source, body);
                touched.borrow_mut().insert(format!("{PREFIX}{tenant}"));
                let texts = rt.block_on(raw_texts(&client, &format!("{PREFIX}{tenant}")));
                prop_assert!(texts.contains(&text), "{:?}: not stored", value);
            }
            None => {
                prop_assert!(
                    status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
                    "{:?} via {:?}: {} {}", value, source, status, body
                );
                let fields = body.as_object().map(|o| o.len());
                prop_assert_eq!(fields, Some(2), "{:?}: body {}", value, body);
                prop_assert!(body["error"].is_string() && body["message"].is_string());
            }
        }
        let on_server: BTreeSet<String> = rt
            .block_on(async { client.list_database_names().await })
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with(PREFIX))
            .collect();
        prop_assert_eq!(&on_server, &*touched.borrow(), "after {:?} via {:?}", value, source);
        prop_assert!(poly.cached_databases() <= touched.borrow().len());
    });
    drop(server);
}
