//! Prometheus exposition of pool and usage figures (feature `metrics`): a text render for a
//! standalone `/metrics` route, and with feature `prometheus-client` a collector for an
//! application's own `prometheus_client` registry. Both write the same families from the
//! same figures.
//!
//! Rendered from the same snapshots as [`Stats`](crate::Stats) at scrape time, so there is no
//! second set of counters to keep in step, and a render costs O(pools + the usage board),
//! whatever the number of databases. Label cardinality is bounded: pool series exist only for
//! pools with an open client (the main pool always; at most the clusters in use plus
//! `max_dedicated_pools` dedicated pools), the manager-wide gauges sum every pool, and
//! per-database usage series exist only for the [`MAX_METRIC_DATABASES`] busiest databases of
//! the last minute or two; everything else is summed under
//! [`OTHER_DATABASES`](crate::OTHER_DATABASES).
//!
//! **Every per-database series is a counter that never goes down.** A database's series
//! counts from the scrape that first shows it (what it counted before stays in
//! `(other databases)`), and when it drops out of the busiest, what its series counted goes
//! back into `(other databases)`. So a database entering the busiest takes nothing out of
//! the rest, and `rate()` of any series, or a sum of rates over the family, counts every
//! operation once. A database's series therefore says what it did since it was shown, not
//! since it was cached ([`Stats::usage`](crate::Stats::usage) has that); a database shown
//! again after a gap, or forgotten and counted again, starts again from zero, which
//! Prometheus reads as a restart.
//!
//! **Histograms.** Operation latency per database
//! (`polymongo_db_command_duration_seconds`) and the time operations waited in a pool's wait
//! queue (`polymongo_pool_wait_duration_seconds`, per pool) are Prometheus histograms with
//! the fixed bounds of [`DurationHistogram`]: `le` is 2^i µs in seconds for i = 0..=26
//! (0.000001 to 67.108864), cumulative, then `+Inf`. That is [`HISTOGRAM_SERIES`] series per
//! database row or pool (27 + 1 `_bucket`, `_sum`, `_count`), so the latency family has at most
//! `(MAX_METRIC_DATABASES + 1) * HISTOGRAM_SERIES` = 1 530 series. The bounds are the same in
//! every instance, so the buckets of a fleet add up, and a fleet-wide quantile is
//! `histogram_quantile(0.99, sum by (le) (rate(polymongo_db_command_duration_seconds_bucket[5m])))`.
//!
//! The text format is simple enough that this module writes it directly (text format 0.0.4:
//! `# HELP`, `# TYPE`, escaped label values); the collector hands the same families to
//! `prometheus_client`'s encoder instead.

use std::fmt;

use crate::features::migrate::MigrationStats;
use crate::features::stats::{PoolInfo, Stats};
use crate::features::tenants::Tenants;
use crate::pool::histogram::{DurationHistogram, DURATION_BUCKETS};

/// What the exposition reads from the manager. The facade implements it for
/// [`PolyMongo`](crate::PolyMongo), so this layer reads the manager without importing it.
pub(crate) trait Source: Send + Sync {
    /// Pools and usage.
    fn stats(&self) -> Stats<'_>;
    /// Migrations.
    fn migration_stats(&self) -> MigrationStats;
    /// The tenant directory, when one is configured.
    fn tenants(&self) -> Option<Tenants>;
}

/// Databases with their own usage series; the others are summed into one.
pub const MAX_METRIC_DATABASES: usize = 50;

/// Series of one histogram (one database row, or one pool): a `_bucket` per bound of
/// [`DurationHistogram`] ([`DURATION_BUCKETS`] of them, the last `le="+Inf"`), `_sum` and
/// `_count`.
pub const HISTOGRAM_SERIES: usize = DURATION_BUCKETS + 2;

/// The content type of [`render`](crate::metrics::render)'s output, for an HTTP response.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `le` labels of the histograms' bounded buckets: 2^i µs in seconds, exact.
const LE: [&str; DURATION_BUCKETS - 1] = [
    "0.000001",
    "0.000002",
    "0.000004",
    "0.000008",
    "0.000016",
    "0.000032",
    "0.000064",
    "0.000128",
    "0.000256",
    "0.000512",
    "0.001024",
    "0.002048",
    "0.004096",
    "0.008192",
    "0.016384",
    "0.032768",
    "0.065536",
    "0.131072",
    "0.262144",
    "0.524288",
    "1.048576",
    "2.097152",
    "4.194304",
    "8.388608",
    "16.777216",
    "33.554432",
    "67.108864",
];

/// Writes `value` as a label value: backslash, double quote and newline escaped.
// The special characters are ASCII, so runs between them are whole UTF-8 sequences, copied
// at once (the render writes hundreds of label values; a `char` loop was its costliest part).
fn write_escaped(out: &mut String, value: &str) {
    let mut rest = value;
    while let Some(at) = rest.bytes().position(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

/// A sample's value, written without the formatting machinery for the common cases (a render
/// writes a few hundred of them).
trait SampleValue {
    fn write_to(&self, out: &mut String);
}

impl SampleValue for u64 {
    fn write_to(&self, out: &mut String) {
        out.push_str(itoa::Buffer::new().format(*self));
    }
}

impl SampleValue for i64 {
    fn write_to(&self, out: &mut String) {
        out.push_str(itoa::Buffer::new().format(*self));
    }
}

/// Microseconds written as seconds (`1.000250`), exactly and without float formatting.
struct Seconds(u64);

impl SampleValue for Seconds {
    fn write_to(&self, out: &mut String) {
        let mut digits = itoa::Buffer::new();
        out.push_str(digits.format(self.0 / 1_000_000));
        out.push('.');
        let micros = digits.format(self.0 % 1_000_000);
        out.push_str(&"000000"[micros.len()..]);
        out.push_str(micros);
    }
}

/// What a family holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gauge,
    Counter,
    Histogram,
}

/// A family's name, type and help. Counter names end in `_total` (the text format's
/// convention; `prometheus_client` adds the suffix itself).
struct Head {
    name: &'static str,
    kind: Kind,
    help: &'static str,
}

const fn head(name: &'static str, kind: Kind, help: &'static str) -> Head {
    Head { name, kind, help }
}

/// One sample's value.
#[derive(Debug, Clone, Copy)]
enum Value {
    Count(u64),
    Signed(i64),
    /// Microseconds, exposed as seconds.
    Seconds(u64),
}

/// Where the families go: the text render, or a `prometheus_client` encoder.
trait Exposition {
    /// Writes one family: its head, then whatever `samples` writes.
    fn family(
        &mut self,
        head: &Head,
        samples: &mut dyn FnMut(&mut dyn Samples) -> fmt::Result,
    ) -> fmt::Result;

    /// About `bytes` more are coming (the text render grows its buffer once).
    fn reserve(&mut self, _bytes: usize) {}
}

/// The samples of the family being written.
trait Samples {
    fn value(&mut self, labels: &[(&str, &str)], value: Value) -> fmt::Result;
    fn histogram(&mut self, labels: &[(&str, &str)], h: &DurationHistogram) -> fmt::Result;
}

/// The text render: writes straight into one `String` (no string per label: a render writes
/// hundreds of lines).
struct Text<'a> {
    out: &'a mut String,
    /// The family being written.
    name: &'static str,
}

impl Text<'_> {
    fn line(
        &mut self,
        suffix: &str,
        labels: &[(&str, &str)],
        le: Option<&str>,
        value: impl SampleValue,
    ) {
        self.out.push_str(self.name);
        self.out.push_str(suffix);
        if !labels.is_empty() || le.is_some() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                write_escaped(self.out, v);
                self.out.push('"');
            }
            if let Some(le) = le {
                if !labels.is_empty() {
                    self.out.push(',');
                }
                self.out.push_str("le=\"");
                self.out.push_str(le);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        value.write_to(self.out);
        self.out.push('\n');
    }
}

impl Exposition for Text<'_> {
    fn family(
        &mut self,
        head: &Head,
        samples: &mut dyn FnMut(&mut dyn Samples) -> fmt::Result,
    ) -> fmt::Result {
        let kind = match head.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        };
        for part in [
            "# HELP ",
            head.name,
            " ",
            head.help,
            "\n# TYPE ",
            head.name,
            " ",
            kind,
            "\n",
        ] {
            self.out.push_str(part);
        }
        self.name = head.name;
        samples(self)
    }

    fn reserve(&mut self, bytes: usize) {
        self.out.reserve(bytes);
    }
}

impl Samples for Text<'_> {
    fn value(&mut self, labels: &[(&str, &str)], value: Value) -> fmt::Result {
        match value {
            Value::Count(v) => self.line("", labels, None, v),
            Value::Signed(v) => self.line("", labels, None, v),
            Value::Seconds(us) => self.line("", labels, None, Seconds(us)),
        }
        Ok(())
    }

    fn histogram(&mut self, labels: &[(&str, &str)], h: &DurationHistogram) -> fmt::Result {
        // The 28 bucket lines share everything up to the `le` value: written (and escaped)
        // once, then copied.
        let start = self.out.len();
        self.line("_bucket", labels, Some(""), 0u64);
        let shared = self.out.len() - "\"} 0\n".len();
        let prefix = self.out[start..shared].to_owned();
        self.out.truncate(start);
        let mut count = 0;
        for (i, (_, cumulative)) in h.cumulative().enumerate() {
            self.out.push_str(&prefix);
            self.out.push_str(LE.get(i).unwrap_or(&"+Inf"));
            self.out.push_str("\"} ");
            cumulative.write_to(self.out);
            self.out.push('\n');
            count = cumulative;
        }
        self.line("_sum", labels, None, Seconds(h.sum_us));
        self.line("_count", labels, None, count);
        Ok(())
    }
}

fn pool_labels(p: &PoolInfo) -> [(&'static str, &str); 2] {
    let kind = match p.kind {
        crate::pool::cluster::PoolKind::Shared => "shared",
        crate::pool::cluster::PoolKind::Dedicated => "dedicated",
    };
    [("cluster", p.cluster.as_str()), ("kind", kind)]
}

/// Everything [`render`] and the collector expose: pools and usage, migrations, and with a
/// tenant directory its routing figures.
fn expose(x: &mut dyn Exposition, poly: &dyn Source) -> fmt::Result {
    expose_stats(x, &poly.stats())?;
    expose_migrations(x, &poly.migration_stats())?;
    if let Some(tenants) = poly.tenants() {
        expose_directory(x, &tenants.stats(), &tenants.cluster_stats())?;
    }
    Ok(())
}

/// The manager's figures in Prometheus text format: [`metrics::render`](crate::metrics::render).
pub(crate) fn render(poly: &dyn Source) -> String {
    // The fixed families take about 8 KiB; the per-database rows reserve their own.
    let mut out = String::with_capacity(8 * 1024);
    let mut text = Text {
        out: &mut out,
        name: "",
    };
    // Writing into a `String` cannot fail.
    let _ = expose(&mut text, poly);
    out
}

/// The figures of `stats`: pool families, then per-database usage families.
fn expose_stats(x: &mut dyn Exposition, stats: &Stats<'_>) -> fmt::Result {
    let general = stats.general_with(false);
    let gauges: [(Head, usize); 4] = [
        (
            head(
                "polymongo_live_clients",
                Kind::Gauge,
                "Driver clients open or shutting down.",
            ),
            general.live_clients,
        ),
        (
            head(
                "polymongo_active_pools",
                Kind::Gauge,
                "Pools with an open client.",
            ),
            general.total_active_pools,
        ),
        (
            head(
                "polymongo_databases_in_use",
                Kind::Gauge,
                "Databases resolved and routed.",
            ),
            general.databases_in_use,
        ),
        (
            head(
                "polymongo_change_streams",
                Kind::Gauge,
                "Managed change streams open.",
            ),
            general.change_streams,
        ),
    ];
    for (h, v) in &gauges {
        x.family(h, &mut |s| s.value(&[], Value::Count(*v as u64)))?;
    }

    let pools: Vec<&PoolInfo> = std::iter::once(&general.primary)
        .chain(
            general
                .other_clusters
                .iter()
                .chain(&general.dedicated)
                .filter(|p| p.state != crate::pool::cluster::ConnectionState::Disconnected),
        )
        .collect();
    type Pick = fn(&PoolInfo) -> Value;
    let families: [(Head, Pick); 8] = [
        (
            head(
                "polymongo_pool_connections",
                Kind::Gauge,
                "Pooled connections (monitoring connections excluded).",
            ),
            |p| Value::Signed(p.stats.total),
        ),
        (
            head(
                "polymongo_pool_connections_in_use",
                Kind::Gauge,
                "Connections checked out.",
            ),
            |p| Value::Signed(p.stats.in_use),
        ),
        (
            head(
                "polymongo_pool_wait_queue",
                Kind::Gauge,
                "Operations waiting for a connection.",
            ),
            |p| Value::Signed(p.stats.wait_queue),
        ),
        (
            head("polymongo_pool_max_size", Kind::Gauge, "Maximum pool size."),
            |p| Value::Count(u64::from(p.stats.max_size)),
        ),
        (
            head(
                "polymongo_pool_checkouts_total",
                Kind::Counter,
                "Connections checked out.",
            ),
            |p| Value::Count(p.stats.checkouts),
        ),
        (
            head(
                "polymongo_pool_checkout_failures_total",
                Kind::Counter,
                "Failed checkouts.",
            ),
            |p| Value::Count(p.stats.checkout_failures),
        ),
        (
            head(
                "polymongo_pool_checkout_wait_max_seconds",
                Kind::Gauge,
                "Longest checkout wait.",
            ),
            |p| Value::Seconds(p.stats.checkout_wait_max_us),
        ),
        (
            head(
                "polymongo_pool_clears_total",
                Kind::Counter,
                "Pool clears after errors.",
            ),
            |p| Value::Count(p.stats.pool_clears),
        ),
    ];
    for (h, pick) in &families {
        x.family(h, &mut |s| {
            for p in &pools {
                s.value(&pool_labels(p), pick(p))?;
            }
            Ok(())
        })?;
    }
    x.reserve(pools.len() * HISTOGRAM_SERIES * 120);
    x.family(
        &head(
            "polymongo_pool_wait_duration_seconds",
            Kind::Histogram,
            "Time operations waited in the pool's wait queue for a connection, one observation per wait (operations that found a connection free did not wait).",
        ),
        &mut |s| {
            for p in &pools {
                s.histogram(&pool_labels(p), &p.stats.queue_wait)?;
            }
            Ok(())
        },
    )?;

    // The busiest databases, each counted from when it was first shown, and the rest: every
    // series a counter that never goes down (see `registry::metric_rows`).
    let Some(shown) = stats.metric_rows(MAX_METRIC_DATABASES) else {
        return Ok(());
    };
    // About 90 bytes a line: the histogram's lines and the other families' few.
    x.reserve(shown.len() * (HISTOGRAM_SERIES + 6) * 90);
    x.family(
        &head(
            "polymongo_db_commands_total",
            Kind::Counter,
            "Commands sent, by database and command.",
        ),
        &mut |s| {
            for u in &shown {
                for (command, n) in &u.by_command {
                    s.value(
                        &[("database", &u.database), ("command", command)],
                        Value::Count(*n),
                    )?;
                }
            }
            Ok(())
        },
    )?;
    x.family(
        &head(
            "polymongo_db_errors_total",
            Kind::Counter,
            "Commands that failed, by database.",
        ),
        &mut |s| {
            for u in &shown {
                s.value(&[("database", &u.database)], Value::Count(u.errors))?;
            }
            Ok(())
        },
    )?;
    x.family(
        &head(
            "polymongo_db_command_seconds_total",
            Kind::Counter,
            "Time spent in commands, by database.",
        ),
        &mut |s| {
            for u in &shown {
                s.value(
                    &[("database", &u.database)],
                    Value::Seconds(u.total_time_us),
                )?;
            }
            Ok(())
        },
    )?;
    x.family(
        &head(
            "polymongo_db_command_duration_seconds",
            Kind::Histogram,
            "Latency of finished commands, by database.",
        ),
        &mut |s| {
            for u in &shown {
                s.histogram(&[("database", &u.database)], &u.latency)?;
            }
            Ok(())
        },
    )
}

/// The migration figures: per-version counters (at most
/// [`MAX_COUNTED_VERSIONS`](crate::migrate::MAX_COUNTED_VERSIONS) versions) and the fleet
/// runs' progress.
fn expose_migrations(x: &mut dyn Exposition, m: &MigrationStats) -> fmt::Result {
    x.family(
        &head(
            "polymongo_migrations_total",
            Kind::Counter,
            "Migration versions applied, rolled back or failed on a database, by version.",
        ),
        &mut |s| {
            let mut version = itoa::Buffer::new();
            for v in &m.versions {
                let version = version.format(v.version);
                for (outcome, count) in [
                    ("applied", v.applied),
                    ("rolled_back", v.rolled_back),
                    ("failed", v.failed),
                ] {
                    s.value(
                        &[("version", version), ("outcome", outcome)],
                        Value::Count(count),
                    )?;
                }
            }
            Ok(())
        },
    )?;
    x.family(
        &head(
            "polymongo_fleet_runs_active",
            Kind::Gauge,
            "Fleet migration runs going now.",
        ),
        &mut |s| s.value(&[], Value::Count(m.fleet_runs_active)),
    )?;
    x.family(
        &head(
            "polymongo_fleet_databases_pending",
            Kind::Gauge,
            "Databases the fleet runs going now have yet to finish.",
        ),
        &mut |s| s.value(&[], Value::Count(m.fleet_databases_pending)),
    )?;
    x.family(
        &head(
            "polymongo_fleet_databases_total",
            Kind::Counter,
            "Databases finished by fleet migration runs, by outcome.",
        ),
        &mut |s| {
            s.value(&[("outcome", "ok")], Value::Count(m.fleet_databases_ok))?;
            s.value(
                &[("outcome", "failed")],
                Value::Count(m.fleet_databases_failed),
            )
        },
    )
}

/// The tenant directory's routing figures: per cluster (the configured clusters, a bounded
/// set) cache hits, misses and invalidations, and this instance's link to the directory.
/// Tenants by state per cluster need a read of the directory, which a scrape does not do:
/// [`Tenants::census`](crate::tenants::Tenants::census) gives them.
fn expose_directory(
    x: &mut dyn Exposition,
    stats: &crate::features::tenants::DirectoryStats,
    clusters: &[crate::features::tenants::ClusterRouting],
) -> fmt::Result {
    x.family(
        &head(
            "polymongo_directory_routes_total",
            Kind::Counter,
            "Tenants routed through the directory, by cluster: from the cache (hit) or by a read of the directory (miss).",
        ),
        &mut |s| {
            for c in clusters {
                s.value(
                    &[("cluster", &c.cluster), ("result", "hit")],
                    Value::Count(c.cache_hits),
                )?;
                s.value(
                    &[("cluster", &c.cluster), ("result", "miss")],
                    Value::Count(c.cache_misses),
                )?;
            }
            Ok(())
        },
    )?;
    x.family(
        &head(
            "polymongo_directory_invalidations_total",
            Kind::Counter,
            "Cached tenant entries forgotten because the directory changed them, by cluster.",
        ),
        &mut |s| {
            for c in clusters {
                s.value(&[("cluster", &c.cluster)], Value::Count(c.invalidations))?;
            }
            Ok(())
        },
    )?;
    x.family(
        &head(
            "polymongo_directory_stream_events_total",
            Kind::Counter,
            "Change events received from the directory's change stream.",
        ),
        &mut |s| s.value(&[], Value::Count(stats.stream_events)),
    )?;
    x.family(
        &head(
            "polymongo_directory_stream_open",
            Kind::Gauge,
            "1 while the change stream on the directory is open (else changes arrive by polling).",
        ),
        &mut |s| s.value(&[], Value::Count(u64::from(stats.stream_open))),
    )?;
    x.family(
        &head(
            "polymongo_directory_reads_in_flight",
            Kind::Gauge,
            "Cold reads of the directory going on now.",
        ),
        &mut |s| s.value(&[], Value::Count(stats.reads_in_flight as u64)),
    )?;
    let micros = u64::try_from(stats.changes_read_ago.as_micros()).unwrap_or(u64::MAX);
    x.family(
        &head(
            "polymongo_directory_changes_read_age_seconds",
            Kind::Gauge,
            "Time since the last successful read of the directory's changes began (cached tenants are refused past max_staleness).",
        ),
        &mut |s| s.value(&[], Value::Seconds(micros)),
    )
}

/// The manager's figures for an application's `prometheus_client` registry (feature
/// `prometheus-client`): [`metrics::collector`](crate::metrics::collector).
///
/// Registered with [`Registry::register_collector`](prometheus_client::registry::Registry::register_collector),
/// it encodes at every scrape the families [`render`](crate::metrics::render) writes, with
/// the same names, labels, bounds and values, read from the manager's figures then (no
/// counters of its own, nothing to update between scrapes). Counters are handed to the
/// encoder without their `_total` suffix, which it adds back; a registry made
/// [`with_prefix`](prometheus_client::registry::Registry::with_prefix) prefixes them.
///
/// **Why a collector, and not the `metrics` facade.** polymongo's figures are snapshots that
/// exist anyway (pool figures from the driver's events, the usage board), read when
/// scraped: a pull, which is what a `prometheus_client` collector is. The `metrics` facade
/// is push-based: polymongo would have to emit every observation to a global recorder as it
/// happens, a recorder look-up and label hashing on every operation on top of the counters
/// it keeps, a second copy of each figure; and the bounded database labels could not be
/// kept, since which databases are shown (the busiest of the last minute or two) is decided
/// at scrape time, while a pushed series stays in the recorder once emitted. An application
/// on the facade can still serve [`render`](crate::metrics::render) beside its own
/// exposition.
///
/// It holds a clone of the manager (a reference count), so it reports that manager's
/// figures for as long as the registry keeps it, closed or not.
#[cfg(feature = "prometheus-client")]
#[derive(Clone)]
pub struct PrometheusCollector {
    source: std::sync::Arc<dyn Source>,
}

#[cfg(feature = "prometheus-client")]
impl PrometheusCollector {
    /// A collector of `source`'s figures (the facade's `PrometheusCollector::new` gives the
    /// manager).
    pub(crate) fn of(source: std::sync::Arc<dyn Source>) -> Self {
        Self { source }
    }
}

#[cfg(feature = "prometheus-client")]
impl fmt::Debug for PrometheusCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusCollector")
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "prometheus-client")]
impl prometheus_client::collector::Collector for PrometheusCollector {
    fn encode(&self, encoder: prometheus_client::encoding::DescriptorEncoder<'_>) -> fmt::Result {
        expose(&mut client::Client(encoder), self.source.as_ref())
    }
}

/// The families handed to `prometheus_client`'s encoder.
#[cfg(feature = "prometheus-client")]
mod client {
    use std::fmt;

    use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
    use prometheus_client::metrics::MetricType;

    use super::{Exposition, Head, Kind, Samples, Value};
    use crate::pool::histogram::{DurationHistogram, DURATION_BUCKETS};

    pub(super) struct Client<'a>(pub(super) DescriptorEncoder<'a>);

    impl Exposition for Client<'_> {
        fn family(
            &mut self,
            head: &Head,
            samples: &mut dyn FnMut(&mut dyn Samples) -> fmt::Result,
        ) -> fmt::Result {
            let (name, ty) = match head.kind {
                Kind::Gauge => (head.name, MetricType::Gauge),
                Kind::Counter => (
                    head.name.strip_suffix("_total").unwrap_or(head.name),
                    MetricType::Counter,
                ),
                Kind::Histogram => (head.name, MetricType::Histogram),
            };
            let mut metric = self.0.encode_descriptor(name, head.help, None, ty)?;
            samples(&mut Family {
                metric: &mut metric,
                kind: head.kind,
            })
        }
    }

    struct Family<'a, 'b> {
        metric: &'a mut MetricEncoder<'b>,
        kind: Kind,
    }

    fn seconds(us: u64) -> f64 {
        us as f64 / 1e6
    }

    fn encode_value(metric: &mut MetricEncoder<'_>, kind: Kind, value: Value) -> fmt::Result {
        match (kind, value) {
            (Kind::Counter, Value::Count(v)) => {
                metric.encode_counter::<NoLabelSet, _, u64>(&v, None)
            }
            (Kind::Counter, Value::Signed(v)) => {
                metric.encode_counter::<NoLabelSet, _, u64>(&v.max(0).unsigned_abs(), None)
            }
            (Kind::Counter, Value::Seconds(us)) => {
                metric.encode_counter::<NoLabelSet, _, f64>(&seconds(us), None)
            }
            (_, Value::Count(v)) => metric.encode_gauge(&v),
            (_, Value::Signed(v)) => metric.encode_gauge(&v),
            (_, Value::Seconds(us)) => metric.encode_gauge(&seconds(us)),
        }
    }

    impl Samples for Family<'_, '_> {
        fn value(&mut self, labels: &[(&str, &str)], value: Value) -> fmt::Result {
            if labels.is_empty() {
                return encode_value(self.metric, self.kind, value);
            }
            encode_value(&mut self.metric.encode_family(&labels)?, self.kind, value)
        }

        fn histogram(&mut self, labels: &[(&str, &str)], h: &DurationHistogram) -> fmt::Result {
            let buckets: [(f64, u64); DURATION_BUCKETS] = std::array::from_fn(|i| {
                (
                    DurationHistogram::upper_bound_us(i).map_or(f64::INFINITY, seconds),
                    h.counts[i],
                )
            });
            self.metric
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(seconds(h.sum_us), h.count(), &buckets, None)
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_exact_and_labels_escaped() {
        let seconds = |us| {
            let mut out = String::new();
            Seconds(us).write_to(&mut out);
            out
        };
        assert_eq!(seconds(1_000_250), "1.000250");
        assert_eq!(seconds(5), "0.000005");
        assert_eq!(seconds(0), "0.000000");
        assert_eq!(seconds(123_456_789), "123.456789");
        let mut out = String::new();
        write_escaped(&mut out, "plain_db");
        write_escaped(&mut out, "a\"b\\c\nd");
        write_escaped(&mut out, "\"é\n");
        assert_eq!(out, "plain_dba\\\"b\\\\c\\nd\\\"é\\n");
    }

    #[test]
    fn le_labels_are_the_bucket_bounds_in_seconds() {
        for (i, le) in LE.iter().enumerate() {
            let mut out = String::new();
            Seconds(DurationHistogram::upper_bound_us(i).unwrap()).write_to(&mut out);
            assert_eq!(*le, out);
        }
        assert_eq!(DurationHistogram::upper_bound_us(LE.len()), None);
    }

    #[test]
    fn a_text_histogram_is_cumulative_and_ends_at_its_count() {
        let mut h = DurationHistogram::default();
        h.counts[0] = 1;
        h.counts[10] = 2;
        h.counts[DURATION_BUCKETS - 1] = 1;
        h.sum_us = 1_500_000;
        let mut out = String::new();
        let mut text = Text {
            out: &mut out,
            name: "",
        };
        text.family(&head("x_seconds", Kind::Histogram, "h."), &mut |s| {
            s.histogram(&[("database", "d\"b")], &h)
        })
        .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2 + HISTOGRAM_SERIES, "{out}");
        assert_eq!(lines[1], "# TYPE x_seconds histogram");
        assert_eq!(
            lines[2],
            "x_seconds_bucket{database=\"d\\\"b\",le=\"0.000001\"} 1"
        );
        assert_eq!(
            lines[12],
            "x_seconds_bucket{database=\"d\\\"b\",le=\"0.001024\"} 3"
        );
        assert_eq!(
            lines[28],
            "x_seconds_bucket{database=\"d\\\"b\",le=\"67.108864\"} 3"
        );
        assert_eq!(
            lines[29],
            "x_seconds_bucket{database=\"d\\\"b\",le=\"+Inf\"} 4"
        );
        assert_eq!(lines[30], "x_seconds_sum{database=\"d\\\"b\"} 1.500000");
        assert_eq!(lines[31], "x_seconds_count{database=\"d\\\"b\"} 4");
    }
}
