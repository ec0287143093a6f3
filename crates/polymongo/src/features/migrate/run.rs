//! Applying migrations to one database, and reading its state: the [`Migrator`].

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use mongodb::bson::{DateTime, Document};
use mongodb::Database;

use super::command::for_database;
use super::ledger::{self, LedgerEntry};
use super::lock::{self, Lock, LockInfo};
use super::set::{Checked, Migrations};
use super::step::{Step, StepError};
use crate::floor::error::{Error, Result};
use crate::floor::migration_error::MigrationError;
use crate::registry::{DbLease, Registry};

/// How long a runner's lock lasts without renewal (60 s). A running step renews it every
/// third of that, so only a runner that died (or whose future was dropped mid-step) leaves
/// a lock behind, for at most this long.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(60);

/// How long [`Migrator::apply`] waits for another runner's lock (60 s): one time to live, so
/// a dead runner's lock expires within the wait.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(60);

/// Between two attempts at a held lock.
const LOCK_POLL: Duration = Duration::from_millis(25);

/// Applies migrations to one database at a time, and reads a database's migration state.
/// Made by [`PolyMongo::migrator`](crate::PolyMongo::migrator).
#[derive(Debug, Clone, Copy)]
pub struct Migrator<'r> {
    registry: &'r Registry,
    lock_ttl: Duration,
    lock_wait: Duration,
}

/// One version applied by a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedVersion {
    /// The version.
    pub version: u64,
    /// Its name.
    pub name: String,
    /// How long its steps took.
    pub duration: Duration,
}

/// The version a run stopped at: its steps failed, nothing of it was recorded.
#[derive(Debug)]
pub struct MigrationFailure {
    /// The version.
    pub version: u64,
    /// Its name.
    pub name: String,
    /// The failing step's index (from 0).
    pub step: usize,
    /// What the step returned (a panic is reported as an error).
    pub error: StepError,
}

/// What [`Migrator::apply`] did to one database.
#[derive(Debug)]
pub struct DbMigrationReport {
    /// The database.
    pub database: String,
    /// This run's runner id (host, process, run), as written to the ledger.
    pub runner: String,
    /// Versions applied by this run, in order.
    pub applied: Vec<AppliedVersion>,
    /// Versions that were already applied.
    pub skipped: Vec<u64>,
    /// The version that failed, if one did; later versions were not attempted, earlier ones
    /// stay applied.
    pub failed: Option<MigrationFailure>,
    /// The highest applied version after the run (0: none).
    pub current_version: u64,
    /// The whole run, lock wait included.
    pub duration: Duration,
}

impl DbMigrationReport {
    /// Whether every version is applied (no version failed).
    pub fn is_complete(&self) -> bool {
        self.failed.is_none()
    }
}

/// A database's migration state, read without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// The database.
    pub database: String,
    /// The highest applied version (0: none).
    pub current_version: u64,
    /// The ledger, in order.
    pub applied: Vec<LedgerEntry>,
    /// Defined versions not applied yet, in order.
    pub pending: Vec<u64>,
    /// Applied versions whose definition changed since (a run would be refused).
    pub changed: Vec<u64>,
    /// Applied versions not defined here (a run would be refused).
    pub unknown: Vec<u64>,
    /// The lock document, if there is one (it may have expired: [`LockInfo::is_expired`]).
    pub lock: Option<LockInfo>,
}

impl<'r> Migrator<'r> {
    pub(crate) fn new(registry: &'r Registry) -> Self {
        Self {
            registry,
            lock_ttl: DEFAULT_LOCK_TTL,
            lock_wait: DEFAULT_LOCK_WAIT,
        }
    }

    /// How long this runner's lock lasts without renewal; default [`DEFAULT_LOCK_TTL`].
    /// Zero is raised to one millisecond.
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// How long to wait for another runner's lock before
    /// [`MigrationError::LockHeld`]; default [`DEFAULT_LOCK_WAIT`]. Zero: one attempt.
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// Applies every version of `migrations` missing from database `db`, in order, under
    /// the database's lock, and records each in the ledger once its steps succeeded. Stops
    /// at the first failing version ([`DbMigrationReport::failed`]); the versions before it
    /// stay applied and the next run continues from there.
    ///
    /// The run is a task of its own: dropping this future (a `timeout` around it) lets the
    /// version in progress finish and be recorded, starts no further version and releases
    /// the lock. Only a process that dies mid-version leaves its lock to expire, and its
    /// version's steps run again on the next run (they were not recorded).
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::Closed`]; [`Error::Migration`] when the ledger holds a
    /// version defined differently ([`MigrationError::ChecksumMismatch`]) or not defined
    /// ([`MigrationError::UnknownVersion`]) — nothing is applied —, when another runner holds
    /// the lock past the wait ([`MigrationError::LockHeld`]), or when the lock was lost
    /// mid-run ([`MigrationError::LockLost`]); driver errors of the ledger and the lock.
    pub async fn apply(&self, db: &str, migrations: &Migrations) -> Result<DbMigrationReport> {
        let lease = self.registry.lease(db)?;
        let runner = Runner {
            lock: Lock::new(&lease.entry.database, runner_id(), self.lock_ttl),
            ttl: self.lock_ttl,
            wait: self.lock_wait,
            migrations: migrations.clone(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let stop = StopOnDrop(Arc::clone(&runner.stop));
        let outcome = tokio::spawn(runner.run(lease)).await;
        drop(stop);
        match outcome {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::Closed),
        }
    }

    /// Database `db`'s migration state against `migrations`: applied, pending, changed and
    /// unknown versions and the lock holder. Reads only.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::Closed`], driver errors, [`MigrationError::Ledger`].
    pub async fn status(&self, db: &str, migrations: &Migrations) -> Result<MigrationStatus> {
        let database = self.registry.lease(db)?.entry.database.clone();
        let applied = ledger::read(&database).await?;
        let lock = lock::read(&ledger::collection(&database)).await?;
        let mut status = MigrationStatus {
            database: db.to_owned(),
            current_version: applied.last().map_or(0, |e| e.version),
            pending: migrations
                .versions()
                .filter(|v| !applied.iter().any(|e| e.version == *v))
                .collect(),
            changed: Vec::new(),
            unknown: Vec::new(),
            applied: Vec::new(),
            lock,
        };
        for e in &applied {
            match migrations.find(e.version) {
                None => status.unknown.push(e.version),
                Some(c) if c.checksum != e.checksum => status.changed.push(e.version),
                Some(_) => {}
            }
        }
        status.applied = applied;
        Ok(status)
    }
}

/// Tells the run task to start no further version when the caller's future is dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct Runner {
    lock: Lock,
    ttl: Duration,
    wait: Duration,
    migrations: Migrations,
    stop: Arc<AtomicBool>,
}

impl Runner {
    async fn run(self, lease: DbLease) -> Result<DbMigrationReport> {
        let started = Instant::now();
        let db = lease.entry.database.clone();
        self.acquire(db.name()).await?;
        let result = self.apply_missing(&db, started).await;
        if let Err(e) = self.lock.release().await {
            tracing::warn!(database = db.name(), error = %e, "migration lock not released; it expires");
        }
        drop(lease);
        result
    }

    async fn acquire(&self, database: &str) -> Result<()> {
        let deadline = Instant::now() + self.wait;
        loop {
            let holder = match self.lock.try_acquire().await? {
                Ok(()) => return Ok(()),
                Err(holder) => holder,
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(MigrationError::LockHeld {
                    database: database.to_owned(),
                    owner: holder.owner,
                    expires_at: holder
                        .expires_at
                        .try_to_rfc3339_string()
                        .unwrap_or_default(),
                }
                .into());
            }
            tokio::time::sleep(LOCK_POLL.min(deadline - now)).await;
        }
    }

    async fn apply_missing(&self, db: &Database, started: Instant) -> Result<DbMigrationReport> {
        let database = db.name().to_owned();
        let applied = ledger::read(db).await?;
        for e in &applied {
            match self.migrations.find(e.version) {
                None => {
                    return Err(MigrationError::UnknownVersion {
                        database,
                        version: e.version,
                    }
                    .into())
                }
                Some(c) if c.checksum != e.checksum => {
                    return Err(MigrationError::ChecksumMismatch {
                        database,
                        version: e.version,
                        applied: e.checksum.clone(),
                        defined: c.checksum.clone(),
                    }
                    .into())
                }
                Some(_) => {}
            }
        }
        let mut report = DbMigrationReport {
            database,
            runner: self.lock_owner().to_owned(),
            applied: Vec::new(),
            skipped: applied.iter().map(|e| e.version).collect(),
            failed: None,
            current_version: applied.last().map_or(0, |e| e.version),
            duration: Duration::ZERO,
        };
        for checked in self.migrations.list.iter() {
            let version = checked.migration.version;
            if report.skipped.contains(&version) {
                continue;
            }
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            if let Some(done) = self.apply_one(db, checked, &mut report).await? {
                report.applied.push(done);
                report.current_version = report.current_version.max(version);
            } else {
                break;
            }
        }
        report.duration = started.elapsed();
        Ok(report)
    }

    /// One version: its steps (renewing the lock), then its ledger entry. `None` when a
    /// step failed (recorded in the report).
    async fn apply_one(
        &self,
        db: &Database,
        checked: &Checked,
        report: &mut DbMigrationReport,
    ) -> Result<Option<AppliedVersion>> {
        let m = &checked.migration;
        let start = Instant::now();
        for (index, step) in m.steps.iter().enumerate() {
            let (outcome, still_ours) = self.renewing(run_step(db, step)).await;
            if !still_ours {
                return Err(MigrationError::LockLost {
                    database: db.name().to_owned(),
                    version: m.version,
                }
                .into());
            }
            if let Err(error) = outcome {
                report.failed = Some(MigrationFailure {
                    version: m.version,
                    name: m.name.clone(),
                    step: index,
                    error,
                });
                return Ok(None);
            }
        }
        let duration = start.elapsed();
        ledger::record(
            db,
            &LedgerEntry {
                version: m.version,
                name: m.name.clone(),
                checksum: checked.checksum.clone(),
                applied_at: DateTime::now(),
                duration,
                by: self.lock_owner().to_owned(),
            },
        )
        .await?;
        Ok(Some(AppliedVersion {
            version: m.version,
            name: m.name.clone(),
            duration,
        }))
    }

    fn lock_owner(&self) -> &str {
        self.lock.owner()
    }

    /// Runs `work`, renewing the lock every third of its time to live; also says whether
    /// every renewal found the lock still ours.
    async fn renewing<T>(&self, work: impl std::future::Future<Output = T>) -> (T, bool) {
        let mut work = std::pin::pin!(work);
        let mut ours = true;
        loop {
            tokio::select! {
                out = &mut work => return (out, ours),
                () = tokio::time::sleep(self.ttl / 3) => {
                    // A failed renewal (network) is not a loss; the next one may get through.
                    if let Ok(false) = self.lock.renew().await {
                        ours = false;
                    }
                }
            }
        }
    }
}

async fn run_step(db: &Database, step: &Step) -> Result<(), StepError> {
    match step {
        Step::Code(f) => match AssertUnwindSafe(f(db.clone())).catch_unwind().await {
            Ok(result) => result,
            Err(_) => Err("the code step panicked".into()),
        },
        Step::Command(command) => {
            let reply = run_command(db, command).await?;
            refused_writes(&reply).map_or(Ok(()), |e| Err(e.into()))
        }
    }
}

/// Runs a declarative command on the tenant's database. `renameCollection` gets full
/// namespaces and is sent to the tenant's database first: MongoDB refuses it there (it
/// must run on `admin`), before doing anything, and it is then sent to `admin`; nx-27017
/// answers `ok` on `admin` without renaming (the test kit's QUIRKS.md).
async fn run_command(db: &Database, command: &Document) -> mongodb::error::Result<Document> {
    let (is_rename, command) = for_database(command, db.name());
    match db.run_command(command.clone()).await {
        Err(e) if is_rename && e.to_string().contains("admin") => {
            db.client().database("admin").run_command(command).await
        }
        other => other,
    }
}

/// A write command answers `ok: 1` even when its writes failed; they are in `writeErrors`
/// and `writeConcernError`.
fn refused_writes(reply: &Document) -> Option<String> {
    ["writeErrors", "writeConcernError"]
        .into_iter()
        .find_map(|k| reply.get(k).map(|v| format!("{k}: {v}")))
}

/// `host/pid N/run M`: unique per run, so two runs of one process do not share a lock.
fn runner_id() -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    static RUN: AtomicU64 = AtomicU64::new(1);
    let host = HOST.get_or_init(|| {
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown-host".to_owned())
    });
    format!(
        "{host}/pid {}/run {}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    )
}
