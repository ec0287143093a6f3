//! Per-database usage analytics: operations by command, errors, latency percentiles, time
//! spent, last use — the insight the npm package lacks.
//!
//! Two sources, chosen by [`UsageAnalytics`]:
//!
//! - **operations** (the default): each [`DbHandle::run`](crate::DbHandle::run) call is
//!   counted and timed around the driver operation it runs. Cheap — a map lookup, a few
//!   atomic adds and two clock reads per operation — and exact for what goes through `run`.
//! - **commands**: every client the manager makes reports every command here from the
//!   driver's command events. A command is counted when it starts (the event names the
//!   database) and timed when it ends (matched by request id). Complete (cursor `getMore`s,
//!   raw database access, operations not run through `run`), but the driver then builds a
//!   full event for every command, which doubles client-side CPU (`benches/monitoring.rs`).
//!
//! Memory is bounded whatever the number of databases: each tracked database costs a fixed
//! ~420 bytes (a counter per common command, a 64-bucket latency histogram), and at most
//! `max_tracked_databases` are tracked; commands on further databases are added to one
//! shared [`OTHER_DATABASES`] entry.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;
use serde::{Deserialize, Serialize};

/// The entry commands of untracked databases are counted in, once `max_tracked_databases`
/// databases are tracked.
pub const OTHER_DATABASES: &str = "(other databases)";

/// Where per-database usage figures come from: [`Options::usage_analytics`](crate::Options::usage_analytics).
///
/// In configuration files: `"off"`, `"operations"` or `"commands"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageAnalytics {
    /// Nothing is counted; [`DbHandle::run`](crate::DbHandle::run) only opens its tracing span.
    Off,
    /// Operations run through [`DbHandle::run`](crate::DbHandle::run) are counted, by kind
    /// (`find`, `insert`, …), with their errors and latency as the caller sees it (pool
    /// checkout included). Operations called directly on the collection are not seen. About
    /// 1 % of the driver's client-side instructions (`benches/monitoring.rs`).
    #[default]
    Operations,
    /// Every command every client of the manager sends is counted, from the driver's command
    /// events: `getMore`s, raw [`database`](crate::PolyMongo::database) access and direct
    /// collection calls included. The driver then copies each command and reply into an event,
    /// which doubled the client-side instructions per operation in `benches/monitoring.rs`.
    Commands,
}

/// Default bound on databases with their own usage entry.
pub const DEFAULT_MAX_TRACKED_DATABASES: usize = 10_000;

/// Commands counted by name (the ones that make up nearly all traffic); anything else is
/// counted as `other`. Few on purpose: each costs 8 bytes per database.
const COMMANDS: [&str; 7] = [
    "find",
    "getMore",
    "insert",
    "update",
    "delete",
    "aggregate",
    "count",
];
const OTHER: usize = COMMANDS.len();

/// The counter an operation of the driver's action type `A` is counted under (`other` for
/// anything that is not one of the driver's common actions, an `async` block for instance).
pub(crate) fn command_index<A>() -> usize {
    let name = std::any::type_name::<A>();
    let Some(path) = name.strip_prefix("mongodb::action::") else {
        return OTHER;
    };
    let path = path.split('<').next().unwrap_or(path);
    let action = path.rsplit("::").next().unwrap_or(path);
    let command = match action {
        "Find" | "FindOne" => "find",
        "InsertOne" | "InsertMany" => "insert",
        "Update" | "ReplaceOne" => "update",
        "Delete" => "delete",
        "Aggregate" => "aggregate",
        "CountDocuments" | "EstimatedDocumentCount" => "count",
        _ => return OTHER,
    };
    COMMANDS.iter().position(|c| *c == command).unwrap_or(OTHER)
}

/// The counter's name, for logs and spans.
pub(crate) fn command_name(index: usize) -> &'static str {
    COMMANDS.get(index).copied().unwrap_or("other")
}

/// Two buckets per power of two of microseconds, from 1 µs to about 67 s (longer commands
/// land in the last bucket).
const BUCKETS: usize = 52;

fn bucket(d: Duration) -> usize {
    let us = d.as_micros().max(1) as u64;
    let octave = 63 - us.leading_zeros() as usize; // floor(log2)
    let half = usize::from(octave > 0 && (us >> (octave - 1)) & 1 == 1);
    (octave * 2 + half).min(BUCKETS - 1)
}

/// Upper bound of a bucket, in microseconds.
fn bucket_ceiling(i: usize) -> u64 {
    let octave = i / 2;
    let base = 1u64 << octave;
    if i.is_multiple_of(2) {
        base + base / 2
    } else {
        base * 2
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Counters of one database.
pub(crate) struct DbUsage {
    ops: [AtomicU64; COMMANDS.len() + 1],
    errors: AtomicU64,
    in_flight: AtomicU64,
    total_us: AtomicU64,
    latency: [AtomicU32; BUCKETS],
    last_used_ms: AtomicU64,
}

impl DbUsage {
    fn new() -> Self {
        Self {
            ops: std::array::from_fn(|_| AtomicU64::new(0)),
            errors: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            total_us: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
            last_used_ms: AtomicU64::new(0),
        }
    }

    fn started(&self, command: usize) {
        self.ops[command.min(OTHER)].fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub(crate) fn finished(&self, duration: Duration, failed: bool) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.total_us
            .fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
        self.latency[bucket(duration)].fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn percentile(&self, counts: &[u32; BUCKETS], total: u64, p: f64) -> u64 {
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, c) in counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return bucket_ceiling(i);
            }
        }
        bucket_ceiling(BUCKETS - 1)
    }

    fn snapshot(&self, database: &str) -> UsageStats {
        let counts: [u32; BUCKETS] =
            std::array::from_fn(|i| self.latency[i].load(Ordering::Relaxed));
        let timed: u64 = counts.iter().map(|c| u64::from(*c)).sum();
        let by_command = COMMANDS
            .iter()
            .copied()
            .chain(std::iter::once("other"))
            .zip(&self.ops)
            .map(|(name, n)| (name, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| (name.to_owned(), n))
            .collect();
        let last = self.last_used_ms.load(Ordering::Relaxed);
        UsageStats {
            database: database.to_owned(),
            operations: self.ops.iter().map(|n| n.load(Ordering::Relaxed)).sum(),
            by_command,
            errors: self.errors.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            total_time_us: self.total_us.load(Ordering::Relaxed),
            p50_us: self.percentile(&counts, timed, 0.50),
            p95_us: self.percentile(&counts, timed, 0.95),
            p99_us: self.percentile(&counts, timed, 0.99),
            last_used: (last > 0).then(|| UNIX_EPOCH + Duration::from_millis(last)),
        }
    }
}

/// Usage of one database: [`Stats::usage`](crate::Stats::usage),
/// [`Stats::top_databases`](crate::Stats::top_databases).
///
/// Percentiles come from a histogram with two buckets per power of two: each is the upper
/// bound of its bucket, at most 50 % above the true value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct UsageStats {
    /// The database (or [`OTHER_DATABASES`]).
    pub database: String,
    /// Operations counted: [`DbHandle::run`](crate::DbHandle::run) calls, or with
    /// [`UsageAnalytics::Commands`] commands sent (a cursor's `getMore`s count one each).
    pub operations: u64,
    /// Operations by kind (`find`, `insert`, `update`, `delete`, `aggregate`, `count`,
    /// `getMore` (commands only), `other`), only those seen.
    pub by_command: std::collections::BTreeMap<String, u64>,
    /// Operations that failed.
    pub errors: u64,
    /// Operations started and not yet finished.
    pub in_flight: u64,
    /// Time spent in finished operations, in microseconds.
    pub total_time_us: u64,
    /// Median latency, in microseconds.
    pub p50_us: u64,
    /// 95th percentile, in microseconds.
    pub p95_us: u64,
    /// 99th percentile, in microseconds.
    pub p99_us: u64,
    /// When an operation last started.
    pub last_used: Option<SystemTime>,
}

/// How [`Stats::top_databases`](crate::Stats::top_databases) ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopBy {
    /// Most operations.
    Operations,
    /// Most time spent in operations.
    Time,
}

/// Usage of every tracked database of a manager.
pub(crate) struct Usage {
    dbs: DashMap<Box<str>, Arc<DbUsage>>,
    other: Arc<DbUsage>,
    /// Commands started, by request id, until they finish.
    pending: DashMap<i32, Arc<DbUsage>>,
    max_tracked: usize,
    source: UsageAnalytics,
}

impl Usage {
    pub(crate) fn new(max_tracked: usize, source: UsageAnalytics) -> Self {
        Self {
            dbs: DashMap::new(),
            other: Arc::new(DbUsage::new()),
            pending: DashMap::new(),
            max_tracked,
            source,
        }
    }

    pub(crate) fn source(&self) -> UsageAnalytics {
        self.source
    }

    /// Counts the start of one operation of kind `command` on `db`; the caller reports its
    /// end on the returned entry.
    pub(crate) fn operation(&self, db: &str, command: usize) -> Arc<DbUsage> {
        let u = self.entry(db);
        u.started(command);
        u
    }

    fn entry(&self, db: &str) -> Arc<DbUsage> {
        if let Some(u) = self.dbs.get(db) {
            return Arc::clone(&u);
        }
        if self.dbs.len() >= self.max_tracked {
            return Arc::clone(&self.other);
        }
        Arc::clone(
            self.dbs
                .entry(db.into())
                .or_insert_with(|| Arc::new(DbUsage::new()))
                .value(),
        )
    }

    fn on_event(&self, event: CommandEvent) {
        match event {
            CommandEvent::Started(e) => {
                let i = COMMANDS
                    .iter()
                    .position(|c| *c == e.command_name)
                    .unwrap_or(OTHER);
                self.pending.insert(e.request_id, self.operation(&e.db, i));
            }
            CommandEvent::Succeeded(e) => {
                if let Some((_, u)) = self.pending.remove(&e.request_id) {
                    u.finished(e.duration, false);
                }
            }
            CommandEvent::Failed(e) => {
                if let Some((_, u)) = self.pending.remove(&e.request_id) {
                    u.finished(e.duration, true);
                }
            }
            _ => {}
        }
    }

    /// The command handler to install on a client.
    pub(crate) fn observer(self: &Arc<Self>) -> EventHandler<CommandEvent> {
        let this = Arc::clone(self);
        EventHandler::callback(move |e| this.on_event(e))
    }

    pub(crate) fn of(&self, db: &str) -> Option<UsageStats> {
        if db == OTHER_DATABASES {
            return Some(self.other.snapshot(OTHER_DATABASES));
        }
        self.dbs.get(db).map(|u| u.snapshot(db))
    }

    pub(crate) fn top(&self, n: usize, by: TopBy) -> Vec<UsageStats> {
        let mut all: Vec<UsageStats> = self
            .dbs
            .iter()
            .map(|e| e.value().snapshot(e.key()))
            .chain(std::iter::once(self.other.snapshot(OTHER_DATABASES)))
            .filter(|u| u.operations > 0)
            .collect();
        match by {
            TopBy::Operations => all.sort_by_key(|u| std::cmp::Reverse(u.operations)),
            TopBy::Time => all.sort_by_key(|u| std::cmp::Reverse(u.total_time_us)),
        }
        all.truncate(n);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_and_bound_their_values() {
        for us in [
            1u64, 2, 3, 5, 7, 100, 999, 1_500, 123_456, 10_000_000, 60_000_000,
        ] {
            let b = bucket(Duration::from_micros(us));
            assert!(bucket_ceiling(b) >= us, "{us} -> {b}");
            assert!(bucket_ceiling(b) <= us * 2, "{us} -> {}", bucket_ceiling(b));
        }
        assert_eq!(bucket(Duration::from_secs(1 << 20)), BUCKETS - 1);
    }

    #[test]
    fn driver_actions_map_to_their_command() {
        type C = mongodb::Collection<mongodb::bson::Document>;
        fn of<'a, A>(_: impl FnOnce(&'a C) -> A) -> &'static str {
            command_name(command_index::<A>())
        }
        let d = mongodb::bson::doc! {};
        assert_eq!(of(|c| c.find_one(d.clone())), "find");
        assert_eq!(of(|c| c.find(d.clone())), "find");
        assert_eq!(of(|c| c.insert_one(d.clone())), "insert");
        assert_eq!(of(|c| c.insert_many([d.clone()])), "insert");
        assert_eq!(of(|c| c.update_many(d.clone(), d.clone())), "update");
        assert_eq!(of(|c| c.replace_one(d.clone(), d.clone())), "update");
        assert_eq!(of(|c| c.delete_one(d.clone())), "delete");
        assert_eq!(of(|c| c.aggregate([])), "aggregate");
        assert_eq!(of(|c| c.count_documents(d.clone())), "count");
        assert_eq!(of(|c| c.estimated_document_count()), "count");
        assert_eq!(of(|c| c.distinct("a", d.clone())), "other");
        assert_eq!(of(|c| c.find_one_and_delete(d.clone())), "other");
        assert_eq!(of(|_| async { 1 }), "other");
    }

    #[test]
    fn percentiles_follow_the_distribution() {
        let u = DbUsage::new();
        for _ in 0..90 {
            u.in_flight.fetch_add(1, Ordering::Relaxed);
            u.finished(Duration::from_micros(100), false);
        }
        for _ in 0..10 {
            u.in_flight.fetch_add(1, Ordering::Relaxed);
            u.finished(Duration::from_millis(10), true);
        }
        let s = u.snapshot("x");
        assert!((100..=150).contains(&s.p50_us), "{s:?}");
        assert!((10_000..=15_000).contains(&s.p95_us), "{s:?}");
        assert_eq!(s.errors, 10);
        assert_eq!(s.in_flight, 0);
    }
}
