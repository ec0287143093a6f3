//! The figures document: one manager's pools and its busiest, most erroring and slowest
//! databases now, as a small versioned snapshot ([`Figures`]) that a service serves as JSON
//! (`polymongo_axum::figures`) and `polymongo top --app` reads back with this same type.
//!
//! Taking one is synchronous and makes no round trip: it reads the pools' figures (as
//! [`Stats::general`](crate::Stats::general), without the database names) and the usage board
//! (as [`Stats::top_databases`](crate::Stats::top_databases)). Its size is bounded whatever the
//! number of databases: every pool (their number is bounded by the configuration), and at most
//! [`FIGURES_MAX_TENANTS`] databases.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::features::stats::{PoolInfo, Stats};
use crate::pool::cluster::{ConnectionState, PoolKind};
use crate::pool::histogram::DurationHistogram;
use crate::registry::usage::{TopBy, UsageStats};

/// The schema version [`Figures::take`] writes. Fields may be added within a version (readers
/// ignore fields they do not know); a change that removes or redefines a field takes a new
/// version.
pub const FIGURES_VERSION: u32 = 1;

/// Databases per ranking in a [`Figures`] document: the busiest by recent operations, the most
/// erroring, the slowest — at most this many each.
pub const FIGURES_TOP: usize = 10;

/// At most this many databases in [`Figures::tenants`]: the three rankings of [`FIGURES_TOP`],
/// a database listed once whatever the number of rankings it is in.
pub const FIGURES_MAX_TENANTS: usize = 3 * FIGURES_TOP;

/// The errors and latency rankings are made among at most this many of the busiest databases
/// by recent operations and this many by recent time spent (the usage board ranks by those two
/// only), so a document costs O(this) snapshots, not O(databases).
pub const FIGURES_CANDIDATES: usize = 200;

/// One manager's figures now: [`Figures::take`]. Serialised as a JSON object with these
/// field names; durations in microseconds (`_us`) or milliseconds (`_ms`), times in
/// milliseconds since the Unix epoch.
///
/// Nothing secret is in it: pool labels have their passwords redacted, and no configuration
/// or error text is included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Figures {
    /// The schema version: [`FIGURES_VERSION`].
    pub version: u32,
    /// The instance that answered: the manager's `app_name` when it has one, else
    /// `pid:<process id>`.
    pub instance: String,
    /// The process id of the instance.
    pub pid: u32,
    /// When the figures were taken, in milliseconds since the Unix epoch.
    pub taken_at_ms: u64,
    /// Every pool: the main cluster's first, then the other clusters', then dedicated pools.
    pub pools: Vec<FiguresPool>,
    /// At most [`FIGURES_MAX_TENANTS`] databases: the [`FIGURES_TOP`] busiest by recent
    /// operations, the [`FIGURES_TOP`] with the most errors and the [`FIGURES_TOP`] slowest
    /// by recent mean latency, each listed once (busiest first). Empty when usage analytics
    /// are off.
    pub tenants: Vec<FiguresTenant>,
    /// Manager-wide figures.
    pub general: FiguresGeneral,
}

/// One pool in [`Figures`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FiguresPool {
    /// The cluster's URI, password redacted (dedicated pools add the database's name), with
    /// ` (#2)`, ` (#3)` … after it when the manager has clusters that differ only in a secret.
    pub cluster: String,
    /// `shared` or `dedicated`.
    pub kind: String,
    /// `disconnected`, `connecting`, `connected` or `disconnecting`.
    pub state: String,
    /// Connections the pool holds (idle and checked out).
    pub connections: i64,
    /// Of those, checked out by operations now.
    pub in_use: i64,
    /// Operations waiting now for one of the pool's connections.
    pub wait_queue: i64,
    /// The pool's maximum size.
    pub max_size: u32,
    /// Connections checked out since the pool was made.
    pub checkouts: u64,
    /// Checkouts that failed since the pool was made.
    pub checkout_failures: u64,
    /// Longest time a checkout waited, in microseconds.
    pub checkout_wait_max_us: u64,
    /// Times the driver cleared the pool after an error.
    pub pool_clears: u64,
    /// Databases cached on this pool now.
    pub databases: usize,
}

/// One database in [`Figures::tenants`]: its [`UsageStats`] without the by-command split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FiguresTenant {
    /// The database.
    pub database: String,
    /// Why it is listed: `operations`, `errors`, `latency` (one or more).
    pub ranked: Vec<String>,
    /// Operations since the database was cached (see [`UsageStats::operations`]).
    pub operations: u64,
    /// Of those, failed.
    pub errors: u64,
    /// Started and not yet finished.
    pub in_flight: u64,
    /// Time spent in finished operations, in microseconds.
    pub total_time_us: u64,
    /// Operations started in this minute and the one before.
    pub recent_operations: u64,
    /// Time spent in operations that finished in this minute and the one before, in
    /// microseconds.
    pub recent_time_us: u64,
    /// Median latency, in microseconds (an upper bound, less than twice the true value).
    pub p50_us: u64,
    /// 95th percentile, in microseconds.
    pub p95_us: u64,
    /// 99th percentile, in microseconds.
    pub p99_us: u64,
    /// When an operation last started, in milliseconds since the Unix epoch.
    pub last_used_ms: Option<u64>,
    /// Latencies of its finished operations ([`UsageStats::latency`]): fixed buckets, so
    /// several instances' histograms add up to the fleet's (and two polls' difference is the
    /// latency between them). Absent from a figures document of an older instance.
    #[serde(default)]
    pub latency: DurationHistogram,
}

/// Manager-wide figures in [`Figures`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FiguresGeneral {
    /// Pools with a client open now.
    pub total_active_pools: usize,
    /// Pooled connections across every pool.
    pub total_connections: i64,
    /// Databases cached now.
    pub databases_in_use: usize,
    /// Managed change streams open now.
    pub change_streams: usize,
    /// Whether usage analytics are on (`tenants` and `usage` are empty without them).
    pub usage_analytics: bool,
    /// Every database's usage summed, forgotten ones included (`None` without usage
    /// analytics): `operations`, `errors`, `in_flight`, `total_time_us`, `recent_*`.
    pub usage: Option<FiguresTenant>,
}

fn ms_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn kind_name(kind: PoolKind) -> &'static str {
    match kind {
        PoolKind::Shared => "shared",
        PoolKind::Dedicated => "dedicated",
    }
}

fn state_name(state: ConnectionState) -> &'static str {
    match state {
        ConnectionState::Disconnected => "disconnected",
        ConnectionState::Connecting => "connecting",
        ConnectionState::Connected => "connected",
        ConnectionState::Disconnecting => "disconnecting",
    }
}

impl From<&PoolInfo> for FiguresPool {
    fn from(p: &PoolInfo) -> Self {
        FiguresPool {
            cluster: p.cluster.clone(),
            kind: kind_name(p.kind).to_owned(),
            state: state_name(p.state).to_owned(),
            connections: p.stats.total,
            in_use: p.stats.in_use,
            wait_queue: p.stats.wait_queue,
            max_size: p.stats.max_size,
            checkouts: p.stats.checkouts,
            checkout_failures: p.stats.checkout_failures,
            checkout_wait_max_us: p.stats.checkout_wait_max_us,
            pool_clears: p.stats.pool_clears,
            databases: p.database_count,
        }
    }
}

impl From<&UsageStats> for FiguresTenant {
    fn from(u: &UsageStats) -> Self {
        FiguresTenant {
            database: u.database.clone(),
            ranked: Vec::new(),
            operations: u.operations,
            errors: u.errors,
            in_flight: u.in_flight,
            total_time_us: u.total_time_us,
            recent_operations: u.recent_operations,
            recent_time_us: u.recent_time_us,
            p50_us: u.p50_us,
            p95_us: u.p95_us,
            p99_us: u.p99_us,
            last_used_ms: u.last_used.map(ms_since_epoch),
            latency: u.latency.clone(),
        }
    }
}

impl FiguresTenant {
    /// Mean latency of the recent operations, in microseconds (0 without any).
    pub fn recent_mean_us(&self) -> u64 {
        self.recent_time_us
            .checked_div(self.recent_operations)
            .unwrap_or(0)
    }
}

impl Figures {
    /// The figures of `stats` now, of the instance named `app_name` (else by its process id):
    /// what the facade's `Figures::take(&poly)` gives.
    pub(crate) fn of(stats: &Stats<'_>, app_name: Option<&str>) -> Figures {
        let general = stats.general_with(false);
        let pools: Vec<FiguresPool> = std::iter::once(&general.primary)
            .chain(&general.other_clusters)
            .chain(&general.dedicated)
            .map(FiguresPool::from)
            .collect();
        let usage = stats.total_usage();
        let tenants = if usage.is_some() {
            let by_ops = stats.top_databases(FIGURES_CANDIDATES, TopBy::Operations);
            let by_time = stats.top_databases(FIGURES_CANDIDATES, TopBy::Time);
            rank(by_ops, by_time)
        } else {
            Vec::new()
        };
        Figures {
            version: FIGURES_VERSION,
            instance: app_name.map_or_else(|| format!("pid:{}", std::process::id()), str::to_owned),
            pid: std::process::id(),
            taken_at_ms: ms_since_epoch(SystemTime::now()),
            pools,
            tenants,
            general: FiguresGeneral {
                total_active_pools: general.total_active_pools,
                total_connections: general.total_connections_across_pools,
                databases_in_use: general.databases_in_use,
                change_streams: general.change_streams,
                usage_analytics: usage.is_some(),
                usage: usage.as_ref().map(FiguresTenant::from),
            },
        }
    }
}

/// The three rankings over the candidates (the busiest by operations, in order, then those by
/// time not already seen), merged: each database once, busiest first, then the erroring and
/// slow ones not among them.
fn rank(by_ops: Vec<UsageStats>, by_time: Vec<UsageStats>) -> Vec<FiguresTenant> {
    let busy = by_ops.len();
    rank_tenants(by_ops.iter().chain(&by_time).map(FiguresTenant::from), busy)
}

/// [`rank`] over candidates already converted: the first `busy` are the busiest by
/// operations, in order.
fn rank_tenants(all: impl Iterator<Item = FiguresTenant>, busy: usize) -> Vec<FiguresTenant> {
    let mut candidates: Vec<FiguresTenant> = Vec::new();
    let mut seen = BTreeMap::new();
    let mut busy_kept = 0;
    for (n, t) in all.enumerate() {
        if seen.insert(t.database.clone(), candidates.len()).is_none() {
            candidates.push(t);
            if n < busy {
                busy_kept = candidates.len();
            }
        }
    }
    // Positions in `candidates`, each ranking in its order.
    let busiest: Vec<usize> = (0..busy_kept)
        .filter(|&i| candidates[i].recent_operations > 0)
        .take(FIGURES_TOP)
        .collect();
    let mut erroring: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].errors > 0)
        .collect();
    erroring.sort_by_key(|&i| {
        std::cmp::Reverse((candidates[i].errors, candidates[i].recent_operations))
    });
    erroring.truncate(FIGURES_TOP);
    let mut slowest: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].recent_operations > 0)
        .collect();
    slowest.sort_by_key(|&i| {
        std::cmp::Reverse((candidates[i].recent_mean_us(), candidates[i].p99_us))
    });
    slowest.truncate(FIGURES_TOP);
    let mut order: Vec<usize> = Vec::new();
    for (why, list) in [
        ("operations", &busiest),
        ("errors", &erroring),
        ("latency", &slowest),
    ] {
        for &i in list {
            if !order.contains(&i) {
                order.push(i);
            }
            candidates[i].ranked.push(why.to_owned());
        }
    }
    order
        .into_iter()
        .map(|i| std::mem::replace(&mut candidates[i], placeholder()))
        .collect()
}

fn placeholder() -> FiguresTenant {
    FiguresTenant {
        database: String::new(),
        ranked: Vec::new(),
        operations: 0,
        errors: 0,
        in_flight: 0,
        total_time_us: 0,
        recent_operations: 0,
        recent_time_us: 0,
        p50_us: 0,
        p95_us: 0,
        p99_us: 0,
        last_used_ms: None,
        latency: DurationHistogram::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(name: &str, recent: u64, errors: u64, recent_time_us: u64) -> FiguresTenant {
        FiguresTenant {
            database: name.to_owned(),
            operations: recent + 100,
            errors,
            total_time_us: recent_time_us,
            recent_operations: recent,
            recent_time_us,
            p99_us: 1,
            ..placeholder()
        }
    }

    #[test]
    fn rankings_are_bounded_and_each_database_is_listed_once() {
        // 300 databases; db0 the busiest, the last ones erroring, some slow.
        let by_ops: Vec<FiguresTenant> = (0..FIGURES_CANDIDATES as u64)
            .map(|i| {
                let recent = 1_000 - i;
                let errors = if i >= 190 { i } else { 0 };
                let time = if i % 50 == 7 {
                    recent * 10_000
                } else {
                    recent * 10
                };
                usage(&format!("db{i}"), recent, errors, time)
            })
            .collect();
        let by_time: Vec<FiguresTenant> = by_ops.iter().rev().take(20).cloned().collect();
        let busy = by_ops.len();
        let tenants = rank_tenants(by_ops.into_iter().chain(by_time), busy);
        assert!(tenants.len() <= FIGURES_MAX_TENANTS, "{}", tenants.len());
        let names: Vec<&str> = tenants.iter().map(|t| t.database.as_str()).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert_eq!(names[0], "db0");
        assert_eq!(tenants[0].ranked[0], "operations");
        // The most erroring first in its ranking, and the slow ones (mean 10 ms) listed.
        let db199 = tenants.iter().find(|t| t.database == "db199").unwrap();
        assert_eq!(db199.ranked, ["errors"]);
        for slow in ["db7", "db57", "db107", "db157"] {
            let t = tenants.iter().find(|t| t.database == slow).unwrap();
            assert!(t.ranked.contains(&"latency".to_owned()), "{t:?}");
        }
    }

    #[test]
    fn the_document_round_trips_through_json() {
        let tenants = rank_tenants(std::iter::once(usage("a", 5, 1, 50)), 1);
        let figures = Figures {
            version: FIGURES_VERSION,
            instance: "pid:1".to_owned(),
            pid: 1,
            taken_at_ms: 2,
            pools: Vec::new(),
            general: FiguresGeneral {
                total_active_pools: 0,
                total_connections: 0,
                databases_in_use: 1,
                change_streams: 0,
                usage_analytics: true,
                usage: tenants.first().cloned(),
            },
            tenants,
        };
        let text = serde_json::to_string(&figures).unwrap();
        assert!(text.starts_with(r#"{"version":1,"#), "{text}");
        let back: Figures = serde_json::from_str(&text).unwrap();
        assert_eq!(back, figures);
        assert_eq!(
            back.tenants[0].ranked,
            ["operations", "errors", "latency"],
            "{text}"
        );
    }
}
