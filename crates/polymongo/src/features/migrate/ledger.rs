//! The ledger: one document per applied version in the tenant database's reserved
//! collection [`MIGRATIONS_COLLECTION`], written after the version's steps succeeded.

use std::time::Duration;

use crate::floor::error::is_duplicate_key;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::{Collection, Database};

use super::lock::{lock_info, LockInfo};
use crate::floor::error::Result;
use crate::floor::migration_error::MigrationError;

/// The reserved collection holding a tenant database's migration ledger and its lock
/// document (`_id: "lock"`). Collections whose names start with `__polymongo` belong to the
/// library.
pub const MIGRATIONS_COLLECTION: &str = "__polymongo_migrations";

/// The `_id` of the lock document; ledger documents have their version as `_id`.
pub(crate) const LOCK_ID: &str = "lock";

/// The `_id` of the last failure's document, kept until a run completes.
pub(crate) const FAILED_ID: &str = "failed";

/// One applied version, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The version.
    pub version: u64,
    /// The migration's name when it was applied.
    pub name: String,
    /// The checksum of its definition when it was applied.
    pub checksum: String,
    /// When its steps finished.
    pub applied_at: DateTime,
    /// How long its steps took.
    pub duration: Duration,
    /// The runner that applied it (host, process id, run).
    pub by: String,
}

pub(crate) fn collection(db: &Database) -> Collection<Document> {
    db.collection(MIGRATIONS_COLLECTION)
}

/// The last version that failed on a database, kept in its ledger until a run completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRecord {
    /// The version.
    pub version: u64,
    /// Whether it failed while being rolled back (its down steps).
    pub rolling_back: bool,
    /// The failing step's index (from 0).
    pub step: u64,
    /// What the step returned.
    pub error: String,
    /// When.
    pub at: DateTime,
    /// The runner.
    pub by: String,
}

/// A database's whole ledger collection, read in one round trip.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Applied versions, in order.
    pub(crate) entries: Vec<LedgerEntry>,
    pub(crate) failure: Option<FailureRecord>,
    pub(crate) lock: Option<LockInfo>,
}

/// The ledger of `db`: applied versions in order, the last failure, the lock.
pub(crate) async fn read(db: &Database) -> Result<Ledger> {
    let docs: Vec<Document> = collection(db).find(doc! {}).await?.try_collect().await?;
    let mut ledger = Ledger {
        entries: Vec::with_capacity(docs.len()),
        ..Ledger::default()
    };
    let unexpected = |d: &Document| MigrationError::Ledger {
        database: db.name().to_owned(),
        problem: format!("unexpected document {d}"),
    };
    for d in docs {
        match d.get_str("_id") {
            Ok(LOCK_ID) => ledger.lock = Some(lock_info(&d)),
            Ok(FAILED_ID) => {
                ledger.failure = Some(decode_failure(&d).ok_or_else(|| unexpected(&d))?)
            }
            Ok(_) => return Err(unexpected(&d).into()),
            Err(_) => ledger
                .entries
                .push(decode(&d).ok_or_else(|| unexpected(&d))?),
        }
    }
    ledger.entries.sort_by_key(|e| e.version);
    Ok(ledger)
}

/// Keeps a failure for status readers until a run completes.
pub(crate) async fn record_failure(db: &Database, f: &FailureRecord) -> Result<()> {
    let document = doc! {
        "_id": FAILED_ID,
        "version": i64::try_from(f.version).unwrap_or(i64::MAX),
        "rolling_back": f.rolling_back,
        "step": i64::try_from(f.step).unwrap_or(i64::MAX),
        "error": &f.error,
        "at": f.at,
        "by": &f.by,
    };
    collection(db)
        .replace_one(doc! { "_id": FAILED_ID }, document)
        .upsert(true)
        .await?;
    Ok(())
}

/// Forgets the last failure (a run completed).
pub(crate) async fn clear_failure(db: &Database) -> Result<()> {
    collection(db).delete_one(doc! { "_id": FAILED_ID }).await?;
    Ok(())
}

/// Removes version `version` from the ledger (its down steps ran).
pub(crate) async fn remove(db: &Database, version: u64) -> Result<()> {
    let id = i64::try_from(version).unwrap_or(i64::MAX);
    collection(db).delete_one(doc! { "_id": id }).await?;
    Ok(())
}

fn decode_failure(d: &Document) -> Option<FailureRecord> {
    Some(FailureRecord {
        version: as_u64(d.get("version")?)?,
        rolling_back: d.get_bool("rolling_back").unwrap_or(false),
        step: d.get("step").and_then(as_u64).unwrap_or(0),
        error: d.get_str("error").unwrap_or_default().to_owned(),
        at: d
            .get_datetime("at")
            .copied()
            .unwrap_or(DateTime::from_millis(0)),
        by: d.get_str("by").unwrap_or_default().to_owned(),
    })
}

/// Records an applied version. The version is the document's `_id`, so a version is never
/// recorded twice: a second record fails with a duplicate key, reported as a lost lock.
pub(crate) async fn record(db: &Database, entry: &LedgerEntry) -> Result<()> {
    let lost = || MigrationError::LockLost {
        database: db.name().to_owned(),
        version: entry.version,
    };
    let id = i64::try_from(entry.version).map_err(|_| MigrationError::Ledger {
        database: db.name().to_owned(),
        problem: format!("version {} does not fit a BSON Int64", entry.version),
    })?;
    let duration_ms = i64::try_from(entry.duration.as_millis()).unwrap_or(i64::MAX);
    let document = doc! {
        "_id": id,
        "name": &entry.name,
        "checksum": &entry.checksum,
        "applied_at": entry.applied_at,
        "duration_ms": duration_ms,
        "by": &entry.by,
    };
    match collection(db).insert_one(document).await {
        Ok(_) => Ok(()),
        Err(e) if is_duplicate_key(&e) => Err(lost().into()),
        Err(e) => Err(e.into()),
    }
}

fn decode(d: &Document) -> Option<LedgerEntry> {
    let version = as_u64(d.get("_id")?)?;
    Some(LedgerEntry {
        version,
        name: d.get_str("name").ok()?.to_owned(),
        checksum: d.get_str("checksum").ok()?.to_owned(),
        applied_at: *d.get_datetime("applied_at").ok()?,
        duration: Duration::from_millis(d.get("duration_ms").and_then(as_u64).unwrap_or(0)),
        by: d.get_str("by").unwrap_or_default().to_owned(),
    })
}

/// An integer whatever width the server kept (some emulators store a small Int64 as Int32).
pub(crate) fn as_u64(b: &Bson) -> Option<u64> {
    match b {
        Bson::Int32(i) => u64::try_from(*i).ok(),
        Bson::Int64(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}
