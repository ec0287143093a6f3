//! Typed models routed across many tenant databases over one shared pool.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use polymongo::Model;
use serde::{Deserialize, Serialize};

use common::{connections, eventually, manager, raw, server, MONITOR_CONNECTIONS};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    name: String,
    tenant: String,
}
impl Model for User {
    const COLLECTION: &'static str = "users";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    number: i32,
    tenant: String,
}
impl Model for Order {
    const COLLECTION: &'static str = "orders";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Invoice {
    total: f64,
    tenant: String,
}
impl Model for Invoice {
    const COLLECTION: &'static str = "invoices";
}

fn tenant(i: usize) -> String {
    format!("routing_tenant_{i:03}")
}

#[tokio::test]
async fn three_models_across_fifty_tenants_land_in_their_own_databases() {
    let server = server().await;
    let poly = manager(&server, 10).await;
    let users = poly.model::<User>();
    let orders = poly.model::<Order>();
    let invoices = poly.wrap_model::<Invoice>();

    for i in 0..50 {
        let t = tenant(i);
        users
            .db(&t)
            .unwrap()
            .insert_one(User {
                name: format!("user{i}"),
                tenant: t.clone(),
            })
            .await
            .unwrap();
        let batch: Vec<Order> = (0..(i as i32 % 3 + 1))
            .map(|n| Order {
                number: n,
                tenant: t.clone(),
            })
            .collect();
        orders.db(&t).unwrap().insert_many(batch).await.unwrap();
        invoices
            .db(&t)
            .unwrap()
            .insert_one(Invoice {
                total: i as f64 * 1.5,
                tenant: t.clone(),
            })
            .await
            .unwrap();
    }

    // Checked through an independent client: every document is in its tenant's database and
    // no other.
    let check = raw(&server).await;
    for i in 0..50 {
        let t = tenant(i);
        let db = check.database(&t);
        for (coll, expected) in [
            ("users", 1u64),
            ("orders", i as u64 % 3 + 1),
            ("invoices", 1),
        ] {
            let docs: Vec<Document> = db
                .collection::<Document>(coll)
                .find(doc! {})
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            assert_eq!(docs.len() as u64, expected, "{t}.{coll}");
            for d in &docs {
                assert_eq!(d.get_str("tenant").unwrap(), t, "{t}.{coll}: {d}");
            }
        }
        let mut names = db.list_collection_names().await.unwrap();
        names.sort();
        assert_eq!(names, ["invoices", "orders", "users"], "{t}");
    }

    // Reading back through the typed handles gives the typed documents.
    let u: Vec<User> = users
        .db(&tenant(7))
        .unwrap()
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        u,
        [User {
            name: "user7".into(),
            tenant: tenant(7)
        }]
    );
    check.shutdown().await;
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn two_hundred_databases_use_no_more_connections_than_one_pool() {
    const POOL: u32 = 4;
    let server = server().await;
    let baseline = connections(&server).await;
    let poly = manager(&server, POOL).await;
    let users = poly.model::<User>();

    // Concurrent work over 200 databases, enough to fill the pool.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let users = users.clone();
        tasks.spawn(async move {
            let t = format!("many_{i:03}");
            let h = users.db(&t)?;
            h.insert_one(User {
                name: "x".into(),
                tenant: t.clone(),
            })
            .await?;
            h.count_documents(doc! {}).await?;
            Ok::<_, polymongo::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let used = connections(&server).await - baseline;
    assert!(used >= 1, "the work must have used the server ({used})");
    assert!(
        used <= POOL as i64 + MONITOR_CONNECTIONS,
        "200 databases opened {used} connections; one pool of {POOL} allows {}",
        POOL as i64 + MONITOR_CONNECTIONS
    );

    let check = raw(&server).await;
    let names = check.list_database_names().await.unwrap();
    let ours = names.iter().filter(|n| n.starts_with("many_")).count();
    assert_eq!(ours, 200, "{names:?}");
    check.shutdown().await;

    // Closing gives every connection back.
    poly.close_all(Duration::from_secs(5)).await;
    eventually("connections to close", Duration::from_secs(10), || async {
        (connections(&server).await == baseline).then_some(())
    })
    .await;
}

#[tokio::test]
async fn raw_access_shares_the_routed_pool() {
    let server = server().await;
    let poly = manager(&server, 3).await;
    let db = poly.database("raw_access").unwrap();
    db.collection::<Document>("things")
        .insert_one(doc! { "k": 1 })
        .await
        .unwrap();
    let client = poly.client_for("raw_access_other").unwrap();
    client
        .database("raw_access_other")
        .collection::<Document>("things")
        .insert_one(doc! { "k": 2 })
        .await
        .unwrap();
    let users = poly.model::<User>();
    let h = users.db("raw_access").unwrap();
    assert_eq!(h.database_name(), "raw_access");
    assert_eq!(h.namespace().to_string(), "raw_access.users");
    assert_eq!(users.collection_name(), "users");

    let check = raw(&server).await;
    let mut seen = BTreeMap::new();
    for name in ["raw_access", "raw_access_other"] {
        let n = check
            .database(name)
            .collection::<Document>("things")
            .count_documents(doc! {})
            .await
            .unwrap();
        seen.insert(name, n);
    }
    assert_eq!(
        seen,
        BTreeMap::from([("raw_access", 1), ("raw_access_other", 1)])
    );
    check.shutdown().await;
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_default_database_comes_from_the_options_then_the_uri() {
    let server = server().await;
    let poly = manager(&server, 2).await;
    let h = poly.model::<User>().default_db().unwrap();
    assert_eq!(h.database_name(), "main");
    poly.close_all(Duration::from_secs(5)).await;

    let uri = server.uri();
    let with_path = match uri.split_once("/?") {
        Some((hosts, query)) => format!("{hosts}/from_uri?{query}"),
        None => format!("{}/from_uri", uri.trim_end_matches('/')),
    };
    let poly = polymongo::PolyMongo::builder()
        .uri(with_path)
        .build()
        .await
        .unwrap();
    assert_eq!(poly.default_db_name(), "from_uri");
    let poly2 = polymongo::PolyMongo::builder()
        .uri(uri)
        .build()
        .await
        .unwrap();
    assert_eq!(poly2.default_db_name(), polymongo::FALLBACK_DEFAULT_DB);
}
