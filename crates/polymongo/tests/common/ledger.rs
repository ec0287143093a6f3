//! Reading what migrations did, with a raw client.

use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::Database;
use polymongo::migrate::{Step, MIGRATIONS_COLLECTION};

/// Every document of `coll`.
pub async fn all(db: &Database, coll: &str) -> Vec<Document> {
    let cursor = db.collection::<Document>(coll).find(doc! {}).await.unwrap();
    cursor.try_collect().await.unwrap()
}

/// An integer field whatever width the server kept.
pub fn int(d: &Document, key: &str) -> Option<i64> {
    let b = d.get(key)?;
    b.as_i64().or(b.as_i32().map(i64::from))
}

/// Versions in a database's ledger, in order.
pub async fn ledger_versions(db: &Database) -> Vec<i64> {
    let mut v: Vec<i64> = all(db, MIGRATIONS_COLLECTION)
        .await
        .iter()
        .filter_map(|d| int(d, "_id"))
        .collect();
    v.sort_unstable();
    v
}

/// The document with string `_id` `id` of a ledger collection (`lock`, `failed`).
pub async fn ledger_doc(db: &Database, id: &str) -> Option<Document> {
    db.collection::<Document>(MIGRATIONS_COLLECTION)
        .find_one(doc! { "_id": id })
        .await
        .unwrap()
}

/// A code step adding 1 to counter `version` in `effects`: every run of it is counted.
pub fn count_step(version: u64) -> Step {
    Step::code(move |db| async move {
        db.collection::<Document>("effects")
            .update_one(
                doc! { "_id": version as i64 },
                doc! { "$inc": { "runs": 1 } },
            )
            .upsert(true)
            .await?;
        Ok(())
    })
}
