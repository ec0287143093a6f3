//! Bad input gets typed errors that name the culprit, and passwords appear nowhere.

mod common;

use std::time::Duration;

use polymongo::{Error, ErrorKind, Model, NameRule, PolyMongo};
use serde::{Deserialize, Serialize};

use common::{manager, server};

#[derive(Debug, Serialize, Deserialize)]
struct Thing {
    n: i32,
}
impl Model for Thing {
    const COLLECTION: &'static str = "things";
}

#[derive(Debug, Serialize, Deserialize)]
struct BadCollection;
impl Model for BadCollection {
    const COLLECTION: &'static str = "bad$name";
}

#[tokio::test]
async fn invalid_database_names_are_refused_before_anything_is_sent() {
    let server = server().await;
    let poly = manager(&server, 2).await;
    let things = poly.model::<Thing>();
    let long = "x".repeat(64);
    let cases = [
        ("", NameRule::Empty),
        ("a.b", NameRule::ForbiddenChar('.')),
        ("a/b", NameRule::ForbiddenChar('/')),
        ("a b", NameRule::ForbiddenChar(' ')),
        ("$cmd", NameRule::ForbiddenChar('$')),
        ("nul\0", NameRule::ForbiddenChar('\0')),
        (long.as_str(), NameRule::TooLong { len: 64 }),
    ];
    for (name, want) in cases {
        for err in [
            things.db(name).unwrap_err(),
            poly.database(name).unwrap_err(),
            poly.client_for(name).unwrap_err(),
            poly.ping(name).await.unwrap_err(),
        ] {
            match &err {
                Error::InvalidName {
                    what,
                    name: n,
                    rule,
                } => {
                    assert_eq!((*what, n.as_str(), *rule), ("database", name, want));
                }
                other => panic!("{name:?}: expected InvalidName, got {other:?}"),
            }
            assert_eq!(err.kind(), ErrorKind::InvalidName);
            assert!(!err.is_retryable());
        }
    }
    // A refused name never opened the pool.
    assert_eq!(
        poly.connection_state(),
        polymongo::ConnectionState::Disconnected
    );
    let bad = poly.model::<BadCollection>().db("fine").unwrap_err();
    assert!(
        matches!(
            &bad,
            Error::InvalidName {
                what: "collection",
                rule: NameRule::ForbiddenChar('$'),
                ..
            }
        ),
        "{bad:?}"
    );
}

#[tokio::test]
async fn invalid_options_name_their_field() {
    let cases: Vec<(polymongo::PolyMongoBuilder, &str)> = vec![
        (PolyMongo::builder(), "uri"),
        (PolyMongo::builder().uri("postgres://h/db"), "uri"),
        (PolyMongo::builder().uri("mongodb://h:99999"), "uri"),
        (
            PolyMongo::builder().uri("mongodb://h/?maxPoolSize=abc"),
            "uri",
        ),
        (
            PolyMongo::builder().uri("mongodb://h").default_db("a.b"),
            "default_db",
        ),
        (
            PolyMongo::builder().uri("mongodb://h").max_pool_size(0),
            "max_pool_size",
        ),
        (
            PolyMongo::builder()
                .uri("mongodb://h")
                .max_pool_size(2)
                .min_free_connections(3),
            "min_free_connections",
        ),
        (
            PolyMongo::builder()
                .uri("mongodb://h/?maxPoolSize=2")
                .min_free_connections(3),
            "min_free_connections",
        ),
        (
            PolyMongo::builder()
                .uri("mongodb://h")
                .idle_timeout(Duration::ZERO),
            "idle_timeout",
        ),
        (
            PolyMongo::builder()
                .uri("mongodb://h")
                .retry(0, Duration::ZERO),
            "retry.attempts",
        ),
    ];
    for (builder, field) in cases {
        let shown = format!("{:?}", builder.options());
        match builder.build().await {
            Err(Error::Config { field: f, message }) => {
                assert_eq!(f, field, "{shown}: {message}");
                assert!(!message.is_empty());
            }
            other => panic!("{shown}: expected a config error on {field}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_password_in_the_uri_appears_in_no_error_or_debug_string() {
    const SECRET: &str = "s3cr3t-Pa55";
    // Unreachable on purpose: the connection error must not show the secret either.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let uri = format!("mongodb://admin:{SECRET}@127.0.0.1:{port}/?serverSelectionTimeoutMS=150");
    let mut shown = Vec::new();

    let builder = PolyMongo::builder().uri(&uri).retry(1, Duration::ZERO);
    shown.push(format!("{builder:?}"));
    let poly = builder.build().await.unwrap();
    shown.push(format!("{poly:?}"));
    shown.push(format!("{:?}", poly.options()));
    let things = poly.model::<Thing>();
    shown.push(format!("{things:?}"));
    let handle = things.db("secret_test").unwrap();
    shown.push(format!("{handle:?}"));
    let err = poly.ping("secret_test").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    shown.push(err.to_string());
    shown.push(format!("{err:?}"));
    let err = handle.find_one(mongodb::bson::doc! {}).await.unwrap_err();
    shown.push(err.to_string());
    shown.push(format!("{err:?}"));

    // Malformed URIs carrying a password: the parse error is shown, the password is not.
    for bad in [
        format!("mongodb://admin:{SECRET}@h:notaport/"),
        format!("mongodb://admin:{SECRET}@/"),
        format!("mongodb://admin:{SECRET}@h/?authMechanism=NOPE"),
        format!("mongodb://admin:{SECRET}@h/?w=banana&wtimeoutMS=x"),
    ] {
        let err = PolyMongo::builder().uri(&bad).build().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        shown.push(err.to_string());
        shown.push(format!("{err:?}"));
    }

    for s in &shown {
        assert!(!s.contains(SECRET), "password leaked: {s}");
    }
    assert!(shown.iter().any(|s| s.contains("admin:***@")), "{shown:#?}");
    poly.close_all(Duration::from_secs(1)).await;
}
