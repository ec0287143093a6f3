//! Merging one poll's figures documents: pools summed per cluster, tenants merged by name,
//! rates from the previous poll, and the three rankings.

use std::collections::{BTreeMap, HashMap};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use polymongo::{DurationHistogram, Figures, FiguresPool, FiguresTenant};
use serde::Serialize;

use super::AppUrl;

/// Tenants shown per ranking.
pub const SHOWN: usize = 10;

/// One instance in an [`AppsSnapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct InstanceView {
    /// The `--app` URL.
    pub url: String,
    /// `up` or `down`.
    pub status: &'static str,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its name (`Figures::instance`), when up.
    pub instance: Option<String>,
    /// Its process id, when up.
    pub pid: Option<u32>,
    /// When its figures were taken, in milliseconds since the Unix epoch.
    pub taken_at_ms: Option<u64>,
    /// Databases cached on it now.
    pub databases_in_use: usize,
    /// Operations counted on it (all databases).
    pub operations: u64,
    /// Its operations per second since the last poll (`None` on the first poll of it).
    pub ops_per_s: Option<f64>,
    /// Its pools.
    pub pools: Vec<FiguresPool>,
}

/// One cluster's pools summed over the instances that have one.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterPools {
    /// The cluster (password redacted).
    pub cluster: String,
    /// `shared` or `dedicated`.
    pub kind: String,
    /// Instances with such a pool.
    pub instances: usize,
    /// Connections open.
    pub connections: i64,
    /// Of those, checked out now.
    pub in_use: i64,
    /// The pools' sizes, summed.
    pub max_size: u64,
    /// Operations waiting for a connection now.
    pub wait_queue: i64,
    /// Checkouts that failed.
    pub checkout_failures: u64,
}

/// One tenant (database) merged over the instances that list it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TenantView {
    /// The database.
    pub database: String,
    /// Instances listing it in this poll.
    pub instances: usize,
    /// Operations, summed.
    pub operations: u64,
    /// Errors, summed.
    pub errors: u64,
    /// In flight now, summed.
    pub in_flight: u64,
    /// Operations in the instances' recent windows (this minute and the last), summed.
    pub recent_operations: u64,
    /// Time spent in them, in microseconds, summed.
    pub recent_time_us: u64,
    /// Operations per second since the last poll (`None` when no instance listed it then).
    pub ops_per_s: Option<f64>,
    /// Errors per second since the last poll.
    pub errors_per_s: Option<f64>,
    /// Mean latency of the operations since the last poll, in microseconds.
    pub latency_now_us: Option<u64>,
    /// Mean latency of the recent windows, in microseconds.
    pub recent_mean_us: u64,
    /// The 99th percentile of every instance's operations together, in microseconds: the
    /// upper bound of its bucket in the instances' latency histograms added up (when no
    /// instance sends a histogram, the highest instance's own figure).
    pub p99_us: u64,
    /// The 99th percentile of the operations finished since the last poll, the same way.
    pub p99_now_us: Option<u64>,
    /// The instances' latency histograms added up.
    #[serde(skip)]
    latency: DurationHistogram,
}

/// Every instance's figures merged: one poll. `--json` prints one per line.
#[derive(Debug, Clone, Serialize)]
pub struct AppsSnapshot {
    /// When the poll ended, in milliseconds since the Unix epoch.
    pub taken_at_ms: u64,
    /// Seconds since the previous poll (`None` on the first: no rates yet).
    pub interval_s: Option<f64>,
    /// Instances that answered.
    pub up: usize,
    /// Instances that did not (or answered something else than figures).
    pub down: usize,
    /// Every instance, in the order given.
    pub instances: Vec<InstanceView>,
    /// Pools summed per cluster and kind over the instances.
    pub pools: Vec<ClusterPools>,
    /// Every tenant any instance listed, merged by name, busiest first.
    pub tenants: Vec<TenantView>,
    /// The busiest tenants now (by operations per second; on the first poll by recent
    /// operations), at most [`SHOWN`].
    pub busiest: Vec<String>,
    /// The slowest now (by mean latency since the last poll; on the first poll of the recent
    /// windows).
    pub slowest: Vec<String>,
    /// The most erroring now (by errors per second; on the first poll by errors).
    pub erroring: Vec<String>,
}

impl AppsSnapshot {
    /// The merged tenant `name`.
    pub fn tenant(&self, name: &str) -> Option<&TenantView> {
        self.tenants.iter().find(|t| t.database == name)
    }
}

/// What is kept from one poll to the next: each instance's counters (by its place in the
/// `--app` list, which is the same at every poll), and when the poll ended.
#[derive(Default)]
pub(super) struct Merger {
    previous: HashMap<usize, Sample>,
    last_poll: Option<Instant>,
}

impl Merger {
    /// Merges one poll's answers (in the order of `apps`) into a snapshot, with rates from
    /// the previous poll.
    pub(super) fn merge(
        &mut self,
        apps: &[AppUrl],
        answers: Vec<Result<Figures, String>>,
    ) -> AppsSnapshot {
        let snapshot = aggregate(apps, answers, &mut self.previous, self.last_poll);
        self.last_poll = Some(Instant::now());
        snapshot
    }
}

/// What one poll of one instance left for the next: its counters by tenant.
struct Sample {
    at: Instant,
    total_ops: u64,
    tenants: HashMap<String, Counters>,
}

/// One tenant's counters on one instance (or their growth between two polls).
#[derive(Default)]
struct Counters {
    operations: u64,
    errors: u64,
    time_us: u64,
    latency: DurationHistogram,
}

impl Counters {
    fn of(t: &FiguresTenant) -> Self {
        Counters {
            operations: t.operations,
            errors: t.errors,
            time_us: t.total_time_us,
            latency: t.latency.clone(),
        }
    }

    /// The growth from `before` to `self`; counters that went back (the database was
    /// forgotten and cached again) count from zero.
    fn since(&self, before: &Counters) -> Counters {
        let restarted = self.operations < before.operations;
        Counters {
            operations: delta(self.operations, before.operations),
            errors: delta(self.errors, before.errors),
            time_us: delta(self.time_us, before.time_us),
            latency: if restarted {
                self.latency.clone()
            } else {
                self.latency.saturating_sub(&before.latency)
            },
        }
    }

    /// Saturating: the counters are what instances sent, and two of them may be huge.
    fn add(&mut self, other: &Counters) {
        self.operations = self.operations.saturating_add(other.operations);
        self.errors = self.errors.saturating_add(other.errors);
        self.time_us = self.time_us.saturating_add(other.time_us);
        self.latency.add(&other.latency);
    }
}

/// Differences of a counter that may restart from zero (a database forgotten and cached
/// again): a smaller value counts from zero.
fn delta(now: u64, before: u64) -> u64 {
    if now >= before {
        now - before
    } else {
        now
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Merges the instances' answers of one poll, with the previous poll's samples for the
/// rates (updated for the next).
fn aggregate(
    apps: &[AppUrl],
    answers: Vec<Result<Figures, String>>,
    previous: &mut HashMap<usize, Sample>,
    last_poll: Option<Instant>,
) -> AppsSnapshot {
    let now = Instant::now();
    let mut instances = Vec::new();
    let mut pools: BTreeMap<(String, String), ClusterPools> = BTreeMap::new();
    let mut tenants: BTreeMap<String, TenantView> = BTreeMap::new();
    // Per tenant: the deltas of the instances that had a previous sample of it.
    let mut deltas: HashMap<String, Counters> = HashMap::new();
    let (mut up, mut down) = (0, 0);
    for (place, (app, answer)) in apps.iter().zip(answers).enumerate() {
        let figures = match answer {
            Ok(f) => f,
            Err(error) => {
                down += 1;
                previous.remove(&place);
                instances.push(InstanceView {
                    url: app.shown.clone(),
                    status: "down",
                    error: Some(error),
                    instance: None,
                    pid: None,
                    taken_at_ms: None,
                    databases_in_use: 0,
                    operations: 0,
                    ops_per_s: None,
                    pools: Vec::new(),
                });
                continue;
            }
        };
        up += 1;
        let before = previous.get(&place);
        let secs = before.map(|b| now.duration_since(b.at).as_secs_f64().max(1e-3));
        let total_ops = figures.general.usage.as_ref().map_or(0, |u| u.operations);
        for p in &figures.pools {
            let sum = pools
                .entry((p.cluster.clone(), p.kind.clone()))
                .or_insert_with(|| ClusterPools {
                    cluster: p.cluster.clone(),
                    kind: p.kind.clone(),
                    ..ClusterPools::default()
                });
            // Every figure here is what an instance sent: sums saturate, never wrap or panic.
            sum.instances += 1;
            sum.connections = sum.connections.saturating_add(p.connections);
            sum.in_use = sum.in_use.saturating_add(p.in_use);
            sum.max_size = sum.max_size.saturating_add(u64::from(p.max_size));
            sum.wait_queue = sum.wait_queue.saturating_add(p.wait_queue);
            sum.checkout_failures = sum.checkout_failures.saturating_add(p.checkout_failures);
        }
        let mut sample = Sample {
            at: now,
            total_ops,
            tenants: HashMap::new(),
        };
        for t in &figures.tenants {
            let view = tenants
                .entry(t.database.clone())
                .or_insert_with(|| TenantView {
                    database: t.database.clone(),
                    ..TenantView::default()
                });
            view.instances += 1;
            view.operations = view.operations.saturating_add(t.operations);
            view.errors = view.errors.saturating_add(t.errors);
            view.in_flight = view.in_flight.saturating_add(t.in_flight);
            view.recent_operations = view.recent_operations.saturating_add(t.recent_operations);
            view.recent_time_us = view.recent_time_us.saturating_add(t.recent_time_us);
            view.p99_us = view.p99_us.max(t.p99_us);
            view.latency.add(&t.latency);
            let counters = Counters::of(t);
            if let Some(was) = before.and_then(|b| b.tenants.get(&t.database)) {
                deltas
                    .entry(t.database.clone())
                    .or_default()
                    .add(&counters.since(was));
            }
            sample.tenants.insert(t.database.clone(), counters);
        }
        let ops_per_s = match (before, secs) {
            (Some(b), Some(secs)) => Some(delta(total_ops, b.total_ops) as f64 / secs),
            _ => None,
        };
        instances.push(InstanceView {
            url: app.shown.clone(),
            status: "up",
            error: None,
            instance: Some(figures.instance.clone()),
            pid: Some(figures.pid),
            taken_at_ms: Some(figures.taken_at_ms),
            databases_in_use: figures.general.databases_in_use,
            operations: total_ops,
            ops_per_s,
            pools: figures.pools,
        });
        previous.insert(place, sample);
    }
    let interval_s = last_poll.map(|at| now.duration_since(at).as_secs_f64());
    let mut tenants: Vec<TenantView> = tenants.into_values().collect();
    for t in &mut tenants {
        t.recent_mean_us = t
            .recent_time_us
            .checked_div(t.recent_operations)
            .unwrap_or(0);
        // Instances that send histograms: the percentile of all their operations together.
        if t.latency.count() > 0 {
            t.p99_us = t.latency.quantile_us(0.99);
        }
        if let Some(d) = deltas.remove(&t.database) {
            // The instances are polled together: one interval for all.
            let secs = interval_s.unwrap_or(1.0).max(1e-3);
            t.ops_per_s = Some(d.operations as f64 / secs);
            t.errors_per_s = Some(d.errors as f64 / secs);
            t.latency_now_us = d.time_us.checked_div(d.operations);
            t.p99_now_us = (d.latency.count() > 0).then(|| d.latency.quantile_us(0.99));
        }
    }
    let rates = interval_s.is_some();
    let by = |key: &dyn Fn(&TenantView) -> (f64, f64), keep: &dyn Fn(&TenantView) -> bool| {
        let mut list: Vec<&TenantView> = tenants.iter().filter(|t| keep(t)).collect();
        list.sort_by(|a, b| {
            key(b)
                .partial_cmp(&key(a))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| a.database.cmp(&b.database))
        });
        list.into_iter()
            .take(SHOWN)
            .map(|t| t.database.clone())
            .collect::<Vec<String>>()
    };
    let busiest = if rates {
        by(
            &|t| (t.ops_per_s.unwrap_or(0.0), t.recent_operations as f64),
            &|t| t.ops_per_s.unwrap_or(0.0) > 0.0 || t.in_flight > 0,
        )
    } else {
        by(&|t| (t.recent_operations as f64, 0.0), &|t| {
            t.recent_operations > 0
        })
    };
    let slowest = if rates {
        by(
            &|t| (t.latency_now_us.unwrap_or(0) as f64, t.p99_us as f64),
            &|t| t.latency_now_us.is_some(),
        )
    } else {
        by(&|t| (t.recent_mean_us as f64, t.p99_us as f64), &|t| {
            t.recent_operations > 0
        })
    };
    let erroring = if rates {
        by(
            &|t| (t.errors_per_s.unwrap_or(0.0), t.errors as f64),
            &|t| t.errors_per_s.unwrap_or(0.0) > 0.0,
        )
    } else {
        by(&|t| (t.errors as f64, 0.0), &|t| t.errors > 0)
    };
    // Busiest first, then the rest by recent operations.
    tenants.sort_by(|a, b| {
        let rank = |t: &TenantView| busiest.iter().position(|n| *n == t.database);
        match (rank(a), rank(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => b
                .recent_operations
                .cmp(&a.recent_operations)
                .then_with(|| a.database.cmp(&b.database)),
        }
    });
    AppsSnapshot {
        taken_at_ms: now_ms(),
        interval_s,
        up,
        down,
        instances,
        pools: pools.into_values().collect(),
        tenants,
        busiest,
        slowest,
        erroring,
    }
}

#[cfg(test)]
/// A figures document whose every counter is `n` (`wide` for the signed pool figures).
pub(super) fn figures_with(n: u64, wide: i64) -> Figures {
    let tenant = serde_json::json!({
        "database": "t1", "ranked": ["operations"], "operations": n, "errors": n,
        "in_flight": n, "total_time_us": n, "recent_operations": n, "recent_time_us": n,
        "p50_us": n, "p95_us": n, "p99_us": n, "last_used_ms": null,
        "latency": { "counts": vec![n; polymongo::DURATION_BUCKETS], "sum_us": n },
    });
    serde_json::from_value(serde_json::json!({
        "version": polymongo::FIGURES_VERSION, "instance": "app", "pid": 1,
        "taken_at_ms": n,
        "pools": [{
            "cluster": "mongodb://h/", "kind": "shared", "state": "connected",
            "connections": wide, "in_use": wide, "wait_queue": wide,
            "max_size": u32::MAX, "checkouts": n, "checkout_failures": n,
            "checkout_wait_max_us": n, "pool_clears": n, "databases": 1,
        }],
        "tenants": [tenant],
        "general": {
            "total_active_pools": 1, "total_connections": wide, "databases_in_use": 1,
            "change_streams": 0, "usage_analytics": true, "usage": tenant,
        },
    }))
    .expect("a figures document")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_that_restart_count_from_zero() {
        assert_eq!(delta(10, 4), 6);
        assert_eq!(delta(3, 40), 3);
    }

    #[test]
    fn sums_of_two_instances_sending_the_largest_counters_saturate() {
        let apps: Vec<AppUrl> = ["h:1", "h:2"]
            .iter()
            .map(|a| super::super::parse_app_url(a).unwrap())
            .collect();
        let mut merger = Merger::default();
        // From zero to the largest counters between two polls: the deltas are summed too.
        merger.merge(&apps, vec![Ok(figures_with(0, 0)), Ok(figures_with(0, 0))]);
        let max = || Ok(figures_with(u64::MAX, i64::MAX));
        let s = merger.merge(&apps, vec![max(), max()]);
        let pool = &s.pools[0];
        assert_eq!(pool.instances, 2);
        assert_eq!(
            (pool.connections, pool.in_use, pool.wait_queue),
            (i64::MAX, i64::MAX, i64::MAX)
        );
        assert_eq!(pool.max_size, 2 * u64::from(u32::MAX));
        assert_eq!(pool.checkout_failures, u64::MAX);
        let t = s.tenant("t1").expect("merged");
        assert_eq!(t.operations, u64::MAX);
        assert_eq!(t.errors, u64::MAX);
        assert_eq!(t.in_flight, u64::MAX);
        assert_eq!(t.recent_operations, u64::MAX);
        assert!(t.ops_per_s.is_some_and(|r| r > 0.0), "{t:?}");
        assert_eq!(t.latency_now_us, Some(1));
        // The negative extreme saturates the other way.
        let min = || Ok(figures_with(0, i64::MIN));
        let s = merger.merge(&apps, vec![min(), min()]);
        assert_eq!(s.pools[0].connections, i64::MIN);
    }

    #[test]
    fn an_instance_sample_is_its_own_whatever_the_urls_look_like() {
        // Two places in the list shown alike (the command line refuses it; the merger must
        // not mix them up anyway): each keeps its own previous sample.
        let a = super::super::parse_app_url("h:1/figures").unwrap();
        let b = super::super::parse_app_url("h:1/figures/").unwrap();
        assert_eq!(a.shown, b.shown);
        let apps = [a, b];
        let mut merger = Merger::default();
        merger.merge(
            &apps,
            vec![Ok(figures_with(0, 0)), Ok(figures_with(100, 0))],
        );
        let s = merger.merge(
            &apps,
            vec![Ok(figures_with(10, 0)), Ok(figures_with(100, 0))],
        );
        // 10 new operations on the first, none on the second.
        assert_eq!(s.instances[1].ops_per_s, Some(0.0));
        assert!(s.instances[0].ops_per_s.is_some_and(|r| r > 0.0));
    }
}
