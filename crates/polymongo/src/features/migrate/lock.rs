//! The per-database migration lock: one document (`_id: "lock"`) in the ledger's collection
//! with an owner and an expiry.
//!
//! Taking it is one `findAndModify` with `upsert`: it matches the lock document only when it
//! has expired (or is already ours) and sets the owner; when another runner holds it, the
//! filter matches nothing, the upsert tries to insert a second document with `_id: "lock"`
//! and the server refuses it with a duplicate key. So two runners never both hold it, and an
//! expired lock (a crashed or cancelled runner) is taken over by the next one. Expiries are
//! the runners' wall clocks: runners whose clocks disagree by more than the time to live
//! could both think they hold it. Times are stored as integers (`expires_at_ms`,
//! milliseconds since the Unix epoch): nx-27017 stores a date set by `$set` as a string,
//! which no longer compares as a date (the test kit's QUIRKS.md).

use std::time::Duration;

use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};

use super::ledger::{as_u64, collection, LOCK_ID};
use crate::floor::error::is_duplicate_key;
use crate::floor::error::Result;

/// Who holds a database's migration lock, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// The holder (host, process id, run).
    pub owner: String,
    /// When it expires unless renewed.
    pub expires_at: DateTime,
}

impl LockInfo {
    /// Whether it has expired (by this process's clock).
    pub fn is_expired(&self) -> bool {
        self.expires_at <= DateTime::now()
    }
}

/// Work a runner recorded in the lock document before doing it: the version it was applying
/// (or rolling back) and how many of its steps were done. A runner that takes over an
/// expired lock finds it there and finishes that work first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Marker {
    pub(crate) version: u64,
    pub(crate) down: bool,
    pub(crate) steps_done: u64,
    pub(crate) checksum: String,
}

impl Marker {
    fn to_document(&self) -> Document {
        doc! {
            "version": i64::try_from(self.version).unwrap_or(i64::MAX),
            "down": self.down,
            "steps_done": i64::try_from(self.steps_done).unwrap_or(i64::MAX),
            "checksum": &self.checksum,
        }
    }

    fn from_lock(d: &Document) -> Option<Self> {
        let m = d.get_document("applying").ok()?;
        Some(Self {
            version: as_u64(m.get("version")?)?,
            down: m.get_bool("down").unwrap_or(false),
            steps_done: m.get("steps_done").and_then(as_u64).unwrap_or(0),
            checksum: m.get_str("checksum").unwrap_or_default().to_owned(),
        })
    }
}

/// What taking the lock found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Acquired {
    /// The lock was taken over from a holder whose lock expired (it died, or was cut): its
    /// last work may be unfinished.
    pub(crate) takeover: bool,
    /// The work the earlier holder recorded, if any.
    pub(crate) marker: Option<Marker>,
}

/// One runner's view of a database's lock.
#[derive(Debug, Clone)]
pub(crate) struct Lock {
    coll: Collection<Document>,
    owner: String,
    ttl: Duration,
}

impl Lock {
    pub(crate) fn new(db: &Database, owner: String, ttl: Duration) -> Self {
        Self {
            coll: collection(db),
            owner,
            ttl,
        }
    }

    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }

    fn expiry(&self) -> i64 {
        let ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        DateTime::now().timestamp_millis().saturating_add(ms)
    }

    /// Takes the lock, or says who holds it. Taken, it also says whether an earlier holder's
    /// expired lock was taken over, and the work it recorded. A released lock is deleted, so
    /// `holders` counts the holders since the last release: more than one is a takeover.
    pub(crate) async fn try_acquire(&self) -> Result<Result<Acquired, LockInfo>> {
        let now = DateTime::now().timestamp_millis();
        let filter = doc! {
            "_id": LOCK_ID,
            "$or": [{ "expires_at_ms": { "$lte": now } }, { "owner": &self.owner }],
        };
        let update = doc! {
            "$set": { "owner": &self.owner, "expires_at_ms": self.expiry(), "acquired_at_ms": now },
            "$inc": { "holders": 1 },
        };
        let taken = self
            .coll
            .find_one_and_update(filter, update)
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await;
        match taken {
            Ok(Some(d)) if d.get_str("owner").ok() == Some(self.owner.as_str()) => {
                Ok(Ok(Acquired {
                    takeover: d.get("holders").and_then(as_u64).unwrap_or(1) > 1,
                    marker: Marker::from_lock(&d),
                }))
            }
            Ok(_) => Ok(Err(self.holder().await?.unwrap_or_else(|| self.unknown()))),
            Err(e) if is_duplicate_key(&e) => {
                Ok(Err(self.holder().await?.unwrap_or_else(|| self.unknown())))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A holder that released the lock between our attempt and our look: free now.
    fn unknown(&self) -> LockInfo {
        LockInfo {
            owner: String::new(),
            expires_at: DateTime::from_millis(0),
        }
    }

    /// Moves our expiry forward; `false` when the lock is no longer ours.
    pub(crate) async fn renew(&self) -> Result<bool> {
        let r = self
            .coll
            .update_one(
                doc! { "_id": LOCK_ID, "owner": &self.owner },
                doc! { "$set": { "expires_at_ms": self.expiry() } },
            )
            .await?;
        Ok(r.matched_count == 1)
    }

    /// Records the work about to be done (and renews); `false` when the lock is no longer ours.
    pub(crate) async fn mark(&self, marker: &Marker) -> Result<bool> {
        let r = self
            .coll
            .update_one(
                doc! { "_id": LOCK_ID, "owner": &self.owner },
                doc! { "$set": { "expires_at_ms": self.expiry(), "applying": marker.to_document() } },
            )
            .await?;
        Ok(r.matched_count == 1)
    }

    /// Releases the lock if it is still ours.
    pub(crate) async fn release(&self) -> Result<()> {
        self.coll
            .delete_one(doc! { "_id": LOCK_ID, "owner": &self.owner })
            .await?;
        Ok(())
    }

    /// The current holder, if any.
    pub(crate) async fn holder(&self) -> Result<Option<LockInfo>> {
        read(&self.coll).await
    }
}

/// The lock document of a database, if there is one.
pub(crate) async fn read(coll: &Collection<Document>) -> Result<Option<LockInfo>> {
    Ok(coll
        .find_one(doc! { "_id": LOCK_ID })
        .await?
        .map(|d| lock_info(&d)))
}

/// The holder and expiry in a lock document.
pub(crate) fn lock_info(d: &Document) -> LockInfo {
    LockInfo {
        owner: d.get_str("owner").unwrap_or_default().to_owned(),
        expires_at: DateTime::from_millis(match d.get("expires_at_ms") {
            Some(Bson::Int64(ms)) => *ms,
            Some(Bson::Int32(ms)) => i64::from(*ms),
            _ => 0,
        }),
    }
}
