//! Prometheus text exposition of pool and usage figures (feature `metrics`).
//!
//! Rendered from the same snapshots as [`Stats`](crate::Stats) at scrape time, so there is no
//! second set of counters to keep in step, and a render costs O(pools + the usage board),
//! whatever the number of databases. Label cardinality is bounded: pool series exist only for
//! pools with an open client (the main pool always; at most the clusters in use plus
//! `max_dedicated_pools` dedicated pools), the manager-wide gauges sum every pool, and
//! per-database usage series exist only for the [`MAX_METRIC_DATABASES`] busiest databases of
//! the last minute or two; everything else is summed under [`OTHER_DATABASES`].
//!
//! The format is simple enough that a registry crate would only add a second copy of the
//! figures; this module writes it directly (text format 0.0.4: `# HELP`, `# TYPE`, escaped
//! label values).

use std::fmt::Write as _;

use crate::features::migrate::MigrationStats;
use crate::features::stats::{PoolInfo, Stats};
use crate::registry::usage::{TopBy, UsageStats, OTHER_DATABASES};

/// Databases with their own usage series; the others are summed into one.
pub const MAX_METRIC_DATABASES: usize = 50;

/// The content type of [`render`](crate::metrics::render)'s output, for an HTTP response.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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

impl SampleValue for usize {
    fn write_to(&self, out: &mut String) {
        out.push_str(itoa::Buffer::new().format(*self));
    }
}

impl SampleValue for f64 {
    fn write_to(&self, out: &mut String) {
        let _ = write!(out, "{self}");
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

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        for part in [
            "# HELP ",
            name,
            " ",
            help,
            "\n# TYPE ",
            name,
            " ",
            kind,
            "\n",
        ] {
            self.out.push_str(part);
        }
    }

    /// One sample line, written straight into the output (no string per label: a render
    /// writes hundreds of lines).
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl SampleValue) {
        self.out.push_str(name);
        if !labels.is_empty() {
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
            self.out.push('}');
        }
        self.out.push(' ');
        value.write_to(self.out);
        self.out.push('\n');
    }
}

fn pool_labels(p: &PoolInfo) -> [(&'static str, &str); 2] {
    let kind = match p.kind {
        crate::pool::cluster::PoolKind::Shared => "shared",
        crate::pool::cluster::PoolKind::Dedicated => "dedicated",
    };
    [("cluster", p.cluster.as_str()), ("kind", kind)]
}

/// The figures of `stats` in Prometheus text format:
/// [`metrics::render`](crate::metrics::render).
pub(crate) fn render_stats(stats: &Stats<'_>) -> String {
    let general = stats.general_with(false);
    // About 32 KiB with 50 databases shown: one allocation, not a few growing copies.
    let mut out = String::with_capacity(32 * 1024);
    let mut f = Family { out: &mut out };

    f.header(
        "polymongo_live_clients",
        "gauge",
        "Driver clients open or shutting down.",
    );
    f.sample("polymongo_live_clients", &[], general.live_clients);
    f.header(
        "polymongo_active_pools",
        "gauge",
        "Pools with an open client.",
    );
    f.sample("polymongo_active_pools", &[], general.total_active_pools);
    f.header(
        "polymongo_databases_in_use",
        "gauge",
        "Databases resolved and routed.",
    );
    f.sample("polymongo_databases_in_use", &[], general.databases_in_use);
    f.header(
        "polymongo_change_streams",
        "gauge",
        "Managed change streams open.",
    );
    f.sample("polymongo_change_streams", &[], general.change_streams);

    let pools: Vec<&PoolInfo> = std::iter::once(&general.primary)
        .chain(
            general
                .other_clusters
                .iter()
                .chain(&general.dedicated)
                .filter(|p| p.state != crate::pool::cluster::ConnectionState::Disconnected),
        )
        .collect();
    type Pick = fn(&PoolInfo) -> f64;
    let families: [(&str, &str, &str, Pick); 8] = [
        (
            "polymongo_pool_connections",
            "gauge",
            "Pooled connections (monitoring connections excluded).",
            |p| p.stats.total as f64,
        ),
        (
            "polymongo_pool_connections_in_use",
            "gauge",
            "Connections checked out.",
            |p| p.stats.in_use as f64,
        ),
        (
            "polymongo_pool_wait_queue",
            "gauge",
            "Operations waiting for a connection.",
            |p| p.stats.wait_queue as f64,
        ),
        (
            "polymongo_pool_max_size",
            "gauge",
            "Maximum pool size.",
            |p| f64::from(p.stats.max_size),
        ),
        (
            "polymongo_pool_checkouts_total",
            "counter",
            "Connections checked out.",
            |p| p.stats.checkouts as f64,
        ),
        (
            "polymongo_pool_checkout_failures_total",
            "counter",
            "Failed checkouts.",
            |p| p.stats.checkout_failures as f64,
        ),
        (
            "polymongo_pool_checkout_wait_max_seconds",
            "gauge",
            "Longest checkout wait.",
            |p| p.stats.checkout_wait_max_us as f64 / 1e6,
        ),
        (
            "polymongo_pool_clears_total",
            "counter",
            "Pool clears after errors.",
            |p| p.stats.pool_clears as f64,
        ),
    ];
    for (name, kind, help, pick) in families {
        f.header(name, kind, help);
        for p in &pools {
            f.sample(name, &pool_labels(p), pick(p));
        }
    }

    if let Some(total) = stats.total_usage() {
        let mut shown = stats.top_databases(MAX_METRIC_DATABASES, TopBy::Operations);
        // Everything not shown, so each family sums to the manager's total.
        let mut rest = UsageStats {
            database: OTHER_DATABASES.to_owned(),
            ..total
        };
        for u in &shown {
            rest.operations = rest.operations.saturating_sub(u.operations);
            rest.errors = rest.errors.saturating_sub(u.errors);
            rest.total_time_us = rest.total_time_us.saturating_sub(u.total_time_us);
            for (k, v) in &u.by_command {
                if let Some(r) = rest.by_command.get_mut(k) {
                    *r = r.saturating_sub(*v);
                }
            }
        }
        rest.by_command.retain(|_, v| *v > 0);
        if rest.operations > 0 {
            shown.push(rest);
        }
        let name = "polymongo_db_commands_total";
        f.header(name, "counter", "Commands sent, by database and command.");
        for u in &shown {
            for (command, n) in &u.by_command {
                f.sample(name, &[("database", &u.database), ("command", command)], *n);
            }
        }
        let name = "polymongo_db_errors_total";
        f.header(name, "counter", "Commands that failed, by database.");
        for u in &shown {
            f.sample(name, &[("database", &u.database)], u.errors);
        }
        let name = "polymongo_db_command_seconds_total";
        f.header(name, "counter", "Time spent in commands, by database.");
        for u in &shown {
            f.sample(name, &[("database", &u.database)], Seconds(u.total_time_us));
        }
        let name = "polymongo_db_command_latency_seconds";
        f.header(
            name,
            "gauge",
            "Command latency quantiles (histogram upper bounds), by database.",
        );
        for u in &shown {
            for (q, v) in [("0.5", u.p50_us), ("0.95", u.p95_us), ("0.99", u.p99_us)] {
                f.sample(
                    name,
                    &[("database", &u.database), ("quantile", q)],
                    Seconds(v),
                );
            }
        }
    }
    out
}

/// Appends the migration figures: per-version counters (at most
/// [`MAX_COUNTED_VERSIONS`](crate::migrate::MAX_COUNTED_VERSIONS) versions) and the fleet
/// runs' progress.
pub(crate) fn render_migrations(out: &mut String, m: &MigrationStats) {
    let mut f = Family { out };
    let name = "polymongo_migrations_total";
    f.header(
        name,
        "counter",
        "Migration versions applied, rolled back or failed on a database, by version.",
    );
    let mut version = itoa::Buffer::new();
    for v in &m.versions {
        let version = version.format(v.version);
        for (outcome, count) in [
            ("applied", v.applied),
            ("rolled_back", v.rolled_back),
            ("failed", v.failed),
        ] {
            f.sample(name, &[("version", version), ("outcome", outcome)], count);
        }
    }
    f.header(
        "polymongo_fleet_runs_active",
        "gauge",
        "Fleet migration runs going now.",
    );
    f.sample("polymongo_fleet_runs_active", &[], m.fleet_runs_active);
    f.header(
        "polymongo_fleet_databases_pending",
        "gauge",
        "Databases the fleet runs going now have yet to finish.",
    );
    f.sample(
        "polymongo_fleet_databases_pending",
        &[],
        m.fleet_databases_pending,
    );
    let name = "polymongo_fleet_databases_total";
    f.header(
        name,
        "counter",
        "Databases finished by fleet migration runs, by outcome.",
    );
    f.sample(name, &[("outcome", "ok")], m.fleet_databases_ok);
    f.sample(name, &[("outcome", "failed")], m.fleet_databases_failed);
}

/// Appends the tenant directory's routing figures: per cluster (the configured clusters,
/// a bounded set) cache hits, misses and invalidations, and this instance's link to the
/// directory. Tenants by state per cluster need a read of the directory, which a scrape does
/// not do: [`Tenants::census`](crate::tenants::Tenants::census) gives them.
pub(crate) fn render_directory(
    out: &mut String,
    stats: &crate::features::tenants::DirectoryStats,
    clusters: &[crate::features::tenants::ClusterRouting],
) {
    let mut f = Family { out };
    let name = "polymongo_directory_routes_total";
    f.header(
        name,
        "counter",
        "Tenants routed through the directory, by cluster: from the cache (hit) or by a read of the directory (miss).",
    );
    for c in clusters {
        f.sample(
            name,
            &[("cluster", &c.cluster), ("result", "hit")],
            c.cache_hits,
        );
        f.sample(
            name,
            &[("cluster", &c.cluster), ("result", "miss")],
            c.cache_misses,
        );
    }
    let name = "polymongo_directory_invalidations_total";
    f.header(
        name,
        "counter",
        "Cached tenant entries forgotten because the directory changed them, by cluster.",
    );
    for c in clusters {
        f.sample(name, &[("cluster", &c.cluster)], c.invalidations);
    }
    f.header(
        "polymongo_directory_stream_events_total",
        "counter",
        "Change events received from the directory's change stream.",
    );
    f.sample(
        "polymongo_directory_stream_events_total",
        &[],
        stats.stream_events,
    );
    f.header(
        "polymongo_directory_stream_open",
        "gauge",
        "1 while the change stream on the directory is open (else changes arrive by polling).",
    );
    f.sample(
        "polymongo_directory_stream_open",
        &[],
        u64::from(stats.stream_open),
    );
    f.header(
        "polymongo_directory_reads_in_flight",
        "gauge",
        "Cold reads of the directory going on now.",
    );
    f.sample(
        "polymongo_directory_reads_in_flight",
        &[],
        stats.reads_in_flight,
    );
    f.header(
        "polymongo_directory_changes_read_age_seconds",
        "gauge",
        "Time since the last successful read of the directory's changes began (cached tenants are refused past max_staleness).",
    );
    let micros = u64::try_from(stats.changes_read_ago.as_micros()).unwrap_or(u64::MAX);
    f.sample(
        "polymongo_directory_changes_read_age_seconds",
        &[],
        Seconds(micros),
    );
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
}
