//! Applying migrations to one database, and reading its state: the [`Migrator`].

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, TryStreamExt};
use mongodb::bson::{Bson, DateTime, Document};
use mongodb::{Database, IndexModel};

use super::command::for_database;
use super::counters::{Counters, VersionEvent};
use super::ledger::{self, FailureRecord, LedgerEntry};
use super::lock::{Acquired, Lock, LockInfo, Marker};
use super::set::{Checked, Migrations};
use super::step::{IndexSync, Step, StepError};
use crate::floor::error::{Error, Result};
use crate::floor::migration_error::MigrationError;
use crate::pool::cluster::ClusterPool;
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
    counters: &'r Arc<Counters>,
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
    /// Whether it failed while being rolled back (a down step).
    pub rolling_back: bool,
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
    /// Versions rolled back by this run, newest first.
    pub rolled_back: Vec<AppliedVersion>,
    /// Versions that were already applied when the run started.
    pub skipped: Vec<u64>,
    /// The version this run finished first because a runner that died (or was cut) may
    /// have left it half done: the lock was taken over from it.
    pub resumed: Option<u64>,
    /// The run started no further version because the manager began closing
    /// ([`close_all`](crate::PolyMongo::close_all) waits for the version in progress).
    pub stopped: bool,
    /// The version that failed, if one did; later versions were not attempted, earlier ones
    /// stay applied.
    pub failed: Option<MigrationFailure>,
    /// The highest applied version after the run (0: none).
    pub current_version: u64,
    /// The whole run, lock wait included.
    pub duration: Duration,
}

impl DbMigrationReport {
    /// Whether the run reached its goal: no version failed and the run was not stopped.
    pub fn is_complete(&self) -> bool {
        self.failed.is_none() && !self.stopped
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
    /// The last failure, kept until a run completes.
    pub failure: Option<FailureRecord>,
    /// The lock document, if there is one (it may have expired: [`LockInfo::is_expired`]).
    pub lock: Option<LockInfo>,
}

impl<'r> Migrator<'r> {
    pub(crate) fn new(registry: &'r Registry, counters: &'r Arc<Counters>) -> Self {
        Self {
            registry,
            counters,
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
    /// [`MigrationError::LockHeld`]; default [`DEFAULT_LOCK_WAIT`]. Zero: one attempt;
    /// `Duration::MAX`: until the lock is free.
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    pub(crate) fn settings(&self) -> Settings {
        Settings {
            ttl: self.lock_ttl,
            wait: self.lock_wait,
        }
    }

    pub(crate) fn registry(&self) -> &'r Registry {
        self.registry
    }

    pub(crate) fn counters(&self) -> &'r Arc<Counters> {
        self.counters
    }

    /// Applies every version of `migrations` missing from database `db`, in order, under
    /// the database's lock, and records each in the ledger once its steps succeeded. Stops
    /// at the first failing version ([`DbMigrationReport::failed`]); the versions before it
    /// stay applied and the next run continues from there.
    ///
    /// Before each step but a version's first, the runner writes the version and step to
    /// the lock document. A runner that takes over the lock of one that died finds that
    /// record (or, without one, starts at the first pending version's first step) and
    /// finishes the interrupted version first, from the step that was cut
    /// ([`DbMigrationReport::resumed`]): steps that completed are not run again. The cut step itself runs again; for a
    /// declarative step the errors that mean "already done" are then accepted (an index or
    /// a collection already dropped, a collection already created or renamed, duplicate
    /// keys of an insert); a code step must be written so that a second run does no harm.
    ///
    /// The run is a task of its own: dropping this future (a `timeout` around it) lets the
    /// version in progress finish and be recorded, starts no further version and releases
    /// the lock. [`close_all`](crate::PolyMongo::close_all) waits for the version in progress
    /// (up to its deadline) and the run starts no other ([`DbMigrationReport::stopped`]); a
    /// close that stops waiting ends the run with [`Error::Closed`], leaving the version as a
    /// dead runner would (the next run finishes it).
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::Closed`]; [`Error::Migration`] when the ledger holds a
    /// version defined differently ([`MigrationError::ChecksumMismatch`]) or not defined
    /// ([`MigrationError::UnknownVersion`]) — nothing is applied —, when another runner holds
    /// the lock past the wait ([`MigrationError::LockHeld`]), or when the lock was lost
    /// mid-run ([`MigrationError::LockLost`]); driver errors of the ledger and the lock.
    pub async fn apply(self, db: &str, migrations: &Migrations) -> Result<DbMigrationReport> {
        let lease = self.registry.lease(db)?;
        run_on(
            lease,
            migrations,
            Goal::Latest,
            self.settings(),
            self.counters,
        )
        .await
    }

    /// [`apply`](Self::apply) on a database already leased (placed by the directory).
    pub(crate) async fn apply_on(
        self,
        lease: DbLease,
        migrations: &Migrations,
    ) -> Result<DbMigrationReport> {
        run_on(
            lease,
            migrations,
            Goal::Latest,
            self.settings(),
            self.counters,
        )
        .await
    }

    /// Rolls database `db` back to version `version`: the down steps of every applied
    /// version above it, newest first, each removed from the ledger once its down steps
    /// succeeded. Same lock, checks, resumption and cancellation as [`apply`](Self::apply);
    /// [`DbMigrationReport::rolled_back`] lists what was undone. `version` 0 undoes them all.
    ///
    /// # Errors
    /// As [`apply`](Self::apply), and [`MigrationError::NoDownSteps`] — before anything is
    /// undone — when a version to roll back has no down steps.
    pub async fn rollback_to(
        self,
        db: &str,
        migrations: &Migrations,
        version: u64,
    ) -> Result<DbMigrationReport> {
        let lease = self.registry.lease(db)?;
        run_on(
            lease,
            migrations,
            Goal::Down(version),
            self.settings(),
            self.counters,
        )
        .await
    }

    /// Database `db`'s migration state against `migrations`: applied, pending, changed and
    /// unknown versions, the last failure and the lock holder. Reads only, one round trip.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::Closed`], driver errors, [`MigrationError::Ledger`].
    pub async fn status(self, db: &str, migrations: &Migrations) -> Result<MigrationStatus> {
        let database = self.registry.lease(db)?.entry.database.clone();
        status_of(&database, migrations).await
    }
}

/// A database's migration state, from one read of its ledger.
pub(crate) async fn status_of(
    database: &Database,
    migrations: &Migrations,
) -> Result<MigrationStatus> {
    let ledger = ledger::read(database).await?;
    let applied = ledger.entries;
    let mut status = MigrationStatus {
        database: database.name().to_owned(),
        current_version: applied.last().map_or(0, |e| e.version),
        pending: migrations
            .versions()
            .filter(|v| !applied.iter().any(|e| e.version == *v))
            .collect(),
        changed: Vec::new(),
        unknown: Vec::new(),
        applied: Vec::new(),
        failure: ledger.failure,
        lock: ledger.lock,
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

/// Lock settings of a run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) ttl: Duration,
    pub(crate) wait: Duration,
}

/// Where a run takes a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Goal {
    /// Every defined version applied.
    Latest,
    /// Every applied version above this one rolled back.
    Down(u64),
}

/// Runs `goal` on the leased database as a task of its own (see [`Migrator::apply`]).
pub(crate) async fn run_on(
    lease: DbLease,
    migrations: &Migrations,
    goal: Goal,
    settings: Settings,
    counters: &Arc<Counters>,
) -> Result<DbMigrationReport> {
    let runner = Runner {
        counters: Arc::clone(counters),
        pool: Arc::clone(&lease.entry.pool),
        lock: Lock::new(&lease.entry.database, runner_id(), settings.ttl),
        ttl: settings.ttl,
        wait: settings.wait,
        migrations: migrations.clone(),
        stop: Arc::new(AtomicBool::new(false)),
        goal,
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

/// Whether the leased database has every version of `migrations` with its definition: one
/// read of the ledger. Versions above the latest defined (applied by a newer release during
/// a rolling deploy) do not count against it.
pub(crate) async fn is_up_to_date(database: &Database, migrations: &Migrations) -> Result<bool> {
    let ledger = ledger::read(database).await?;
    if ledger.lock.is_some() {
        return Ok(false);
    }
    Ok(migrations.list.iter().all(|c| {
        ledger
            .entries
            .binary_search_by_key(&c.migration.version, |e| e.version)
            .ok()
            .and_then(|i| ledger.entries.get(i))
            .is_some_and(|e| e.checksum == c.checksum)
    }))
}

/// Tells the run task to start no further version when the caller's future is dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct Runner {
    counters: Arc<Counters>,
    pool: Arc<ClusterPool>,
    lock: Lock,
    ttl: Duration,
    wait: Duration,
    migrations: Migrations,
    stop: Arc<AtomicBool>,
    goal: Goal,
}

/// How one version is run: which steps, from where, in which direction.
struct Pass<'a> {
    checked: &'a Checked,
    down: bool,
    /// Steps already done by an earlier runner.
    from: usize,
    /// Where an earlier runner may have been cut: "already done" errors are accepted there.
    cut: Cut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    None,
    One(usize),
    All,
}

impl Runner {
    async fn run(self, lease: DbLease) -> Result<DbMigrationReport> {
        let started = Instant::now();
        let db = lease.entry.database.clone();
        // A graceful close waits for the run; once it began, no further version starts.
        let pool = Arc::clone(&lease.entry.pool);
        let _in_flight = pool.begin_operation()?;
        let interrupted = tokio::select! {
            () = pool.cut() => return Err(Error::Closed),
            acquired = self.acquire(db.name()) => acquired?,
        };
        let result = tokio::select! {
            // The close stopped waiting: the version in progress is left as a dead runner
            // leaves it (its lock expires; the next run finishes it).
            () = pool.cut() => return Err(Error::Closed),
            result = self.work(&db, interrupted, started) => result,
        };
        if let Ok(report) = &result {
            if let Some(f) = &report.failed {
                lease.entry.pool.report_error(
                    Some(db.name()),
                    format!(
                        "migration {} ({}) failed at step {}: {}",
                        f.version, f.name, f.step, f.error
                    ),
                );
            }
        }
        if let Err(e) = self.lock.release().await {
            tracing::warn!(database = db.name(), error = %e.redacted(), "migration lock not released; it expires");
        }
        drop(lease);
        result
    }

    async fn acquire(&self, database: &str) -> Result<Acquired> {
        // `None`: a wait too long to name an instant (`Duration::MAX`), which waits for good.
        let deadline = Instant::now().checked_add(self.wait);
        loop {
            let holder = match self.lock.try_acquire().await? {
                Ok(acquired) => return Ok(acquired),
                Err(holder) => holder,
            };
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
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
            tokio::time::sleep(deadline.map_or(LOCK_POLL, |d| LOCK_POLL.min(d - now))).await;
        }
    }

    /// Whether to start no further version: the caller went away or the manager is closing.
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.pool.is_closing()
    }

    /// Checks the ledger against the definitions; `Err` names the first disagreement.
    fn check_ledger(&self, database: &str, applied: &[LedgerEntry]) -> Result<()> {
        for e in applied {
            match self.migrations.find(e.version) {
                None => {
                    return Err(MigrationError::UnknownVersion {
                        database: database.to_owned(),
                        version: e.version,
                    }
                    .into())
                }
                Some(c) if c.checksum != e.checksum => {
                    return Err(MigrationError::ChecksumMismatch {
                        database: database.to_owned(),
                        version: e.version,
                        applied: e.checksum.clone(),
                        defined: c.checksum.clone(),
                    }
                    .into())
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    async fn work(
        &self,
        db: &Database,
        interrupted: Acquired,
        started: Instant,
    ) -> Result<DbMigrationReport> {
        let database = db.name().to_owned();
        let ledger = ledger::read(db).await?;
        let mut applied: Vec<u64> = ledger.entries.iter().map(|e| e.version).collect();
        self.check_ledger(&database, &ledger.entries)?;
        if let Goal::Down(target) = self.goal {
            for &v in applied.iter().filter(|v| **v > target) {
                if self
                    .migrations
                    .find(v)
                    .is_some_and(|c| c.migration.down.is_empty())
                {
                    return Err(MigrationError::NoDownSteps {
                        database,
                        version: v,
                    }
                    .into());
                }
            }
        }
        let mut report = DbMigrationReport {
            database,
            runner: self.lock.owner().to_owned(),
            applied: Vec::new(),
            rolled_back: Vec::new(),
            skipped: applied.clone(),
            resumed: None,
            stopped: false,
            failed: None,
            current_version: applied.last().copied().unwrap_or(0),
            duration: Duration::ZERO,
        };
        // First what a dead runner left half done.
        if let Some(pass) = self.interrupted_pass(&interrupted, &applied) {
            report.resumed = Some(pass.checked.migration.version);
            if !self.run_pass(db, &pass, &mut report, &mut applied).await? {
                return self
                    .finish(db, ledger.failure.is_some(), report, started)
                    .await;
            }
        }
        match self.goal {
            Goal::Latest => {
                for checked in self.migrations.list.iter() {
                    if applied.contains(&checked.migration.version) {
                        continue;
                    }
                    if self.stopping() {
                        report.stopped = true;
                        break;
                    }
                    let pass = Pass {
                        checked,
                        down: false,
                        from: 0,
                        cut: Cut::None,
                    };
                    if !self.run_pass(db, &pass, &mut report, &mut applied).await? {
                        break;
                    }
                }
            }
            Goal::Down(target) => {
                let above: Vec<u64> = applied
                    .iter()
                    .rev()
                    .copied()
                    .filter(|v| *v > target)
                    .collect();
                for v in above {
                    if self.stopping() {
                        report.stopped = true;
                        break;
                    }
                    let Some(checked) = self.migrations.find(v) else {
                        break;
                    };
                    let pass = Pass {
                        checked,
                        down: true,
                        from: 0,
                        cut: Cut::None,
                    };
                    if !self.run_pass(db, &pass, &mut report, &mut applied).await? {
                        break;
                    }
                }
            }
        }
        self.finish(db, ledger.failure.is_some(), report, started)
            .await
    }

    /// Keeps the failure for status readers, or forgets an old one once a run completes.
    async fn finish(
        &self,
        db: &Database,
        had_failure: bool,
        mut report: DbMigrationReport,
        started: Instant,
    ) -> Result<DbMigrationReport> {
        match &report.failed {
            Some(f) => {
                ledger::record_failure(
                    db,
                    &FailureRecord {
                        version: f.version,
                        rolling_back: f.rolling_back,
                        step: f.step as u64,
                        error: f.error.to_string(),
                        at: DateTime::now(),
                        by: report.runner.clone(),
                    },
                )
                .await?
            }
            None if had_failure && !report.stopped => ledger::clear_failure(db).await?,
            None => {}
        }
        report.duration = started.elapsed();
        Ok(report)
    }

    /// The pass that finishes what the lock's earlier holder may have left half done: the
    /// step its marker names, or — a taken-over lock without a live marker — the first step
    /// of the first pending version (the first step of a version is not marked: see
    /// `run_pass`).
    fn interrupted_pass<'a>(&'a self, acquired: &Acquired, applied: &[u64]) -> Option<Pass<'a>> {
        // Up work that reached the ledger, or down work that left it, is finished.
        let live = acquired
            .marker
            .as_ref()
            .filter(|m| applied.contains(&m.version) == m.down);
        let Some(m) = live else {
            // A rollback marks every step: its runner left no up work behind.
            let rolling_back = acquired.marker.as_ref().is_some_and(|m| m.down);
            if !acquired.takeover || rolling_back {
                return None;
            }
            let checked = self
                .migrations
                .list
                .iter()
                .find(|c| !applied.contains(&c.migration.version))?;
            return Some(Pass {
                checked,
                down: false,
                from: 0,
                cut: Cut::One(0),
            });
        };
        let checked = self.migrations.find(m.version)?;
        let steps = if m.down {
            &checked.migration.down
        } else {
            &checked.migration.steps
        };
        // A changed definition restarts the version, and any of its steps may be done.
        let (from, cut) = if m.checksum == checked.checksum {
            let from = usize::try_from(m.steps_done)
                .unwrap_or(usize::MAX)
                .min(steps.len());
            (from, Cut::One(from))
        } else {
            (0, Cut::All)
        };
        Some(Pass {
            checked,
            down: m.down,
            from,
            cut,
        })
    }

    /// Runs one version's steps (or down steps) from `pass.from`, then records (or removes)
    /// it in the ledger. `false` when a step failed (in the report).
    async fn run_pass(
        &self,
        db: &Database,
        pass: &Pass<'_>,
        report: &mut DbMigrationReport,
        applied: &mut Vec<u64>,
    ) -> Result<bool> {
        let m = &pass.checked.migration;
        let steps = if pass.down { &m.down } else { &m.steps };
        let start = Instant::now();
        let lost = || -> Error {
            MigrationError::LockLost {
                database: db.name().to_owned(),
                version: m.version,
            }
            .into()
        };
        for (index, step) in steps.iter().enumerate().skip(pass.from) {
            // Saves a round trip per version: a runner that takes over a lock without a live
            // marker treats the first step of the first pending version as cut. Rollbacks
            // mark every step (see `interrupted_pass`).
            if pass.down || index > 0 {
                let marker = Marker {
                    version: m.version,
                    down: pass.down,
                    steps_done: index as u64,
                    checksum: pass.checked.checksum.clone(),
                };
                if !self.lock.mark(&marker).await? {
                    return Err(lost());
                }
            }
            let tolerant = pass.cut == Cut::All || pass.cut == Cut::One(index);
            let Some(outcome) = self.renewing(run_step(db, step, tolerant)).await else {
                return Err(lost());
            };
            if let Err(error) = outcome {
                self.counters.version(m.version, VersionEvent::Failed);
                report.failed = Some(MigrationFailure {
                    version: m.version,
                    name: m.name.clone(),
                    step: index,
                    rolling_back: pass.down,
                    error,
                });
                return Ok(false);
            }
        }
        let duration = start.elapsed();
        if pass.down {
            ledger::remove(db, m.version).await?;
            applied.retain(|v| *v != m.version);
            self.counters.version(m.version, VersionEvent::RolledBack);
            report.rolled_back.push(AppliedVersion {
                version: m.version,
                name: m.name.clone(),
                duration,
            });
        } else {
            ledger::record(
                db,
                &LedgerEntry {
                    version: m.version,
                    name: m.name.clone(),
                    checksum: pass.checked.checksum.clone(),
                    applied_at: DateTime::now(),
                    duration,
                    by: self.lock.owner().to_owned(),
                },
            )
            .await?;
            applied.push(m.version);
            applied.sort_unstable();
            self.counters.version(m.version, VersionEvent::Applied);
            report.applied.push(AppliedVersion {
                version: m.version,
                name: m.name.clone(),
                duration,
            });
        }
        report.current_version = applied.last().copied().unwrap_or(0);
        Ok(true)
    }

    /// Runs `work`, renewing the lock every third of its time to live; `None` — and the
    /// work is dropped where it stands — when a renewal finds the lock taken by another
    /// runner.
    async fn renewing<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Some(out),
                () = tokio::time::sleep(self.ttl / 3) => {
                    // A failed renewal (network) is not a loss; the next one may get through.
                    if let Ok(false) = self.lock.renew().await {
                        return None;
                    }
                }
            }
        }
    }
}

/// Runs one step. `resumed`: the step may have run before (its runner died in it), so the
/// errors that mean its command's work is already done are accepted.
async fn run_step(db: &Database, step: &Step, resumed: bool) -> Result<(), StepError> {
    match step {
        Step::Code(f) => match AssertUnwindSafe(f(db.clone())).catch_unwind().await {
            Ok(result) => result,
            Err(_) => Err("the code step panicked".into()),
        },
        Step::SyncIndexes(sync) => sync_indexes(db, sync).await,
        Step::Command(command) => {
            let name = command
                .keys()
                .next()
                .map(String::as_str)
                .unwrap_or_default();
            let reply = match run_command(db, command).await {
                Err(e) if resumed && already_done(name, &e) => return Ok(()),
                other => other?,
            };
            match refused_writes(&reply, resumed) {
                Some(e) => Err(e.into()),
                None => Ok(()),
            }
        }
    }
}

/// Creates the declared indexes missing from the collection (compared by keys: some servers
/// rename indexes), and drops undeclared ones when asked. Safe to run again.
async fn sync_indexes(db: &Database, sync: &IndexSync) -> Result<(), StepError> {
    let coll = db.collection::<Document>(sync.collection);
    let existing: Vec<IndexModel> = match coll.list_indexes().await {
        Ok(cursor) => cursor.try_collect().await?,
        Err(e) if already_done("drop", &e) => Vec::new(), // no collection yet
        Err(e) => return Err(e.into()),
    };
    let declared = (sync.indexes)();
    let missing: Vec<IndexModel> = declared
        .iter()
        .filter(|d| !existing.iter().any(|e| e.keys == d.keys))
        .cloned()
        .collect();
    if !missing.is_empty() {
        coll.create_indexes(missing).await?;
    }
    if sync.drop_undeclared {
        for index in &existing {
            let is_id = index.keys.keys().eq(["_id"]);
            if is_id || declared.iter().any(|d| d.keys == index.keys) {
                continue;
            }
            if let Some(name) = index.options.as_ref().and_then(|o| o.name.as_deref()) {
                coll.drop_index(name).await?;
            }
        }
    }
    Ok(())
}

/// Whether a command's error says that its work was done by an earlier run: what it drops
/// or renames is gone, what it creates exists.
fn already_done(command: &str, e: &mongodb::error::Error) -> bool {
    const NAMESPACE_NOT_FOUND: i32 = 26;
    const INDEX_NOT_FOUND: i32 = 27;
    const NAMESPACE_EXISTS: i32 = 48;
    let code = match e.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => c.code,
        _ => return false,
    };
    matches!(
        (command, code),
        ("drop" | "renameCollection", NAMESPACE_NOT_FOUND)
            | ("dropIndexes", INDEX_NOT_FOUND)
            | ("create", NAMESPACE_EXISTS)
    )
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
/// and `writeConcernError`. On a resumed step, duplicate keys (documents its earlier run
/// inserted) are not failures.
fn refused_writes(reply: &Document, resumed: bool) -> Option<String> {
    if let Some(v) = reply.get("writeConcernError") {
        return Some(format!("writeConcernError: {v}"));
    }
    let errors = reply.get_array("writeErrors").ok()?;
    let duplicate = |e: &Bson| {
        e.as_document()
            .and_then(|d| d.get("code"))
            .and_then(ledger::as_u64)
            == Some(11000)
    };
    if resumed && errors.iter().all(duplicate) {
        return None;
    }
    Some(format!("writeErrors: {}", Bson::Array(errors.clone())))
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
