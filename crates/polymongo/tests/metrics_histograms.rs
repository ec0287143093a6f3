//! Histograms that aggregate: latency and pool-wait histograms whose buckets add up across
//! instances, their bounded cardinality, and the `prometheus_client` collector beside an
//! application's own series.
#![cfg(feature = "metrics")]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use polymongo::metrics::{render, HISTOGRAM_SERIES, MAX_METRIC_DATABASES};
use polymongo::{Model, PolyMongo, DURATION_BUCKETS};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Item {
    n: i64,
}
impl Model for Item {
    const COLLECTION: &'static str = "items";
}

const LATENCY: &str = "polymongo_db_command_duration_seconds";
const WAIT: &str = "polymongo_pool_wait_duration_seconds";

/// One sample line: its name, labels and value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Every sample of an exposition (text format 0.0.4 or OpenMetrics); panics on a malformed
/// line. Labels are parsed with their escapes, so label order does not matter.
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no value: {line}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
            };
            let (name, mut rest) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}').expect(line)),
                None => (series, ""),
            };
            let mut labels = BTreeMap::new();
            while !rest.is_empty() {
                let (key, after) = rest.split_once("=\"").expect(line);
                let mut val = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next().expect(line) {
                        (_, '\\') => match chars.next().expect(line).1 {
                            'n' => val.push('\n'),
                            c => val.push(c),
                        },
                        (i, '"') => break i,
                        (_, c) => val.push(c),
                    }
                };
                labels.insert(key.to_owned(), val);
                rest = after[end + 1..].trim_start_matches(',');
            }
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            Sample {
                name: name.to_owned(),
                labels,
                value,
            }
        })
        .collect()
}

/// A histogram's `le` bound, `+Inf` as infinity.
fn le(s: &Sample) -> f64 {
    match s.labels["le"].as_str() {
        "+Inf" => f64::INFINITY,
        v => v.parse().unwrap(),
    }
}

/// The buckets of histogram `family` summed over every series (databases or pools) of every
/// exposition, by `le`, in order.
fn summed_buckets(expositions: &[&[Sample]], family: &str) -> Vec<(f64, f64)> {
    let bucket = format!("{family}_bucket");
    let mut by_le: Vec<(f64, f64)> = Vec::new();
    for samples in expositions {
        for s in samples.iter().filter(|s| s.name == bucket) {
            let bound = le(s);
            match by_le.iter_mut().find(|(b, _)| *b == bound) {
                Some((_, n)) => *n += s.value,
                None => by_le.push((bound, s.value)),
            }
        }
    }
    by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
    by_le
}

/// The sum of `name` over every series of every exposition.
fn total(expositions: &[&[Sample]], name: &str) -> f64 {
    expositions
        .iter()
        .flat_map(|s| s.iter())
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

/// Prometheus' `histogram_quantile`: the bucket holding rank `q * count`, interpolated
/// linearly inside it (the first bucket starts at 0; a rank in `+Inf` gives the highest
/// finite bound).
fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let count = buckets.last().unwrap().1;
    let rank = q * count;
    let mut below = (0.0, 0.0);
    for &(bound, cumulative) in buckets {
        if cumulative >= rank {
            if bound.is_infinite() {
                return below.0;
            }
            let in_bucket = cumulative - below.1;
            return below.0 + (bound - below.0) * (rank - below.1) / in_bucket;
        }
        below = (bound, cumulative);
    }
    unreachable!("the +Inf bucket holds every observation")
}

/// The bounds (seconds) of the power-of-two bucket holding `d`: (2^(i-1), 2^i] µs.
fn bucket_of(d: Duration) -> (f64, f64) {
    let us = (d.as_micros() as u64).max(1);
    let upper = us.next_power_of_two();
    let lower = if upper == 1 { 0 } else { upper / 2 };
    (lower as f64 / 1e6, upper as f64 / 1e6)
}

/// The nearest-rank quantile of `measured`.
fn true_quantile(measured: &mut [Duration], q: f64) -> Duration {
    measured.sort();
    let rank = ((measured.len() as f64) * q).ceil().max(1.0) as usize;
    measured[rank - 1]
}

/// Runs one operation through `db`, holding it `hold` before the driver call (latency by
/// design), and returns what the caller measured.
async fn timed_op(poly: &PolyMongo, db: &str, hold: Duration) -> Duration {
    let handle = poly.model::<Item>().db(db).unwrap();
    let started = Instant::now();
    handle
        .run(|c| async move {
            tokio::time::sleep(hold).await;
            c.find_one(doc! {}).await
        })
        .await
        .unwrap();
    started.elapsed()
}

#[tokio::test]
async fn latency_buckets_of_two_instances_add_up_to_a_fleet_quantile() {
    let server = common::server().await;
    let raw = common::raw(&server).await;
    let tenants = ["fleet_t0", "fleet_t1", "fleet_t2"];
    for t in tenants {
        raw.database(t)
            .collection::<Document>("items")
            .insert_one(doc! {"n": 1})
            .await
            .unwrap();
    }
    let a = common::manager(&server, 4).await;
    let b = common::manager(&server, 4).await;

    // Three classes, each far from a bucket bound: quick finds, finds held 20 ms (in
    // (16.4, 32.8] ms) and finds held 80 ms (in (65.5, 131.1] ms). The two instances run
    // different mixes over the same tenants: 24 + 36 quick, 48 + 60 held, 4 + 8 slow; the
    // fleet's median is a held one and its p99 a slow one.
    let plan = |quick: usize, held: usize, slow: usize| {
        let mut holds = Vec::new();
        holds.extend(std::iter::repeat_n(Duration::ZERO, quick));
        holds.extend(std::iter::repeat_n(Duration::from_millis(20), held));
        holds.extend(std::iter::repeat_n(Duration::from_millis(80), slow));
        holds
    };
    let run = |poly: PolyMongo, holds: Vec<Duration>| async move {
        let mut measured = Vec::new();
        for (i, hold) in holds.into_iter().enumerate() {
            measured.push(timed_op(&poly, tenants[i % tenants.len()], hold).await);
        }
        measured
    };
    let (ma, mb) = tokio::join!(
        run(a.clone(), plan(24, 48, 4)),
        run(b.clone(), plan(36, 60, 8))
    );
    let mut measured: Vec<Duration> = ma.into_iter().chain(mb).collect();
    let operations = measured.len();
    assert_eq!(operations, 180);

    let (ta, tb) = (render(&a), render(&b));
    let (sa, sb) = (parse(&ta), parse(&tb));
    let fleet: [&[Sample]; 2] = [&sa, &sb];

    // Every operation is in exactly one instance's histogram.
    let count = total(&fleet, &format!("{LATENCY}_count"));
    assert_eq!(count, operations as f64);
    let buckets = summed_buckets(&fleet, LATENCY);
    assert_eq!(buckets.len(), DURATION_BUCKETS, "{buckets:?}");
    assert!(buckets.last().unwrap().0.is_infinite());
    assert_eq!(buckets.last().unwrap().1, count, "+Inf holds them all");
    for pair in buckets.windows(2) {
        assert!(pair[0].0 < pair[1].0, "bounds ascend: {buckets:?}");
        assert!(pair[0].1 <= pair[1].1, "cumulative: {buckets:?}");
    }
    // Each instance's figures are those of its own stats.
    for (poly, samples) in [(&a, &sa), (&b, &sb)] {
        for t in tenants {
            let usage = poly.stats().usage(t).unwrap();
            let of = |suffix: &str| {
                samples
                    .iter()
                    .find(|s| s.name == format!("{LATENCY}{suffix}") && s.labels["database"] == t)
                    .unwrap()
                    .value
            };
            assert_eq!(of("_count"), usage.latency.count() as f64);
            assert_eq!(of("_count"), usage.operations as f64);
            assert!((of("_sum") - usage.total_time_us as f64 / 1e6).abs() < 1e-6);
        }
    }
    let sum = total(&fleet, &format!("{LATENCY}_sum"));
    let measured_sum: f64 = measured.iter().map(Duration::as_secs_f64).sum();
    assert!(
        sum > 0.0 && sum <= measured_sum,
        "{sum} s counted, {measured_sum} s measured"
    );

    for q in [0.5, 0.99] {
        let estimate = histogram_quantile(q, &buckets);
        let truth = true_quantile(&mut measured, q);
        let (lower, upper) = bucket_of(truth);
        println!(
            "fleet p{}: {estimate} s from the buckets, {truth:?} measured",
            q * 100.0
        );
        assert!(
            lower <= estimate && estimate <= upper,
            "p{q}: {estimate} s outside ({lower}, {upper}] s, which holds the measured {truth:?}"
        );
    }
    a.close_all(Duration::from_secs(5)).await;
    b.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn histogram_series_stay_bounded_past_the_shown_databases() {
    let server = common::server().await;
    let poly = common::manager(&server, 4).await;
    let dbs = MAX_METRIC_DATABASES + 15;
    for i in 0..dbs {
        timed_op(&poly, &format!("card_{i:03}"), Duration::ZERO).await;
    }
    let samples = parse(&render(&poly));
    let series: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name.starts_with(LATENCY))
        .collect();
    let rows = MAX_METRIC_DATABASES + 1;
    assert!(
        series.len() <= rows * HISTOGRAM_SERIES,
        "{} series",
        series.len()
    );
    // Here every row is there: the 50 shown and the sum of the rest.
    assert_eq!(series.len(), rows * HISTOGRAM_SERIES);
    assert!(series
        .iter()
        .any(|s| s.labels["database"] == polymongo::OTHER_DATABASES));
    assert_eq!(
        total(&[&samples], &format!("{LATENCY}_count")),
        dbs as f64,
        "nothing lost in the rows"
    );
    // One pool open: one wait histogram.
    let waits = samples.iter().filter(|s| s.name.starts_with(WAIT)).count();
    assert_eq!(waits, HISTOGRAM_SERIES);
    poly.close_all(Duration::from_secs(5)).await;
}

/// Whether `name` is a counter's sample: a `_total`, or a histogram's `_bucket`, `_sum`,
/// `_count`.
fn is_counter(name: &str) -> bool {
    ["_total", "_bucket", "_sum", "_count"]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

#[tokio::test]
async fn a_database_entering_the_busiest_leaves_every_series_a_counter() {
    let server = common::server().await;
    let poly = common::manager(&server, 4).await;
    let items = poly.model::<Item>();
    let find = |db: String| {
        let h = items.db(&db).unwrap();
        async move { h.run(|c| c.find_one(doc! {})).await.unwrap() }
    };
    let insert = |db: &str| {
        let h = items.db(db).unwrap();
        async move { h.run(|c| c.insert_one(Item { n: 1 })).await.unwrap() }
    };
    let mut done = 0u64;
    // The busiest: 50 databases of 4 finds each; in the rest, 5 quiet ones and a newcomer
    // whose operations are inserts.
    for i in 0..MAX_METRIC_DATABASES {
        for _ in 0..4 {
            find(format!("enter_busy_{i:02}")).await;
            done += 1;
        }
    }
    for i in 0..5 {
        find(format!("enter_quiet_{i}")).await;
        done += 1;
    }
    for _ in 0..3 {
        insert("enter_new").await;
        done += 1;
    }
    let first = parse(&render(&poly));
    let shows = |samples: &[Sample], db: &str| {
        samples
            .iter()
            .any(|s| s.labels.get("database").is_some_and(|d| d == db))
    };
    assert!(!shows(&first, "enter_new"));
    let rest_inserts = |samples: &[Sample]| {
        samples
            .iter()
            .find(|s| {
                s.name == "polymongo_db_commands_total"
                    && s.labels["database"] == polymongo::OTHER_DATABASES
                    && s.labels["command"] == "insert"
            })
            .map(|s| s.value)
    };
    assert_eq!(rest_inserts(&first), Some(3.0));

    // The newcomer becomes the busiest: it is shown, and one of the 50 leaves.
    for _ in 0..3 {
        insert("enter_new").await;
        done += 1;
    }
    let second = parse(&render(&poly));
    assert!(shows(&second, "enter_new"));
    // Its inserts before it was shown (all 6) stay in the rest: the rest's insert counter
    // does not drop to 0 (which Prometheus would read as a restart, counting them twice).
    assert_eq!(rest_inserts(&second), Some(6.0));
    for before in first.iter().filter(|s| is_counter(&s.name)) {
        let now = second
            .iter()
            .find(|s| s.name == before.name && s.labels == before.labels);
        match now {
            Some(now) => assert!(
                now.value >= before.value,
                "{} {:?} went down: {} -> {}",
                before.name,
                before.labels,
                before.value,
                now.value
            ),
            // Only a database no longer shown loses its series.
            None => assert!(
                before
                    .labels
                    .get("database")
                    .is_some_and(|d| d.starts_with("enter_busy_")),
                "{} {:?} is gone",
                before.name,
                before.labels
            ),
        }
    }
    // Every operation is counted once over the family (counted here, independently).
    assert_eq!(
        total(&[&second], "polymongo_db_commands_total"),
        done as f64
    );
    assert_eq!(total(&[&second], &format!("{LATENCY}_count")), done as f64);

    // From then on its own series counts what it does.
    for _ in 0..2 {
        insert("enter_new").await;
        done += 1;
    }
    let third = parse(&render(&poly));
    let its_inserts = third
        .iter()
        .find(|s| {
            s.name == "polymongo_db_commands_total"
                && s.labels["database"] == "enter_new"
                && s.labels["command"] == "insert"
        })
        .map(|s| s.value);
    assert_eq!(its_inserts, Some(2.0));
    assert_eq!(rest_inserts(&third), Some(6.0));
    assert_eq!(total(&[&third], "polymongo_db_commands_total"), done as f64);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn waits_for_a_one_connection_pool_are_observed_once_each() {
    let server = common::server().await;
    let poly = common::manager(&server, 1).await;
    let tasks = 6;
    // One operation holds the one slot until the other five are queued behind it, so each
    // of them waits, however the machine schedules them.
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let holder = {
        let handle = poly.model::<Item>().db("waits").unwrap();
        tokio::spawn(async move {
            handle
                .run(|c| async move {
                    let _ = released.await;
                    c.find_one(doc! {}).await
                })
                .await
                .unwrap();
        })
    };
    common::eventually("the slot taken", Duration::from_secs(10), || async {
        poly.stats()
            .usage("waits")
            .is_some_and(|u| u.in_flight == 1)
            .then_some(())
    })
    .await;
    let ops: Vec<_> = (1..tasks)
        .map(|_| {
            let poly = poly.clone();
            tokio::spawn(async move { timed_op(&poly, "waits", Duration::from_millis(5)).await })
        })
        .collect();
    common::eventually("five queued", Duration::from_secs(10), || async {
        (poly.stats().general().primary.stats.wait_queue == (tasks - 1) as i64).then_some(())
    })
    .await;
    release.send(()).unwrap();
    holder.await.unwrap();
    for op in ops {
        op.await.unwrap();
    }
    let stats = poly.stats().general().primary.stats;
    assert_eq!(stats.wait_queue, 0);
    assert_eq!(stats.queue_wait.count(), tasks as u64 - 1, "{stats:?}");
    assert!(stats.queue_wait.sum_us > 0);
    let samples = parse(&render(&poly));
    let count = total(&[&samples], &format!("{WAIT}_count"));
    assert_eq!(count, (tasks - 1) as f64);
    let buckets = summed_buckets(&[&samples], WAIT);
    assert_eq!(buckets.last().unwrap().1, count);
    assert!(
        (total(&[&samples], &format!("{WAIT}_sum")) - stats.queue_wait.sum_us as f64 / 1e6).abs()
            < 1e-6
    );

    // A wait given up (its future dropped at a timeout) is observed too.
    let holder = {
        let poly = poly.clone();
        tokio::spawn(async move { timed_op(&poly, "waits", Duration::from_millis(300)).await })
    };
    common::eventually("the slot taken", Duration::from_secs(5), || async {
        (poly.stats().general().primary.stats.in_use > 0
            || poly.stats().usage("waits").is_some_and(|u| u.in_flight > 0))
        .then_some(())
    })
    .await;
    let given_up = tokio::time::timeout(
        Duration::from_millis(30),
        timed_op(&poly, "waits", Duration::ZERO),
    )
    .await;
    assert!(given_up.is_err(), "the slot was held");
    holder.await.unwrap();
    let stats = poly.stats().general().primary.stats;
    assert_eq!(stats.queue_wait.count(), tasks as u64, "{stats:?}");
    poly.close_all(Duration::from_secs(5)).await;
}

#[cfg(feature = "prometheus-client")]
#[tokio::test]
async fn the_collector_puts_polymongo_beside_the_application_series() {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::registry::Registry;

    let server = common::server().await;
    let poly = common::manager(&server, 4).await;
    for (db, n) in [("app_a", 3), ("app_b", 5)] {
        for _ in 0..n {
            timed_op(&poly, db, Duration::ZERO).await;
        }
    }

    let mut registry = Registry::default();
    let requests: Counter = Counter::default();
    registry.register("app_requests", "Requests served", requests.clone());
    requests.inc_by(7);
    registry.register_collector(Box::new(polymongo::metrics::collector(&poly)));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE polymongo_db_command_duration_seconds histogram"));
    assert!(text.contains("# TYPE polymongo_db_commands counter"));
    let samples = parse(&text);
    let find = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|s| s.name == name && same_labels(&s.labels, labels))
            .unwrap_or_else(|| panic!("no {name}{labels:?} in\n{text}"))
            .value
    };
    assert_eq!(find("app_requests_total", &[]), 7.0);

    // The values are those of `stats()`.
    for db in ["app_a", "app_b"] {
        let usage = poly.stats().usage(db).unwrap();
        // `run` with an `async` block counts as `other`.
        assert_eq!(usage.by_command.get("other"), Some(&usage.operations));
        for (command, n) in &usage.by_command {
            assert_eq!(
                find(
                    "polymongo_db_commands_total",
                    &[("database", db), ("command", command)]
                ),
                *n as f64
            );
        }
        let labels = [("database", db)];
        assert_eq!(
            find(&format!("{LATENCY}_count"), &labels),
            usage.latency.count() as f64
        );
        assert!(
            (find(&format!("{LATENCY}_sum"), &labels) - usage.total_time_us as f64 / 1e6).abs()
                < 1e-6
        );
        for ((bound, cumulative), i) in usage.latency.cumulative().zip(0..) {
            let le = bound.map_or("+Inf".to_owned(), |us| (us as f64 / 1e6).to_string());
            assert_eq!(
                find(
                    &format!("{LATENCY}_bucket"),
                    &[("database", db), ("le", &le)]
                ),
                cumulative as f64,
                "bucket {i}"
            );
        }
    }
    let primary = poly.stats().general().primary;
    let pool = [("cluster", primary.cluster.as_str()), ("kind", "shared")];
    assert_eq!(
        find("polymongo_pool_checkouts_total", &pool),
        primary.stats.checkouts as f64
    );
    assert_eq!(
        find(&format!("{WAIT}_count"), &pool),
        primary.stats.queue_wait.count() as f64
    );

    // Same series, same values as the standalone render.
    let standalone = parse(&render(&poly));
    let ours: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name.starts_with("polymongo_"))
        .collect();
    assert_eq!(ours.len(), standalone.len());
    for s in &standalone {
        let labels: Vec<(&str, &str)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let twin = ours
            .iter()
            .find(|o| {
                o.name == s.name
                    && o.labels.len() == s.labels.len()
                    && same_labels(&o.labels, &labels)
            })
            .unwrap_or_else(|| panic!("{s:?} not in the collector's output"));
        assert!((twin.value - s.value).abs() < 1e-6, "{s:?} vs {twin:?}");
    }
    poly.close_all(Duration::from_secs(5)).await;
}

/// Whether `have` holds every label of `want` (`le` compared as a number: the text render
/// writes `0.000001`, `prometheus_client` `1e-6`).
#[cfg(feature = "prometheus-client")]
fn same_labels(have: &BTreeMap<String, String>, want: &[(&str, &str)]) -> bool {
    want.iter().all(|(k, v)| {
        have.get(*k).is_some_and(|h| {
            h == v || (*k == "le" && h.parse::<f64>().ok() == v.parse::<f64>().ok())
        })
    })
}

/// A database re-routed while a handle taken before still holds its old entry has two sets of
/// counters alive at once, both busy; the exposition still shows it as one series per family
/// (a second series with the same labels makes Prometheus reject the whole scrape).
#[tokio::test]
async fn a_database_rerouted_under_a_held_handle_is_one_series() {
    let server = common::server().await;
    let poly = common::manager(&server, 4).await;
    let old = poly.model::<Item>().db("rerouted").unwrap();
    for _ in 0..3 {
        old.run(|c| c.find_one(doc! {})).await.unwrap();
    }
    poly.scale()
        .set_db(
            &["rerouted"],
            polymongo::DbConfig::new().read_concern(mongodb::options::ReadConcern::local()),
        )
        .await
        .unwrap();
    for _ in 0..2 {
        timed_op(&poly, "rerouted", Duration::ZERO).await;
    }
    old.run(|c| c.find_one(doc! {})).await.unwrap();
    let samples = parse(&render(&poly));
    let rows: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "polymongo_db_errors_total")
        .collect();
    let shown = rows
        .iter()
        .filter(|s| s.labels["database"] == "rerouted")
        .count();
    assert_eq!(shown, 1, "{rows:?}");
    let mut series: Vec<(&str, &BTreeMap<String, String>)> = samples
        .iter()
        .map(|s| (s.name.as_str(), &s.labels))
        .collect();
    let all = series.len();
    series.sort();
    series.dedup();
    assert_eq!(series.len(), all, "a series written twice");
    assert_eq!(
        total(&[&samples], &format!("{LATENCY}_count")),
        6.0,
        "every operation counted once"
    );
    drop(old);
    poly.close_all(Duration::from_secs(5)).await;
}
