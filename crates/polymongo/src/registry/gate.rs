//! The `max_concurrent_ops` guard of one database: a semaphore whose permits live in handles.
//! Owned by the database's registry entry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::floor::db_config::{DbConfig, DEFAULT_QUEUE_TIMEOUT};
use crate::floor::error::{Error, Result};

/// The `max_concurrent_ops` guard of a database, as [`Stats::db`](crate::Stats::db) shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct QueueStats {
    /// The database's `max_concurrent_ops`.
    pub max_concurrent_ops: u32,
    /// Slots held by handles now.
    pub in_use: u32,
    /// Slots taken since the guard was configured.
    pub entered: u64,
    /// `acquire` calls that found no free slot and waited.
    pub waited: u64,
    /// Time those calls waited in all, in microseconds.
    pub waited_total_us: u64,
    /// Calls refused with `Error::Saturated`.
    pub refused: u64,
}

/// The `max_concurrent_ops` guard of one database: a semaphore whose permits live in handles.
pub(crate) struct Gate {
    slots: Arc<Semaphore>,
    limit: u32,
    wait: Duration,
    /// Slots taken, by `db` and `acquire`.
    entered: AtomicU64,
    /// `acquire` calls that had to wait, and for how long in all (µs).
    waited: AtomicU64,
    waited_us: AtomicU64,
    /// Calls refused with `Saturated`.
    refused: AtomicU64,
}

impl Gate {
    /// A slot if one is free now.
    pub(crate) fn try_enter(&self, database: &str) -> Result<OwnedSemaphorePermit> {
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => {
                self.entered.fetch_add(1, Ordering::Relaxed);
                Ok(permit)
            }
            Err(_) => Err(self.saturated(database, Duration::ZERO)),
        }
    }

    /// A slot, waiting up to the database's `queue_timeout`.
    pub(crate) async fn enter(&self, database: &str) -> Result<OwnedSemaphorePermit> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            self.entered.fetch_add(1, Ordering::Relaxed);
            return Ok(permit);
        }
        let started = Instant::now();
        let outcome =
            tokio::time::timeout(self.wait, Arc::clone(&self.slots).acquire_owned()).await;
        let waited = started.elapsed();
        self.waited.fetch_add(1, Ordering::Relaxed);
        self.waited_us
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        match outcome {
            Ok(Ok(permit)) => {
                self.entered.fetch_add(1, Ordering::Relaxed);
                Ok(permit)
            }
            // The semaphore is never closed; a closed one would mean no slot ever again.
            Ok(Err(_)) | Err(_) => Err(self.saturated(database, waited)),
        }
    }

    /// The guard's figures now.
    pub(crate) fn stats(&self) -> QueueStats {
        QueueStats {
            max_concurrent_ops: self.limit,
            in_use: self
                .limit
                .saturating_sub(self.slots.available_permits() as u32),
            entered: self.entered.load(Ordering::Relaxed),
            waited: self.waited.load(Ordering::Relaxed),
            waited_total_us: self.waited_us.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }

    fn saturated(&self, database: &str, waited: Duration) -> Error {
        self.refused.fetch_add(1, Ordering::Relaxed);
        Error::Saturated {
            database: database.to_owned(),
            limit: self.limit,
            waited,
        }
    }
}

impl Gate {
    /// The guard `config` asks for, if any.
    pub(crate) fn from_config(config: &DbConfig) -> Option<Self> {
        config.max_concurrent_ops.map(|limit| Gate {
            slots: Arc::new(Semaphore::new(limit as usize)),
            limit,
            wait: config.queue_timeout.unwrap_or(DEFAULT_QUEUE_TIMEOUT),
            entered: AtomicU64::new(0),
            waited: AtomicU64::new(0),
            waited_us: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }
}
