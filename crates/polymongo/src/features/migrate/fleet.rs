//! Fleet runs: migrations applied to (or rolled back on) many databases at once, with
//! bounded concurrency, a canary set, a failure budget and progress events; and the fleet's
//! status, read without changing anything.
//!
//! A fleet run keeps no state of its own between runs: every database's ledger says what is
//! done, so a run that stopped (a failure budget, a crash, a cancelled future) is resumed by
//! running it again.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};

use super::counters::FleetRunGauge;
use super::ledger::FailureRecord;
use super::lock::LockInfo;
use super::run::{run_on, status_of, DbMigrationReport, Goal, MigrationStatus, Migrator};
use super::set::Migrations;
use crate::floor::error::{Error, Result};
use crate::floor::name::validate_database_name;
use crate::pool::cluster::PoolKind;

/// Databases a fleet run or status covers.
#[derive(Clone)]
pub enum Targets {
    /// These databases (validated, duplicates ignored), in this order.
    Databases(Vec<String>),
    /// Every database, on every cluster the manager knows, whose name passes the rule and
    /// that is routed to the cluster it was found on; `admin`, `local` and `config` never.
    /// Listed with `listDatabases` when the run starts, sorted by name.
    Matching(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

impl Targets {
    /// These databases.
    pub fn databases<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Targets::Databases(names.into_iter().map(Into::into).collect())
    }

    /// Every database whose name starts with `prefix` (see [`Targets::Matching`]).
    pub fn prefix(prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        Targets::Matching(Arc::new(move |name| name.starts_with(&prefix)))
    }

    /// Every database whose name passes `rule` (see [`Targets::Matching`]).
    pub fn matching(rule: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        Targets::Matching(Arc::new(rule))
    }
}

impl fmt::Debug for Targets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Targets::Databases(names) => f.debug_tuple("Databases").field(&names.len()).finish(),
            Targets::Matching(_) => f.write_str("Matching(..)"),
        }
    }
}

/// Which databases go first: if any of them fails, the run stops before touching the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Canary {
    /// No canary.
    #[default]
    None,
    /// The first `n` targets.
    First(usize),
    /// These databases, which must be among the targets.
    Databases(Vec<String>),
}

/// A progress callback: called once per database finished, from the run's task; keep it
/// short (draw a bar, send to a channel).
pub type ProgressFn = Arc<dyn Fn(&FleetProgress) + Send + Sync>;

/// A way to stop a fleet run from outside (Ctrl-C, a deploy pipeline's abort): once
/// [`stop`](Self::stop) is called, the run starts no new database; those in flight run to
/// the end, and the run returns its report with [`Stopped::Requested`]. Unlike dropping the
/// run's future, the caller gets the report and knows when the last database finished.
#[derive(Debug, Clone, Default)]
pub struct FleetStop(Arc<AtomicBool>);

impl FleetStop {
    /// A stop not yet requested.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests the stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How a fleet run goes.
#[derive(Clone)]
pub struct FleetOptions {
    concurrency: usize,
    canary: Canary,
    max_failures: Option<usize>,
    progress: Option<ProgressFn>,
    stop: FleetStop,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_CONCURRENCY,
            canary: Canary::None,
            max_failures: None,
            progress: None,
            stop: FleetStop::new(),
        }
    }
}

impl fmt::Debug for FleetOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetOptions")
            .field("concurrency", &self.concurrency)
            .field("canary", &self.canary)
            .field("max_failures", &self.max_failures)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// Databases migrated at once unless told otherwise (4).
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Most databases migrated at once (1 024): each holds a connection while its steps run.
pub const MAX_CONCURRENCY: usize = 1024;

impl FleetOptions {
    /// Default options: concurrency [`DEFAULT_CONCURRENCY`], no canary, no failure budget.
    pub fn new() -> Self {
        Self::default()
    }

    /// Databases worked on at once, 1 to [`MAX_CONCURRENCY`] (checked when the run starts).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// The canary set, run first: one failure among them stops the run before any other
    /// database is touched.
    pub fn canary(mut self, canary: Canary) -> Self {
        self.canary = canary;
        self
    }

    /// Stops starting databases once `n` (at least 1) have failed; those in flight finish,
    /// so a run may end with more than `n` failures. The rest are listed in
    /// [`FleetReport::not_started`].
    pub fn max_failures(mut self, n: usize) -> Self {
        self.max_failures = Some(n);
        self
    }

    /// Stops the run when `stop` is requested (see [`FleetStop`]).
    pub fn stop_signal(mut self, stop: FleetStop) -> Self {
        self.stop = stop;
        self
    }

    /// Called after each database (see [`ProgressFn`]).
    pub fn on_progress(mut self, f: impl Fn(&FleetProgress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }
}

/// Which part of a fleet run is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The canary set.
    Canary,
    /// Everything else.
    Fleet,
}

/// Where a fleet run is, after one more database finished.
#[derive(Debug, Clone)]
pub struct FleetProgress {
    /// The part of the run.
    pub phase: Phase,
    /// The database that just finished.
    pub database: String,
    /// Whether it reached its goal.
    pub ok: bool,
    /// Databases finished (either way), canaries included.
    pub done: usize,
    /// Of those, failed.
    pub failed: usize,
    /// Databases in the run, canaries included.
    pub total: usize,
    /// Since the run started.
    pub elapsed: Duration,
    /// Databases finished per second so far.
    pub rate: f64,
    /// The time left at that rate, once there is a rate.
    pub eta: Option<Duration>,
}

/// Why a fleet run stopped before its last database.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stopped {
    /// A canary failed: no other database was touched.
    CanaryFailed {
        /// The first canary that failed.
        database: String,
    },
    /// The failure budget was spent: no new database was started.
    FailureBudget {
        /// Failures when the run stopped (in flight ones included).
        failures: usize,
    },
    /// A [`FleetStop`] was requested: no new database was started.
    Requested,
    /// The manager began closing ([`close_all`](crate::PolyMongo::close_all)): no new
    /// database was started; those in flight finished their version in progress.
    Closed,
}

/// One database's part in a fleet run.
#[derive(Debug)]
pub struct DbOutcome {
    /// The database.
    pub database: String,
    /// Whether it was a canary.
    pub canary: bool,
    /// Its run: a report (which may hold a failed version), or why it could not run (a lock
    /// held past the wait, a ledger that disagrees with the definitions, the network…).
    pub result: Result<DbMigrationReport>,
}

impl DbOutcome {
    /// Whether the database reached the run's goal.
    pub fn is_ok(&self) -> bool {
        self.result
            .as_ref()
            .is_ok_and(DbMigrationReport::is_complete)
    }

    /// What went wrong, if it did: the failed version and step, or the error.
    pub fn problem(&self) -> Option<String> {
        self.describe_problem(false)
    }

    /// [`problem`](Self::problem) as a log line prints it: without the step's error or the
    /// error's document values (see [`Error::redacted`](crate::Error::redacted)).
    fn logged_problem(&self) -> Option<String> {
        self.describe_problem(true)
    }

    fn describe_problem(&self, redacted: bool) -> Option<String> {
        match &self.result {
            Err(e) if redacted => Some(e.redacted().to_string()),
            Err(e) => Some(e.to_string()),
            Ok(r) => r.failed.as_ref().map(|f| {
                let mut line = format!(
                    "migration {} ({}) failed at {}step {}",
                    f.version,
                    f.name,
                    if f.rolling_back { "down " } else { "" },
                    f.step,
                );
                if !redacted {
                    line = format!("{line}: {}", f.error);
                }
                line
            }),
        }
    }
}

/// What a fleet run did.
#[derive(Debug)]
pub struct FleetReport {
    /// Databases in the run, canaries included.
    pub total: usize,
    /// One per database worked on, in the order they finished.
    pub outcomes: Vec<DbOutcome>,
    /// Databases not started (the run stopped), in target order.
    pub not_started: Vec<String>,
    /// Why the run stopped early, if it did.
    pub stopped: Option<Stopped>,
    /// The whole run.
    pub duration: Duration,
}

impl FleetReport {
    /// Whether every database reached the goal.
    pub fn is_complete(&self) -> bool {
        self.not_started.is_empty() && self.outcomes.iter().all(DbOutcome::is_ok)
    }

    /// Databases that failed.
    pub fn failed(&self) -> impl Iterator<Item = &DbOutcome> {
        self.outcomes.iter().filter(|o| !o.is_ok())
    }

    /// Databases that reached the goal.
    pub fn succeeded(&self) -> usize {
        self.outcomes.iter().filter(|o| o.is_ok()).count()
    }

    /// Versions applied (or rolled back) across the fleet by this run.
    pub fn versions_done(&self) -> usize {
        self.outcomes
            .iter()
            .filter_map(|o| o.result.as_ref().ok())
            .map(|r| r.applied.len() + r.rolled_back.len())
            .sum()
    }
}

/// The migration state of a fleet, read without changing anything: what a run would do.
#[derive(Debug, Default)]
pub struct FleetStatus {
    /// Databases read.
    pub total: usize,
    /// Databases by their current (highest applied) version.
    pub at_version: BTreeMap<u64, usize>,
    /// Databases with every defined version applied.
    pub up_to_date: usize,
    /// What an apply run would do: version → databases that would get it.
    pub pending: BTreeMap<u64, usize>,
    /// Databases whose last run failed, with the failure.
    pub failed: Vec<(String, FailureRecord)>,
    /// Databases locked by a runner now (unexpired locks).
    pub locked: Vec<(String, LockInfo)>,
    /// Databases a run would refuse: their ledger holds a changed or unknown version.
    pub refused: Vec<(String, String)>,
    /// Databases that could not be read, with the error.
    pub unreadable: Vec<(String, Error)>,
    /// Each readable database's state, in target order.
    pub databases: Vec<MigrationStatus>,
}

impl FleetStatus {
    /// What a rollback to `version` would do: version → databases that would undo it.
    pub fn rollback_plan(&self, version: u64) -> BTreeMap<u64, usize> {
        let mut plan = BTreeMap::new();
        for s in &self.databases {
            for e in s.applied.iter().filter(|e| e.version > version) {
                *plan.entry(e.version).or_insert(0) += 1;
            }
        }
        plan
    }
}

/// Migrations over many databases. Made by [`PolyMongo::fleet`](crate::PolyMongo::fleet).
#[derive(Debug, Clone, Copy)]
pub struct Fleet<'r> {
    migrator: Migrator<'r>,
}

impl<'r> Fleet<'r> {
    pub(crate) fn new(migrator: Migrator<'r>) -> Self {
        Self { migrator }
    }

    /// Lock settings for every database of the run (see [`Migrator::lock_ttl`]).
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.migrator = self.migrator.lock_ttl(ttl);
        self
    }

    /// How long each database waits for another runner's lock (see [`Migrator::lock_wait`]).
    /// Two fleet runs over the same databases serialise per database: the second finds
    /// the first's versions applied.
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.migrator = self.migrator.lock_wait(wait);
        self
    }

    /// The databases `targets` names now, in run order.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a listed name that is not a valid database name (nothing
    /// is run), [`Error::Closed`], the driver's error listing a cluster's databases.
    pub async fn databases(self, targets: &Targets) -> Result<Vec<String>> {
        match targets {
            Targets::Databases(names) => {
                let mut seen = HashSet::with_capacity(names.len());
                let mut out = Vec::with_capacity(names.len());
                for name in names {
                    validate_database_name(name)?;
                    if seen.insert(name.as_str()) {
                        out.push(name.clone());
                    }
                }
                Ok(out)
            }
            Targets::Matching(rule) => self.list_matching(rule.as_ref()).await,
        }
    }

    async fn list_matching(
        &self,
        rule: &(dyn Fn(&str) -> bool + Send + Sync),
    ) -> Result<Vec<String>> {
        let registry = self.migrator.registry();
        if registry.is_closed() {
            return Err(Error::Closed);
        }
        let routes = registry.routes();
        let mut found = Vec::new();
        for pool in routes.pools() {
            // A draining dedicated pool serves nothing any more.
            if pool.kind() == PoolKind::Dedicated && routes.owner_of(&pool).is_none() {
                continue;
            }
            let (client, _) = routes.client_of(&pool)?;
            let names = client
                .list_database_names()
                .await
                .map_err(|e| Error::from_driver(e, pool.label()))?;
            for name in names {
                if matches!(name.as_str(), "admin" | "local" | "config")
                    || !rule(&name)
                    || validate_database_name(&name).is_err()
                {
                    continue;
                }
                if Arc::ptr_eq(&routes.pool_of(&name), &pool) {
                    found.push(name);
                }
            }
        }
        found.sort_unstable();
        found.dedup();
        Ok(found)
    }

    /// Brings every target database to the latest version of `migrations`: the canaries
    /// first (one failure stops the run), then the rest, `concurrency` at a time, until the
    /// failure budget is spent. Each database as [`Migrator::apply`]. Safe to run again: a
    /// rerun does what the ledgers say is left.
    ///
    /// Dropping the future stops the run: no database is started after that, and each one
    /// in flight finishes its current version and releases its lock (see
    /// [`Migrator::apply`]).
    ///
    /// # Errors
    /// Errors that stop the run before it starts: invalid targets
    /// ([`databases`](Self::databases)), [`Error::Config`] for a concurrency out of range or a canary not
    /// among the targets. A database's own failure is in its [`DbOutcome`].
    pub async fn migrate(
        self,
        targets: &Targets,
        migrations: &Migrations,
        options: &FleetOptions,
    ) -> Result<FleetReport> {
        self.run(targets, migrations, Goal::Latest, options).await
    }

    /// Rolls every target database back to `version` (see [`Migrator::rollback_to`]), with
    /// the same canary, budget and progress rules as [`migrate`](Self::migrate).
    ///
    /// # Errors
    /// As [`migrate`](Self::migrate).
    pub async fn rollback_to(
        self,
        targets: &Targets,
        migrations: &Migrations,
        version: u64,
        options: &FleetOptions,
    ) -> Result<FleetReport> {
        self.run(targets, migrations, Goal::Down(version), options)
            .await
    }

    /// The fleet's migration state against `migrations`, `concurrency` databases read at
    /// once (one round trip each). Changes nothing.
    ///
    /// # Errors
    /// As [`databases`](Self::databases), and [`Error::Config`] for a concurrency out of
    /// range; a database that cannot be read is listed in [`FleetStatus::unreadable`].
    pub async fn status(
        self,
        targets: &Targets,
        migrations: &Migrations,
        concurrency: usize,
    ) -> Result<FleetStatus> {
        check_concurrency(concurrency)?;
        let names = self.databases(targets).await?;
        let registry = self.migrator.registry();
        let mut read: Vec<(usize, String, Result<MigrationStatus>)> =
            stream::iter(names.into_iter().enumerate())
                .map(|(i, name)| async move {
                    let status = match registry.lease(&name) {
                        Ok(lease) => status_of(&lease.entry.database, migrations).await,
                        Err(e) => Err(e),
                    };
                    (i, name, status)
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
        read.sort_by_key(|(i, _, _)| *i);
        let mut fleet = FleetStatus {
            total: read.len(),
            ..FleetStatus::default()
        };
        for (_, name, status) in read {
            let s = match status {
                Ok(s) => s,
                Err(e) => {
                    fleet.unreadable.push((name, e));
                    continue;
                }
            };
            *fleet.at_version.entry(s.current_version).or_insert(0) += 1;
            if !s.changed.is_empty() || !s.unknown.is_empty() {
                fleet.refused.push((name.clone(), refusal(&s)));
            } else if s.pending.is_empty() {
                fleet.up_to_date += 1;
            } else {
                for v in &s.pending {
                    *fleet.pending.entry(*v).or_insert(0) += 1;
                }
            }
            if let Some(f) = &s.failure {
                fleet.failed.push((name.clone(), f.clone()));
            }
            if let Some(l) = s.lock.as_ref().filter(|l| !l.is_expired()) {
                fleet.locked.push((name.clone(), l.clone()));
            }
            fleet.databases.push(s);
        }
        Ok(fleet)
    }

    async fn run(
        &self,
        targets: &Targets,
        migrations: &Migrations,
        goal: Goal,
        options: &FleetOptions,
    ) -> Result<FleetReport> {
        check_concurrency(options.concurrency)?;
        if options.max_failures == Some(0) {
            return Err(Error::Config {
                field: "max_failures",
                message: "must be at least 1".into(),
            });
        }
        let names = self.databases(targets).await?;
        let (canaries, rest) = split_canaries(names, &options.canary)?;
        let total = canaries.len() + rest.len();
        let tracker = Tracker {
            gauge: self.migrator.counters().fleet_run(total),
            total,
            done: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            started: Instant::now(),
            progress: options.progress.clone(),
            outcomes: Mutex::new(Vec::new()),
        };
        tracing::info!(
            databases = tracker.total,
            canaries = canaries.len(),
            ?goal,
            "fleet migration run started"
        );
        let mut stopped = None;
        let mut not_started = Vec::new();
        let canary_left = self
            .run_set(
                &canaries,
                migrations,
                goal,
                options,
                Phase::Canary,
                Some(1),
                &tracker,
            )
            .await;
        if let Some(first) = tracker.first_failure() {
            stopped = Some(Stopped::CanaryFailed { database: first });
            not_started.extend(canary_left);
            not_started.extend(rest);
        } else if options.stop.is_stopped() || self.migrator.registry().is_closed() {
            stopped = Some(if options.stop.is_stopped() {
                Stopped::Requested
            } else {
                Stopped::Closed
            });
            not_started.extend(canary_left);
            not_started.extend(rest);
        } else {
            let left = self
                .run_set(
                    &rest,
                    migrations,
                    goal,
                    options,
                    Phase::Fleet,
                    options.max_failures,
                    &tracker,
                )
                .await;
            if !left.is_empty() {
                stopped = Some(if options.stop.is_stopped() {
                    Stopped::Requested
                } else if self.migrator.registry().is_closed() {
                    Stopped::Closed
                } else {
                    Stopped::FailureBudget {
                        failures: tracker.failed.load(Ordering::SeqCst),
                    }
                });
            }
            not_started = left;
        }
        let report = FleetReport {
            total: tracker.total,
            outcomes: tracker
                .outcomes
                .into_inner()
                .unwrap_or_else(|p| p.into_inner()),
            not_started,
            stopped,
            duration: tracker.started.elapsed(),
        };
        tracing::info!(
            databases = report.total,
            succeeded = report.succeeded(),
            not_started = report.not_started.len(),
            ms = report.duration.as_millis() as u64,
            "fleet migration run finished"
        );
        Ok(report)
    }

    /// Runs `goal` on `names`, `concurrency` at a time, starting none once `budget`
    /// failures were seen; returns the databases not started, in order.
    #[allow(clippy::too_many_arguments)]
    async fn run_set(
        &self,
        names: &[String],
        migrations: &Migrations,
        goal: Goal,
        options: &FleetOptions,
        phase: Phase,
        budget: Option<usize>,
        tracker: &Tracker<'_>,
    ) -> Vec<String> {
        let settings = self.migrator.settings();
        let registry = self.migrator.registry();
        let counters = self.migrator.counters();
        let skipped: Vec<Option<String>> = stream::iter(names.iter().cloned())
            .map(|name| async move {
                if options.stop.is_stopped()
                    || registry.is_closed()
                    || budget.is_some_and(|b| tracker.failed.load(Ordering::SeqCst) >= b)
                {
                    return Some(name);
                }
                let result = match registry.lease(&name) {
                    Ok(lease) => run_on(lease, migrations, goal, settings, counters).await,
                    Err(e) => Err(e),
                };
                tracker.finished(
                    DbOutcome {
                        database: name,
                        canary: phase == Phase::Canary,
                        result,
                    },
                    phase,
                );
                None
            })
            .buffer_unordered(options.concurrency)
            .collect()
            .await;
        let skipped: HashSet<String> = skipped.into_iter().flatten().collect();
        names
            .iter()
            .filter(|n| skipped.contains(*n))
            .cloned()
            .collect()
    }
}

fn check_concurrency(n: usize) -> Result<()> {
    if (1..=MAX_CONCURRENCY).contains(&n) {
        Ok(())
    } else {
        Err(Error::Config {
            field: "concurrency",
            message: format!("{n} is out of range: 1 to {MAX_CONCURRENCY}"),
        })
    }
}

/// Splits the run's databases into canaries and the rest, both in target order.
fn split_canaries(names: Vec<String>, canary: &Canary) -> Result<(Vec<String>, Vec<String>)> {
    match canary {
        Canary::None => Ok((Vec::new(), names)),
        Canary::First(n) => {
            let mut rest = names;
            let canaries: Vec<String> = rest.drain(..(*n).min(rest.len())).collect();
            Ok((canaries, rest))
        }
        Canary::Databases(list) => {
            let wanted: HashSet<&str> = list.iter().map(String::as_str).collect();
            let present: HashSet<&str> = names.iter().map(String::as_str).collect();
            if let Some(missing) = list.iter().find(|c| !present.contains(c.as_str())) {
                return Err(Error::Config {
                    field: "canary",
                    message: format!("database {missing:?} is not among the run's targets"),
                });
            }
            let (canaries, rest) = names.into_iter().partition(|n| wanted.contains(n.as_str()));
            Ok((canaries, rest))
        }
    }
}

fn refusal(s: &MigrationStatus) -> String {
    match (s.changed.first(), s.unknown.first()) {
        (Some(v), _) => format!("version {v} was applied with another definition"),
        (None, Some(v)) => format!("version {v} is applied but not defined"),
        (None, None) => String::new(),
    }
}

/// Counts and outcomes of a run, shared by its databases.
struct Tracker<'c> {
    gauge: FleetRunGauge<'c>,
    total: usize,
    done: AtomicUsize,
    failed: AtomicUsize,
    started: Instant,
    progress: Option<ProgressFn>,
    outcomes: Mutex<Vec<DbOutcome>>,
}

impl Tracker<'_> {
    fn finished(&self, outcome: DbOutcome, phase: Phase) {
        let ok = outcome.is_ok();
        self.gauge.finished(ok);
        let failed = if ok {
            self.failed.load(Ordering::SeqCst)
        } else {
            if let Some(problem) = outcome.logged_problem() {
                tracing::warn!(database = %outcome.database, %problem, "fleet migration: database failed");
            }
            self.failed.fetch_add(1, Ordering::SeqCst) + 1
        };
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        let database = outcome.database.clone();
        self.outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(outcome);
        if let Some(progress) = &self.progress {
            let elapsed = self.started.elapsed();
            let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
            let left = self.total.saturating_sub(done);
            progress(&FleetProgress {
                phase,
                database,
                ok,
                done,
                failed,
                total: self.total,
                elapsed,
                rate,
                eta: (rate > 0.0).then(|| Duration::from_secs_f64(left as f64 / rate)),
            });
        }
    }

    fn first_failure(&self) -> Option<String> {
        self.outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|o| !o.is_ok())
            .map(|o| o.database.clone())
    }
}
