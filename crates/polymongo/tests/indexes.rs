//! Per-tenant indexes: declared by the model, created in each database on first `acquire`,
//! once, and never by the I/O-free `db`.

mod common;

use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::options::IndexOptions;
use mongodb::IndexModel;
use polymongo::Model;
use serde::{Deserialize, Serialize};

use common::{manager, raw, server};

#[derive(Debug, Serialize, Deserialize)]
struct Account {
    email: String,
    created_at: i64,
}
impl Model for Account {
    const COLLECTION: &'static str = "accounts";

    fn indexes() -> Vec<IndexModel> {
        vec![
            IndexModel::builder()
                .keys(doc! { "email": 1 })
                .options(IndexOptions::builder().unique(true).build())
                .build(),
            IndexModel::builder().keys(doc! { "created_at": 1 }).build(),
        ]
    }
}

/// Indexed field names per index, as the server reports them (nx-27017 renames indexes and
/// drops key directions, so only the fields are compared).
async fn indexed_fields(client: &mongodb::Client, db: &str) -> Vec<Vec<String>> {
    let specs: Vec<Document> = client
        .database(db)
        .collection::<Document>("accounts")
        .list_indexes()
        .await
        .unwrap()
        .map_ok(|m| m.keys)
        .try_collect()
        .await
        .unwrap();
    let mut fields: Vec<Vec<String>> = specs.iter().map(|k| k.keys().cloned().collect()).collect();
    fields.sort();
    fields
}

fn expected() -> Vec<Vec<String>> {
    vec![
        vec!["_id".into()],
        vec!["created_at".into()],
        vec!["email".into()],
    ]
}

#[tokio::test]
async fn declared_indexes_exist_in_thirty_fresh_databases_after_first_use() {
    let server = server().await;
    let poly = manager(&server, 4).await;
    let accounts = poly.model::<Account>();
    let mut tasks = tokio::task::JoinSet::new();
    // Three racers per database: the indexes are created once, all three succeed.
    for i in 0..90 {
        let accounts = accounts.clone();
        tasks.spawn(async move {
            let db = format!("idx_tenant_{:02}", i % 30);
            let h = accounts.acquire(&db).await?;
            h.insert_one(Account {
                email: format!("u{i}@x"),
                created_at: i,
            })
            .await?;
            Ok::<_, polymongo::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let check = raw(&server).await;
    for i in 0..30 {
        let db = format!("idx_tenant_{i:02}");
        assert_eq!(indexed_fields(&check, &db).await, expected(), "{db}");
    }
    // The unique index is in force.
    let dup = accounts
        .acquire("idx_tenant_00")
        .await
        .unwrap()
        .insert_one(Account {
            email: "u0@x".into(),
            created_at: 0,
        })
        .await;
    assert!(dup.is_err(), "duplicate email accepted");
    check.shutdown().await;
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn indexes_are_ensured_once_per_database_and_not_by_db() {
    let server = server().await;
    let poly = manager(&server, 2).await;
    let accounts = poly.model::<Account>();
    let check = raw(&server).await;

    // `db` makes no round trip for indexes.
    accounts
        .db("idx_plain")
        .unwrap()
        .insert_one(Account {
            email: "a@x".into(),
            created_at: 1,
        })
        .await
        .unwrap();
    assert_eq!(
        indexed_fields(&check, "idx_plain").await,
        vec![vec!["_id".to_owned()]]
    );

    // First acquire creates them; after they are dropped behind its back, later acquires do
    // not create them again: no round trip for indexes after the first.
    accounts
        .acquire("idx_once")
        .await
        .unwrap()
        .find_one(doc! {})
        .await
        .unwrap();
    assert_eq!(indexed_fields(&check, "idx_once").await, expected());
    check
        .database("idx_once")
        .collection::<Document>("accounts")
        .drop_indexes()
        .await
        .unwrap();
    accounts
        .acquire("idx_once")
        .await
        .unwrap()
        .find_one(doc! {})
        .await
        .unwrap();
    assert_eq!(
        indexed_fields(&check, "idx_once").await,
        vec![vec!["_id".to_owned()]]
    );
    check.shutdown().await;
    poly.close_all(Duration::from_secs(5)).await;
}
