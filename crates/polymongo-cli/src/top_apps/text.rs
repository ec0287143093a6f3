//! The plain-text view (a pipe, or `--once` without `--json`), and the formats both views
//! share.

use super::merge::{AppsSnapshot, TenantView};

pub(super) fn rate(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"))
}

pub(super) fn micros(us: Option<u64>) -> String {
    match us {
        None => "-".to_owned(),
        Some(us) if us >= 10_000 => format!("{:.0} ms", us as f64 / 1000.0),
        Some(us) if us >= 1_000 => format!("{:.1} ms", us as f64 / 1000.0),
        Some(us) => format!("{us} µs"),
    }
}

fn clock(ms: u64) -> String {
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02} UTC",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

pub(super) fn headline(s: &AppsSnapshot) -> String {
    format!(
        "polymongo top — {} app{}: {} up, {} down — {}",
        s.instances.len(),
        if s.instances.len() == 1 { "" } else { "s" },
        s.up,
        s.down,
        clock(s.taken_at_ms)
    )
}

/// The plain-text view of one snapshot.
pub(super) fn render(s: &AppsSnapshot) -> String {
    let mut out = format!("{}\n\n", headline(s));
    out.push_str(&format!(
        "{:32} {:6} {:28} {:>6} {:>10} {:>10}\n",
        "app", "state", "instance", "dbs", "operations", "ops/s"
    ));
    for i in &s.instances {
        match &i.error {
            Some(e) => out.push_str(&format!("{:32} {:6} {e}\n", i.url, i.status)),
            None => out.push_str(&format!(
                "{:32} {:6} {:28} {:>6} {:>10} {:>10}\n",
                i.url,
                i.status,
                i.instance.as_deref().unwrap_or("-"),
                i.databases_in_use,
                i.operations,
                rate(i.ops_per_s)
            )),
        }
    }
    out.push_str(&format!(
        "\n{:40} {:10} {:>5} {:>7} {:>6} {:>6} {:>8}\n",
        "pool (summed over apps)", "kind", "apps", "in use", "open", "max", "waiting"
    ));
    for p in &s.pools {
        out.push_str(&format!(
            "{:40} {:10} {:>5} {:>7} {:>6} {:>6} {:>8}\n",
            p.cluster, p.kind, p.instances, p.in_use, p.connections, p.max_size, p.wait_queue
        ));
    }
    let section = |title: &str, names: &[String], row: &dyn Fn(&TenantView) -> String| {
        let mut text = format!("\n{title}\n");
        if names.is_empty() {
            text.push_str("  (none)\n");
        }
        for name in names {
            if let Some(t) = s.tenant(name) {
                text.push_str(&format!("  {:32} {}\n", t.database, row(t)));
            }
        }
        text
    };
    out.push_str(&section("busiest now", &s.busiest, &|t| {
        format!(
            "{:>10} ops/s {:>10} recent {:>10} ops {:>4} in flight",
            rate(t.ops_per_s),
            t.recent_operations,
            t.operations,
            t.in_flight
        )
    }));
    out.push_str(&section("slowest now", &s.slowest, &|t| {
        format!(
            "{:>10} now {:>10} p99 now {:>10} recent mean {:>10} p99",
            micros(t.latency_now_us),
            micros(t.p99_now_us),
            micros(Some(t.recent_mean_us)),
            micros(Some(t.p99_us))
        )
    }));
    out.push_str(&section("most errors now", &s.erroring, &|t| {
        format!(
            "{:>10} errors/s {:>10} errors {:>10} ops",
            rate(t.errors_per_s),
            t.errors,
            t.operations
        )
    }));
    out
}
