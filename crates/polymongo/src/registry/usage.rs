//! Per-database usage analytics: operations by kind, errors, latency percentiles, time spent,
//! last use, and the busiest databases of the last minute or two.
//!
//! Every registry entry counts its own database's operations ([`DbUsage`], made on the first
//! counted operation), so the figures live and die with the entry: a database forgotten for
//! idleness takes its figures along, and its totals are folded into [`OTHER_DATABASES`]. Two
//! sources, chosen by [`UsageAnalytics`]:
//!
//! - **operations** (the default): each [`DbHandle::run`](crate::DbHandle::run) call is
//!   counted and timed around the driver operation it runs — a few atomic adds and two clock
//!   reads per operation.
//! - **commands**: every command of every client, from the driver's command events, matched
//!   to its end by the connection that carries it (a cancelled command ends when its
//!   connection comes back or closes). Complete, but the driver then builds a full event for
//!   every command, which doubles client-side CPU (`benches/monitoring.rs`).
//!
//! **The busiest now.** Each database also counts its operations and time in one-minute
//! windows (this one and the last). A bounded [`Board`] of `max_tracked_databases` ranks the
//! busiest by that recent count: a database whose recent count passes the quietest member's
//! takes its place, so a database that becomes busy late reaches
//! [`top_databases`](crate::Stats::top_databases) at once, however many came before it. The
//! board is all `top_databases` and the metrics read: their cost is bounded by the board,
//! not by the number of databases.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

pub use crate::floor::config::UsageAnalytics;
use crate::pool::histogram::{bucket, DurationHistogram, DURATION_BUCKETS};
use crate::registry::metric_rows::MetricRows;

/// The name under which figures of databases no longer cached (and, with the commands
/// source, of commands on databases never cached) are summed.
pub const OTHER_DATABASES: &str = "(other databases)";

/// Length of one window of the recent figures: a database's recent count covers this window
/// and the one before.
pub const RECENT_WINDOW: Duration = Duration::from_secs(60);

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
    // Parsing the type's name costs a few hundred instructions; a thread's few action types
    // are remembered by the address of their (static) name.
    thread_local! {
        static SEEN: std::cell::RefCell<Vec<(usize, usize)>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let key = name.as_ptr() as usize;
    if let Some(index) =
        SEEN.with_borrow(|seen| seen.iter().find(|(k, _)| *k == key).map(|(_, i)| *i))
    {
        return index;
    }
    let index = parse_command_index(name);
    SEEN.with_borrow_mut(|seen| {
        // Bounded: a program has few action types; past that, parse each time.
        if seen.len() < 64 {
            seen.push((key, index));
        }
    });
    index
}

fn parse_command_index(name: &str) -> usize {
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

/// The counter a command of the driver's command events is counted under.
pub(crate) fn command_index_by_name(name: &str) -> usize {
    COMMANDS.iter().position(|c| *c == name).unwrap_or(OTHER)
}

/// The counter's name, for logs and spans.
pub(crate) fn command_name(index: usize) -> &'static str {
    COMMANDS.get(index).copied().unwrap_or("other")
}

/// One bucket per power of two of microseconds (the layout of
/// [`DurationHistogram`], shared with the pools' wait histograms so that every latency series
/// has the same bounds): bucket `i` holds durations in (2^(i-1), 2^i] µs, from 1 µs to about
/// 67 s, longer ones in the last bucket. Twice as coarse as it could be, on purpose: the
/// histogram is most of a database's usage counters, which every cached database carries
/// (28 buckets of 4 bytes).
const BUCKETS: usize = DURATION_BUCKETS;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A latency bucket's counter: 4 bytes in a database's counters (every cached database
/// carries 28), 8 in the manager-wide aggregates, which count every database's operations
/// and would pass 2^32 in a bucket within days on a busy service.
pub(crate) trait Bucket: Send + Sync {
    fn zero() -> Self;
    fn add(&self, n: u64);
    fn get(&self) -> u64;
}

impl Bucket for AtomicU32 {
    fn zero() -> Self {
        AtomicU32::new(0)
    }
    fn add(&self, n: u64) {
        self.fetch_add(n as u32, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        u64::from(self.load(Ordering::Relaxed))
    }
}

impl Bucket for AtomicU64 {
    fn zero() -> Self {
        AtomicU64::new(0)
    }
    fn add(&self, n: u64) {
        self.fetch_add(n, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.load(Ordering::Relaxed)
    }
}

/// Counters of one database, or (with 64-bit buckets) of an aggregate.
pub(crate) struct DbUsage<B: Bucket = AtomicU32> {
    name: Box<str>,
    ops: [AtomicU64; COMMANDS.len() + 1],
    errors: AtomicU64,
    in_flight: AtomicU64,
    total_us: AtomicU64,
    latency: [B; BUCKETS],
    last_used_ms: AtomicU64,
    /// The window `current_*` count in (index since the clock's origin).
    window: AtomicU64,
    current_ops: AtomicU64,
    current_us: AtomicU64,
    previous_ops: AtomicU64,
    previous_us: AtomicU64,
    /// Whether the board lists it now.
    on_board: AtomicBool,
    /// Set when its entry is dropped: the board forgets it.
    gone: AtomicBool,
    /// Which counters these are: a database forgotten and counted again gets new ones,
    /// whose totals start again (see `registry::metric_rows`).
    generation: u64,
}

/// The next [`DbUsage::generation`].
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl<B: Bucket> DbUsage<B> {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            ops: std::array::from_fn(|_| AtomicU64::new(0)),
            errors: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            total_us: AtomicU64::new(0),
            latency: std::array::from_fn(|_| B::zero()),
            last_used_ms: AtomicU64::new(0),
            window: AtomicU64::new(0),
            current_ops: AtomicU64::new(0),
            current_us: AtomicU64::new(0),
            previous_ops: AtomicU64::new(0),
            previous_us: AtomicU64::new(0),
            on_board: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Moves the windows on to `now` if time has passed since the last count. Racing
    /// rotations may misplace a few counts between two windows; the recent figures are a
    /// ranking signal, the totals stay exact.
    fn rotate(&self, now: u64) {
        let seen = self.window.load(Ordering::Relaxed);
        if seen == now
            || self
                .window
                .compare_exchange(seen, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let (ops, us) = (
            self.current_ops.swap(0, Ordering::Relaxed),
            self.current_us.swap(0, Ordering::Relaxed),
        );
        let adjacent = now == seen + 1;
        self.previous_ops
            .store(if adjacent { ops } else { 0 }, Ordering::Relaxed);
        self.previous_us
            .store(if adjacent { us } else { 0 }, Ordering::Relaxed);
    }

    /// Operations and microseconds of this window and the last, as of window `now`.
    fn recent(&self, now: u64) -> (u64, u64) {
        let seen = self.window.load(Ordering::Relaxed);
        let current = (
            self.current_ops.load(Ordering::Relaxed),
            self.current_us.load(Ordering::Relaxed),
        );
        if seen == now {
            (
                current.0 + self.previous_ops.load(Ordering::Relaxed),
                current.1 + self.previous_us.load(Ordering::Relaxed),
            )
        } else if seen + 1 == now {
            current
        } else {
            (0, 0)
        }
    }

    /// Counts the start of one operation of kind `command` at `now_ms` (wall clock), in
    /// window `window`.
    pub(crate) fn started(&self, command: usize, window: u64, now_ms: u64) {
        self.rotate(window);
        self.ops[command.min(OTHER)].fetch_add(1, Ordering::Relaxed);
        self.current_ops.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.last_used_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Counts the end of an operation counted by [`started`](Self::started).
    pub(crate) fn finished(&self, duration: Duration, failed: bool) {
        let us = duration.as_micros() as u64;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.total_us.fetch_add(us, Ordering::Relaxed);
        self.current_us.fetch_add(us, Ordering::Relaxed);
        self.latency[bucket(duration)].add(1);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds `other`'s totals to these (an entry forgotten, folded into the aggregate).
    fn absorb(&self, other: &DbUsage<impl Bucket>) {
        for (mine, theirs) in self.ops.iter().zip(&other.ops) {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        for (mine, theirs) in self.latency.iter().zip(&other.latency) {
            mine.add(theirs.get());
        }
        self.errors
            .fetch_add(other.errors.load(Ordering::Relaxed), Ordering::Relaxed);
        self.total_us
            .fetch_add(other.total_us.load(Ordering::Relaxed), Ordering::Relaxed);
        self.last_used_ms.fetch_max(
            other.last_used_ms.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn snapshot(&self, window: u64) -> UsageStats {
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
        let (recent_operations, recent_time_us) = self.recent(window);
        let total_time_us = self.total_us.load(Ordering::Relaxed);
        let latency = DurationHistogram {
            counts: std::array::from_fn(|i| self.latency[i].get()),
            sum_us: total_time_us,
        };
        UsageStats {
            database: self.name.to_string(),
            operations: self.ops.iter().map(|n| n.load(Ordering::Relaxed)).sum(),
            by_command,
            errors: self.errors.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            total_time_us,
            recent_operations,
            recent_time_us,
            p50_us: latency.quantile_us(0.50),
            p95_us: latency.quantile_us(0.95),
            p99_us: latency.quantile_us(0.99),
            last_used: (last > 0).then(|| UNIX_EPOCH + Duration::from_millis(last)),
            latency,
            generation: self.generation,
        }
    }
}

/// Usage of one database: [`Stats::usage`](crate::Stats::usage),
/// [`Stats::top_databases`](crate::Stats::top_databases).
///
/// Totals count since the database was last cached (a database forgotten for idleness starts
/// again from zero; its earlier totals are in [`OTHER_DATABASES`]). Percentiles come from a
/// histogram with one bucket per power of two of microseconds: each is the upper bound of its
/// bucket, never below the true value and less than twice it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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
    /// Operations started in this minute and the one before (see [`RECENT_WINDOW`]): what
    /// [`TopBy::Operations`] ranks by.
    pub recent_operations: u64,
    /// Time spent in operations that finished in this minute and the one before, in
    /// microseconds: what [`TopBy::Time`] ranks by.
    pub recent_time_us: u64,
    /// Median latency, in microseconds.
    pub p50_us: u64,
    /// 95th percentile, in microseconds.
    pub p95_us: u64,
    /// 99th percentile, in microseconds.
    pub p99_us: u64,
    /// When an operation last started.
    pub last_used: Option<SystemTime>,
    /// Latencies of the finished operations: the histogram the percentiles above are read
    /// from, its sum [`total_time_us`](Self::total_time_us). Its bounds are the same in every
    /// process, so the histograms of many databases or many instances add up (the metrics
    /// export it as `polymongo_db_command_duration_seconds`). `latency.count()` is the
    /// operations finished: [`operations`](Self::operations) minus
    /// [`in_flight`](Self::in_flight). A database's buckets count up to 2^32 operations each
    /// (4 bytes, carried by every cached database); the total's and
    /// [`OTHER_DATABASES`]'s up to 2^64.
    pub latency: DurationHistogram,
    /// Which counters these figures were read from (a database forgotten and counted again
    /// gets new ones).
    #[serde(skip)]
    pub(crate) generation: u64,
}

/// How [`Stats::top_databases`](crate::Stats::top_databases) ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopBy {
    /// Most operations recently.
    Operations,
    /// Most time spent in operations recently.
    Time,
}

/// The manager-wide side of usage analytics: the clock of the windows, the board of the
/// busiest databases, the aggregate of forgotten ones, and the grand total.
pub(crate) struct Usage {
    source: UsageAnalytics,
    board: Mutex<Vec<Arc<DbUsage>>>,
    capacity: usize,
    /// The quietest member's recent count while the board is full (0 otherwise): a database
    /// must pass it to enter.
    threshold: AtomicU64,
    other: DbUsage<AtomicU64>,
    total: DbUsage<AtomicU64>,
    /// The metrics' rows: baselines of the databases shown at the last scrape.
    metric_rows: MetricRows,
}

impl Usage {
    pub(crate) fn new(capacity: usize, source: UsageAnalytics) -> Self {
        Self {
            source,
            board: Mutex::new(Vec::new()),
            capacity,
            threshold: AtomicU64::new(0),
            other: DbUsage::new(OTHER_DATABASES),
            total: DbUsage::new("(all databases)"),
            metric_rows: MetricRows::default(),
        }
    }

    pub(crate) fn source(&self) -> UsageAnalytics {
        self.source
    }

    /// The current window's index.
    pub(crate) fn window(&self) -> u64 {
        Self::window_of(now_ms())
    }

    fn window_of(now_ms: u64) -> u64 {
        now_ms / RECENT_WINDOW.as_millis() as u64
    }

    fn board(&self) -> std::sync::MutexGuard<'_, Vec<Arc<DbUsage>>> {
        self.board.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts the start of an operation on `db` (and in the grand total).
    pub(crate) fn started(&self, db: &Arc<DbUsage>, command: usize) {
        // One clock read for both.
        let now = now_ms();
        let window = Self::window_of(now);
        db.started(command, window, now);
        self.total.started(command, window, now);
    }

    /// Counts the end of an operation on `db`, and offers `db` to the board.
    pub(crate) fn finished(&self, db: &Arc<DbUsage>, duration: Duration, failed: bool) {
        db.finished(duration, failed);
        self.total.finished(duration, failed);
        self.offer(db);
    }

    /// Counts the start of a command on a database that has no entry, in the aggregate.
    pub(crate) fn started_other(&self, command: usize) {
        let now = now_ms();
        let window = Self::window_of(now);
        self.other.started(command, window, now);
        self.total.started(command, window, now);
    }

    /// Counts the end of a command counted by [`started_other`](Self::started_other).
    pub(crate) fn finished_other(&self, duration: Duration, failed: bool) {
        self.other.finished(duration, failed);
        self.total.finished(duration, failed);
    }

    /// Puts `db` on the board if it is busier now than the quietest member.
    fn offer(&self, db: &Arc<DbUsage>) {
        if db.on_board.load(Ordering::Relaxed) {
            return;
        }
        let window = self.window();
        let recent = db.recent(window).0;
        if recent <= self.threshold.load(Ordering::Relaxed) {
            return;
        }
        let mut board = self.board();
        if db.on_board.load(Ordering::Relaxed) || db.gone.load(Ordering::Relaxed) {
            return;
        }
        board.retain(|m| !m.gone.load(Ordering::Relaxed));
        if board.len() < self.capacity {
            db.on_board.store(true, Ordering::Relaxed);
            board.push(Arc::clone(db));
        } else {
            let Some((quietest, count)) = board
                .iter()
                .enumerate()
                .map(|(i, m)| (i, m.recent(window).0))
                .min_by_key(|(_, c)| *c)
            else {
                return;
            };
            if recent <= count {
                self.threshold.store(count, Ordering::Relaxed);
                return;
            }
            board[quietest].on_board.store(false, Ordering::Relaxed);
            db.on_board.store(true, Ordering::Relaxed);
            board[quietest] = Arc::clone(db);
        }
        self.set_threshold(&board, window);
    }

    fn set_threshold(&self, board: &[Arc<DbUsage>], window: u64) {
        let threshold = if board.len() < self.capacity {
            0
        } else {
            board.iter().map(|m| m.recent(window).0).min().unwrap_or(0)
        };
        self.threshold.store(threshold, Ordering::Relaxed);
    }

    /// Forgets members whose entry is gone and lowers the entry bar as windows pass (the
    /// members' recent counts fall): called by the housekeeping pass. O(board).
    pub(crate) fn refresh(&self) {
        let window = self.window();
        let mut board = self.board();
        board.retain(|m| !m.gone.load(Ordering::Relaxed));
        self.set_threshold(&board, window);
    }

    /// An entry is dropped: its figures join the aggregate and it leaves the board.
    pub(crate) fn forget(&self, db: &DbUsage) {
        db.gone.store(true, Ordering::Relaxed);
        self.other.absorb(db);
    }

    /// The aggregate of forgotten databases.
    pub(crate) fn other_stats(&self) -> UsageStats {
        self.other.snapshot(self.window())
    }

    /// Figures of every database, summed.
    pub(crate) fn total_stats(&self) -> UsageStats {
        self.total.snapshot(self.window())
    }

    /// The metrics' rows: the `n` busiest databases, each counted from when the metrics
    /// first showed it, then the rest (see [`MetricRows`]).
    pub(crate) fn metric_rows(&self, n: usize) -> Vec<UsageStats> {
        let busiest = self.top(n, TopBy::Operations);
        // Read after the rows: the total is then rather ahead of them than behind.
        let total = self.total_stats();
        self.metric_rows.rows(busiest, total)
    }

    /// The `n` busiest databases on the board now. Ranked on the two recent counters first,
    /// so only the `n` returned are snapshotted: O(board) atomic loads plus O(n) snapshots.
    pub(crate) fn top(&self, n: usize, by: TopBy) -> Vec<UsageStats> {
        let window = self.window();
        // Ranked by position, and only the first n counters are cloned: an `Arc` clone and
        // drop per ranked database (up to `max_tracked_databases`, scattered in memory) were
        // most of the cost.
        let mut ranked: Vec<((u64, u64), Arc<DbUsage>)> = {
            let board = self.board();
            let mut keys: Vec<((u64, u64), usize)> = board
                .iter()
                .enumerate()
                .filter(|(_, m)| !m.gone.load(Ordering::Relaxed))
                .map(|(i, m)| {
                    let (ops, us) = m.recent(window);
                    let key = match by {
                        TopBy::Operations => (ops, us),
                        TopBy::Time => (us, ops),
                    };
                    (key, i)
                })
                .collect();
            let n = n.min(keys.len());
            if n < keys.len() {
                keys.select_nth_unstable_by_key(n, |(key, _)| std::cmp::Reverse(*key));
            }
            // A database re-routed while a handle still holds its old entry has two sets of
            // counters on the board under one name: listed twice, the metrics would write
            // two series with the same labels, which Prometheus refuses for the whole
            // scrape. The busier is listed; the other's figures stay in the total, so the
            // metrics sum them under `(other databases)`. Rare, so the ranking above stays a
            // selection and only a duplicate costs a full sort.
            let mut names = std::collections::HashSet::with_capacity(n);
            if !keys[..n]
                .iter()
                .all(|(_, i)| names.insert(&*board[*i].name))
            {
                keys.sort_unstable_by_key(|(key, _)| std::cmp::Reverse(*key));
                names.clear();
                keys.retain(|(_, i)| names.insert(&*board[*i].name));
            }
            keys.truncate(n);
            keys.into_iter()
                .map(|(key, i)| (key, Arc::clone(&board[i])))
                .collect()
        };
        ranked.sort_unstable_by_key(|(key, _)| std::cmp::Reverse(*key));
        ranked
            .iter()
            .map(|(_, m)| m.snapshot(window))
            .filter(|u| u.operations > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_newly_busy_database_displaces_a_quiet_one() {
        let usage = Usage::new(3, UsageAnalytics::Operations);
        let quiet: Vec<Arc<DbUsage>> = (0..10)
            .map(|i| Arc::new(DbUsage::new(&format!("quiet{i}"))))
            .collect();
        for q in &quiet {
            usage.started(q, 0);
            usage.finished(q, Duration::from_micros(10), false);
        }
        let busy = Arc::new(DbUsage::new("busy"));
        for _ in 0..5 {
            usage.started(&busy, 0);
            usage.finished(&busy, Duration::from_micros(10), false);
        }
        let top = usage.top(3, TopBy::Operations);
        assert_eq!(top.len(), 3);
        assert_eq!(top[0].database, "busy", "{top:?}");
        assert_eq!(top[0].recent_operations, 5);
        usage.forget(&busy);
        assert!(usage
            .top(3, TopBy::Operations)
            .iter()
            .all(|u| u.database != "busy"));
        assert_eq!(
            usage.other_stats().operations,
            5,
            "its totals moved to the aggregate"
        );
        assert_eq!(usage.total_stats().operations, 15);
    }

    /// The manager-wide aggregates count every database's operations, so a bucket of theirs
    /// passes 2^32 after some days of a busy service: it must go on counting (the
    /// `(other databases)` latency series and `latency.count()` of the total are read from
    /// them), not wrap to a small number.
    #[test]
    fn the_aggregates_latency_buckets_count_past_u32() {
        let usage = Usage::new(3, UsageAnalytics::Operations);
        usage.total.latency[7].add(u64::from(u32::MAX));
        usage.other.latency[7].add(u64::from(u32::MAX));
        let db = Arc::new(DbUsage::new("busy"));
        usage.started(&db, 0);
        usage.finished(&db, Duration::from_micros(100), false);
        assert_eq!(usage.total_stats().latency.counts[7], 1 << 32);
        usage.forget(&db);
        assert_eq!(usage.other_stats().latency.counts[7], 1 << 32);
    }

    #[test]
    fn recent_counts_age_out() {
        let u: DbUsage = DbUsage::new("x");
        u.started(0, 7, 1);
        u.finished(Duration::from_micros(5), false);
        assert_eq!(u.recent(7), (1, 5));
        assert_eq!(u.recent(8), (1, 5), "the last window still counts");
        assert_eq!(u.recent(9), (0, 0), "two windows on, nothing is recent");
        u.started(0, 9, 2);
        assert_eq!(u.recent(9).0, 1);
        assert_eq!(u.snapshot(9).operations, 2, "totals never age");
    }

    #[test]
    fn percentiles_follow_the_distribution() {
        let u: DbUsage = DbUsage::new("x");
        for _ in 0..90 {
            u.in_flight.fetch_add(1, Ordering::Relaxed);
            u.finished(Duration::from_micros(100), false);
        }
        for _ in 0..10 {
            u.in_flight.fetch_add(1, Ordering::Relaxed);
            u.finished(Duration::from_millis(10), true);
        }
        let s = u.snapshot(0);
        assert_eq!(s.p50_us, 128, "{s:?}");
        assert_eq!(s.p95_us, 16_384, "{s:?}");
        assert_eq!(s.errors, 10);
        assert_eq!(s.in_flight, 0);
        assert_eq!(s.latency.count(), 100);
        assert_eq!(s.latency.sum_us, s.total_time_us);
        assert_eq!(s.latency.counts[7], 90, "100 µs: (64, 128]");
        assert_eq!(s.latency.counts[14], 10, "10 ms: (8 192, 16 384]");
    }
}
