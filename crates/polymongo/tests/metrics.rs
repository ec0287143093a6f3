//! Prometheus exposition: agrees with stats, bounded labels, well-formed, no secrets.
#![cfg(feature = "metrics")]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use polymongo::metrics::{render, MAX_METRIC_DATABASES};
use polymongo::{DbConfig, Model, PolyMongo, OTHER_DATABASES};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Item {
    n: i64,
}
impl Model for Item {
    const COLLECTION: &'static str = "items";
}

/// (name, labels, value) of every sample; panics on a malformed line.
fn samples(text: &str) -> Vec<(String, String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no value: {l}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {l}"));
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => {
                    assert!(rest.ends_with('}'), "unclosed labels: {l}");
                    (n.to_owned(), rest.trim_end_matches('}').to_owned())
                }
                None => (series.to_owned(), String::new()),
            };
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{l}"
            );
            (name, labels, value)
        })
        .collect()
}

#[tokio::test]
async fn exposition_agrees_with_stats_and_bounds_database_labels() {
    // Counts a managed change stream.
    let Some(server) =
        polymongo_testkit::server_for(&[polymongo_testkit::Capability::ChangeStreams]).await
    else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .usage_analytics(polymongo::UsageAnalytics::Commands)
        .db(
            "hidden",
            DbConfig::new()
                .uri(format!("mongodb://u:M3tr1cSecret@127.0.0.1:{port}/"))
                .max_connections(1),
        )
        .build()
        .await
        .unwrap();
    let items = poly.model::<Item>();
    let dbs = MAX_METRIC_DATABASES + 30;
    for i in 0..dbs {
        // Uneven traffic, so the ranking has a tail.
        for n in 0..(1 + (i % 3) as i64) {
            items
                .db(&format!("m_{i:03}"))
                .unwrap()
                .insert_one(Item { n })
                .await
                .unwrap();
        }
    }
    let _stream = items.db("m_000").unwrap().watch().await.unwrap();
    let text = render(&poly);
    assert!(!text.contains("M3tr1cSecret"), "password in metrics");
    let all = samples(&text);

    let general = poly.stats().general();
    let primary = all
        .iter()
        .find(|(n, l, _)| n == "polymongo_pool_connections" && l.contains("kind=\"shared\""))
        .unwrap();
    assert_eq!(primary.2, general.primary.stats.total as f64);
    assert!(all
        .iter()
        .any(|(n, _, v)| n == "polymongo_live_clients" && *v == general.live_clients as f64));
    assert!(all
        .iter()
        .any(|(n, _, v)| n == "polymongo_change_streams" && *v == 1.0));

    let databases: BTreeSet<String> = all
        .iter()
        .filter(|(n, _, _)| n == "polymongo_db_errors_total")
        .map(|(_, l, _)| l.clone())
        .collect();
    assert_eq!(databases.len(), MAX_METRIC_DATABASES + 1, "{databases:?}");
    assert!(databases.iter().any(|l| l.contains(OTHER_DATABASES)));
    // Nothing lost in the aggregation: inserts add up across the shown and summed series.
    let inserts: f64 = all
        .iter()
        .filter(|(n, l, _)| n == "polymongo_db_commands_total" && l.contains("command=\"insert\""))
        .map(|(_, _, v)| v)
        .sum();
    let expected: i64 = (0..dbs).map(|i| 1 + (i % 3) as i64).sum();
    assert_eq!(inserts, expected as f64);
    poly.close_all(Duration::from_secs(5)).await;
}

/// Two clusters whose connection strings differ only in a secret (a password being rotated,
/// say) have the same label once the secret is hidden: each pool still gets series of its
/// own, or Prometheus refuses the whole scrape for a duplicate series.
#[tokio::test]
async fn clusters_that_differ_only_in_a_secret_are_distinct_series() {
    let server = common::server().await;
    // Credentials the test server does not check: the pools open (the monitor needs no
    // authentication) and operations fail to authenticate, which is all this needs.
    let with = |password: &str| {
        server
            .uri()
            .replacen("://", &format!("://rotating:{password}@"), 1)
    };
    let poly = PolyMongo::builder()
        .uri(with("OldPw1"))
        .default_db("main")
        .db("moved", DbConfig::new().uri(with("NewPw2")))
        .build()
        .await
        .unwrap();
    for db in ["main", "moved"] {
        let _ = poly.ping(db).await;
    }
    common::eventually("both pools open", Duration::from_secs(10), || async {
        let general = poly.stats().general();
        (general.other_clusters.len() == 1
            && general.other_clusters[0].state != polymongo::ConnectionState::Disconnected)
            .then_some(())
    })
    .await;
    let text = render(&poly);
    for secret in ["OldPw1", "NewPw2"] {
        assert!(!text.contains(secret), "{text}");
    }
    let pools: Vec<String> = samples(&text)
        .into_iter()
        .filter(|(n, _, _)| n == "polymongo_pool_max_size")
        .map(|(_, l, _)| l)
        .collect();
    assert_eq!(pools.len(), 2, "{pools:?}");
    assert_ne!(pools[0], pools[1], "two pools under one label set");
    poly.close_all(Duration::from_secs(5)).await;
}
