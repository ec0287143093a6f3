//! Tracing spans of `DbHandle::run` and `Transaction::run`: one span per call, carrying
//! OpenTelemetry's database attributes (`db.*`, `server.*`, `error.type`) and the `otel.*`
//! fields `tracing-opentelemetry` maps to the span's name, kind and status.
//!
//! Alone in its own test binary: `tracing` caches per call site whether anyone listens, and a
//! thread-scoped subscriber set while other tests on other threads reach the same call sites
//! can miss spans. Every test here listens with the same kind of subscriber.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::bson::doc;
use polymongo::Model;
use polymongo_testkit::Capability;
use serde::{Deserialize, Serialize};

use common::server;

#[derive(Debug, Serialize, Deserialize)]
struct Event {
    n: i64,
}
impl Model for Event {
    const COLLECTION: &'static str = "events";
}

/// A document with a chosen `_id`, to provoke a duplicate key.
#[derive(Debug, Serialize, Deserialize)]
struct Keyed {
    _id: i64,
}
impl Model for Keyed {
    const COLLECTION: &'static str = "keyed";
}

/// A document whose `_id` is a string, to see a duplicate key quote it.
#[derive(Debug, Serialize, Deserialize)]
struct Token {
    _id: String,
}
impl Model for Token {
    const COLLECTION: &'static str = "tokens";
}

/// One span as a subscriber saw it: its name and every field recorded on it, at its creation
/// or later.
#[derive(Clone, Debug)]
struct Seen {
    name: &'static str,
    fields: BTreeMap<String, String>,
}

impl Seen {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }
}

/// Records the library's spans (`polymongo.*`) opened on this thread, with their fields, and
/// every event's fields.
#[derive(Clone, Default)]
struct Spans {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Span id → index in `seen`, while the span is open (ids are reused after a close).
    open: Arc<Mutex<HashMap<u64, usize>>>,
    events: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
    /// Marked: `tracing-opentelemetry` exports an unsigned field as a string, so an integer
    /// attribute (`server.port`) must be recorded as `i64`.
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0
            .insert(field.name().to_owned(), format!("u64 {value}"));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let name = attrs.metadata().name();
        if !name.starts_with("polymongo.") {
            return;
        }
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut seen = self.seen.lock().unwrap();
        seen.push(Seen { name, fields });
        self.open
            .lock()
            .unwrap()
            .insert(id.into_u64(), seen.len() - 1);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some(&i) = self.open.lock().unwrap().get(&id.into_u64()) {
            values.record(&mut Fields(&mut self.seen.lock().unwrap()[i].fields));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.events.lock().unwrap().push(fields);
    }

    fn on_close(&self, id: tracing::span::Id, _: tracing_subscriber::layer::Context<'_, S>) {
        self.open.lock().unwrap().remove(&id.into_u64());
    }
}

impl Spans {
    /// Listens on this thread until the guard is dropped. The default (current-thread) test
    /// runtime polls everything on this thread.
    fn listen() -> (Self, tracing::subscriber::DefaultGuard) {
        use tracing_subscriber::layer::SubscriberExt;
        let spans = Spans::default();
        let guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
        (spans, guard)
    }

    fn named(&self, name: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect()
    }
}

/// The first host of a connection string and its port: what `server.address` and
/// `server.port` must say.
fn host_and_port(uri: &str) -> (String, String) {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let hosts = rest.split(['/', '?']).next().unwrap();
    let hosts = hosts.rsplit_once('@').map_or(hosts, |(_, h)| h);
    let first = hosts.split(',').next().unwrap();
    match first.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.to_owned()),
        None => (first.to_owned(), "27017".to_owned()),
    }
}

/// The attributes every operation span has, whatever the operation.
fn assert_common(span: &Seen, database: &str, collection: &str, uri: &str) {
    let (host, port) = host_and_port(uri);
    let want = [
        ("db.system.name", "mongodb"),
        ("db.namespace", database),
        ("db.collection.name", collection),
        ("otel.kind", "client"),
        ("server.address", &host),
        ("server.port", &port),
    ];
    for (key, value) in want {
        assert_eq!(span.get(key), Some(value), "{key} of {span:?}");
    }
    assert_eq!(
        span.get("polymongo.cluster"),
        Some(polymongo::redact_uri(uri).as_str()),
        "{span:?}"
    );
    // The library's former names are gone.
    for old in ["database", "collection", "op", "cluster", "databases"] {
        assert_eq!(span.get(old), None, "{old} in {span:?}");
    }
}

fn assert_succeeded(span: &Seen) {
    for key in ["error.type", "db.response.status_code", "otel.status_code"] {
        assert_eq!(span.get(key), None, "{key} on a success: {span:?}");
    }
}

#[tokio::test]
async fn every_run_opens_one_span_naming_database_and_operation() {
    let (spans, _guard) = Spans::listen();
    let server = server().await;
    let poly = common::manager(&server, 2).await;
    let h = poly.model::<Event>().db("spans").unwrap();
    h.run(|c| c.insert_one(Event { n: 1 })).await.unwrap();
    h.run(|c| c.count_documents(doc! {})).await.unwrap();
    h.find_one(doc! {}).await.unwrap();
    let seen: Vec<String> = spans
        .named("polymongo.op")
        .iter()
        .map(|s| {
            let f = |k| s.get(k).unwrap_or_default();
            format!(
                "{}/{}/{}",
                f("db.namespace"),
                f("db.collection.name"),
                f("db.operation.name")
            )
        })
        .collect();
    assert_eq!(seen, ["spans/events/insert", "spans/events/countDocuments"]);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_find_and_an_insert_carry_the_database_conventions() {
    let (spans, _guard) = Spans::listen();
    let server = server().await;
    let poly = common::manager(&server, 2).await;
    let h = poly.model::<Event>().db("spans_conv").unwrap();
    h.run(|c| c.insert_one(Event { n: 7 })).await.unwrap();
    let found = h.run(|c| c.find_one(doc! { "n": 7 })).await.unwrap();
    assert_eq!(found.map(|e| e.n), Some(7));
    // Several calls in one closure: the operation is not known, the span still names its
    // target.
    h.run(|c| async move { c.find_one(doc! {}).await })
        .await
        .unwrap();

    let ops = spans.named("polymongo.op");
    assert_eq!(ops.len(), 3, "{ops:#?}");
    for span in &ops {
        assert_common(span, "spans_conv", "events", server.uri());
        assert_succeeded(span);
    }
    assert_eq!(ops[0].get("db.operation.name"), Some("insert"));
    assert_eq!(ops[0].get("otel.name"), Some("insert events"));
    assert_eq!(ops[1].get("db.operation.name"), Some("find"));
    assert_eq!(ops[1].get("otel.name"), Some("find events"));
    assert_eq!(ops[2].get("db.operation.name"), None, "{:?}", ops[2]);
    assert_eq!(ops[2].get("otel.name"), Some("events"));
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_duplicate_key_marks_the_span_failed_with_the_servers_code() {
    let (spans, _guard) = Spans::listen();
    let server = server().await;
    let poly = common::manager(&server, 2).await;
    let h = poly.model::<Keyed>().db("spans_dup").unwrap();
    h.run(|c| c.insert_one(Keyed { _id: 1 })).await.unwrap();
    let err = h.run(|c| c.insert_one(Keyed { _id: 1 })).await.unwrap_err();
    assert!(err.to_string().contains("11000"), "{err}");

    let ops = spans.named("polymongo.op");
    assert_eq!(ops.len(), 2, "{ops:#?}");
    assert_succeeded(&ops[0]);
    let failed = &ops[1];
    assert_common(failed, "spans_dup", "keyed", server.uri());
    assert_eq!(failed.get("otel.name"), Some("insert keyed"));
    assert_eq!(failed.get("otel.status_code"), Some("ERROR"), "{failed:?}");
    assert_eq!(failed.get("db.response.status_code"), Some("11000"));
    assert_eq!(failed.get("error.type"), Some("11000"));
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_transaction_span_carries_the_conventions_and_its_failure() {
    let Some(server) = polymongo_testkit::server_for(&[Capability::Transactions]).await else {
        return;
    };
    let (spans, _guard) = Spans::listen();
    let poly = common::manager(&server, 2).await;
    let keyed = poly.model::<Keyed>();
    // Creates the database and the collection outside any transaction.
    keyed
        .db("spans_txn")
        .unwrap()
        .insert_one(Keyed { _id: 0 })
        .await
        .unwrap();

    poly.transaction(["spans_txn"])
        .run(async |session| {
            keyed
                .db("spans_txn")?
                .insert_one(Keyed { _id: 1 })
                .session(&mut *session)
                .await?;
            Ok(())
        })
        .await
        .unwrap();
    let err = poly
        .transaction(["spans_txn"])
        .run(async |session| {
            keyed
                .db("spans_txn")?
                .insert_one(Keyed { _id: 0 })
                .session(&mut *session)
                .await?;
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("11000"), "{err}");

    let txns = spans.named("polymongo.transaction");
    assert_eq!(txns.len(), 2, "{txns:#?}");
    let (host, port) = host_and_port(server.uri());
    for span in &txns {
        let want = [
            ("db.system.name", "mongodb"),
            ("db.namespace", "spans_txn"),
            ("otel.kind", "client"),
            ("otel.name", "transaction"),
            ("server.address", &host),
            ("server.port", &port),
            ("polymongo.databases", r#"["spans_txn"]"#),
        ];
        for (key, value) in want {
            assert_eq!(span.get(key), Some(value), "{key} of {span:?}");
        }
        assert_eq!(
            span.get("polymongo.cluster"),
            Some(polymongo::redact_uri(server.uri()).as_str())
        );
    }
    assert_succeeded(&txns[0]);
    assert_eq!(
        txns[1].get("otel.status_code"),
        Some("ERROR"),
        "{:?}",
        txns[1]
    );
    assert_eq!(txns[1].get("error.type"), Some("11000"));
    assert_eq!(txns[1].get("db.response.status_code"), Some("11000"));
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn no_span_field_or_event_shows_the_uris_password() {
    const SECRET: &str = "Sp4nS3cret-x";
    let (spans, _guard) = Spans::listen();
    let server = server().await;
    // The test server's own address, with credentials it does not know: the operation fails
    // to authenticate, after its span has been opened.
    let uri = server
        .uri()
        .replacen("://", &format!("://spanner:{SECRET}@"), 1);
    let poly = polymongo::PolyMongo::builder()
        .uri(&uri)
        .default_db("main")
        .max_pool_size(2)
        .build()
        .await
        .unwrap();
    let h = poly.model::<Event>().db("spans_secret").unwrap();
    let err = h.run(|c| c.find_one(doc! {})).await.unwrap_err();
    assert!(!err.to_string().contains(SECRET), "{err}");

    let ops = spans.named("polymongo.op");
    assert_eq!(ops.len(), 1, "{ops:#?}");
    let span = &ops[0];
    assert_common(span, "spans_secret", "events", &uri);
    assert!(
        span.get("polymongo.cluster")
            .is_some_and(|c| c.contains("spanner:***@")),
        "{span:?}"
    );
    assert_eq!(span.get("otel.status_code"), Some("ERROR"), "{span:?}");
    assert!(span.get("error.type").is_some(), "{span:?}");
    for seen in spans.seen.lock().unwrap().iter() {
        for (key, value) in &seen.fields {
            assert!(
                !value.contains(SECRET),
                "{key} of {} shows it: {value}",
                seen.name
            );
        }
    }
    for event in spans.events.lock().unwrap().iter() {
        for (key, value) in event {
            assert!(
                !value.contains(SECRET),
                "event field {key} shows it: {value}"
            );
        }
    }
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn no_span_field_or_event_quotes_a_duplicate_keys_value() {
    const VALUE: &str = "tok-Qv7xS3cret";
    let (spans, _guard) = Spans::listen();
    let server = server().await;
    let poly = common::manager(&server, 2).await;
    let h = poly.model::<Token>().db("spans_values").unwrap();
    h.run(|c| c.insert_one(Token { _id: VALUE.into() }))
        .await
        .unwrap();
    let err = h
        .run(|c| c.insert_one(Token { _id: VALUE.into() }))
        .await
        .unwrap_err();
    // The server's message (which mongod makes `E11000 … dup key: { _id: "tok-…" }`) is the
    // caller's, in the error's `Display` (as the driver prints it); the log leaves it out, whatever it says.
    let message = match err.driver_error().map(|e| &*e.kind) {
        Some(mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w))) => {
            w.message.clone()
        }
        other => panic!("not a write error: {other:?}"),
    };
    assert!(!message.is_empty());
    let redacted = err.redacted().to_string();
    assert!(!redacted.contains(&message), "{redacted}");
    assert!(!redacted.contains(VALUE), "{redacted}");
    assert!(redacted.contains("write error 11000"), "{redacted}");

    let events = spans.events.lock().unwrap().clone();
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.get("message").map(String::as_str) == Some("operation failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{events:#?}");
    assert_eq!(failed[0].get("error"), Some(&redacted), "{failed:?}");
    for event in &events {
        for (key, value) in event {
            assert!(
                !value.contains(VALUE) && !value.contains(&message),
                "event field {key} quotes the server: {value}"
            );
        }
    }
    for seen in spans.seen.lock().unwrap().iter() {
        for (key, value) in &seen.fields {
            assert!(
                !value.contains(VALUE) && !value.contains(&message),
                "{key} of {} quotes the server: {value}",
                seen.name
            );
        }
    }
    poly.close_all(Duration::from_secs(5)).await;
}

/// Connection strings a user may really write, with secrets where a naive parse goes wrong:
/// percent-encoded `@ : / ?` in the password, a user alone, a secret in the options, several
/// hosts (options that need TLS or a proxy do not build here; `redaction.rs` covers them
/// without a server). Each manager runs one operation (which fails: the server knows no such user, or
/// nothing answers on the second host); no span field or event shows a secret, and
/// `server.address` / `server.port` are the first host's.
#[tokio::test]
async fn no_span_field_shows_a_secret_of_hostile_connection_strings() {
    let (spans, _guard) = Spans::listen();
    let server = server().await;
    let base = server.uri();
    let (scheme, rest) = base.split_once("://").unwrap();
    let (host, _) = rest.split_once('/').unwrap_or((rest, ""));
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!("{scheme}://ops:Pw%40x1%3Ay2%2Fz3%3Fw4@{host}/?directConnection=true"),
            vec!["Pw%40x1%3Ay2%2Fz3%3Fw4", "Pw@x1:y2/z3?w4"],
        ),
        (
            format!("{scheme}://Us3rOnlyName@{host}/?directConnection=true"),
            vec![],
        ),
        (
            format!(
                "{scheme}://ops:Pw1@{host}/?directConnection=true&authMechanismProperties=AWS_SESSION_TOKEN:T0kSecret9"
            ),
            vec!["T0kSecret9"],
        ),
        (
            format!("{scheme}://ops:MultiH0stPw@{host},127.0.0.1:1/"),
            vec!["MultiH0stPw"],
        ),
    ];
    for (i, (uri, secrets)) in cases.iter().enumerate() {
        let Ok(poly) = polymongo::PolyMongo::builder()
            .uri(uri)
            .default_db("main")
            .max_pool_size(2)
            .server_selection_timeout(Duration::from_millis(300))
            .retry(1, Duration::from_millis(1))
            .build()
            .await
        else {
            panic!("{} does not build", polymongo::redact_uri(uri));
        };
        let before = spans.named("polymongo.op").len();
        let database = format!("hostile_{i}");
        let _ = poly
            .model::<Event>()
            .db(&database)
            .unwrap()
            .run(|c| c.find_one(doc! {}))
            .await;
        let ops = spans.named("polymongo.op");
        assert_eq!(ops.len(), before + 1, "{ops:#?}");
        let span = &ops[before];
        let (host, port) = host_and_port(uri);
        assert_eq!(span.get("server.address"), Some(host.as_str()), "{span:?}");
        assert_eq!(span.get("server.port"), Some(port.as_str()), "{span:?}");
        for seen in spans.seen.lock().unwrap().iter() {
            for (key, value) in &seen.fields {
                for secret in secrets {
                    assert!(!value.contains(secret), "{key} shows {secret}: {value}");
                }
            }
        }
        for event in spans.events.lock().unwrap().iter() {
            for (key, value) in event {
                for secret in secrets {
                    assert!(
                        !value.contains(secret),
                        "event {key} shows {secret}: {value}"
                    );
                }
            }
        }
        poly.force_close_all().await;
    }
}
