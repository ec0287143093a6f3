//! `polymongo top`: the live view of the cluster, from the server's own figures.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use polymongo::mongodb::bson::{doc, Document};
use polymongo::{Error, PolyMongo};
use serde::Serialize;

use crate::cluster::number;
use crate::commands::{fail, human_bytes};
use crate::exit;
use crate::out::{self, Outcome};

/// Databases shown, largest first.
const SHOWN: usize = 20;

/// One `top` snapshot.
#[derive(Debug, Serialize)]
struct TopSnapshot {
    connections: i64,
    /// `None` when the server reports no `opcounters`.
    operations_per_second: Option<Vec<(String, f64)>>,
    databases: Vec<(String, i64)>,
}

pub async fn top(poly: &PolyMongo, json: bool, interval: u64, once: bool) -> Outcome {
    let admin = match poly.database("admin") {
        Ok(db) => db,
        Err(e) => return Ok(fail(&e)),
    };
    let live = !once && std::io::stdout().is_terminal();
    let interval = Duration::from_secs(interval);
    let mut previous: Option<(Instant, Document)> = None;
    loop {
        let status = match admin.run_command(doc! { "serverStatus": 1 }).await {
            Ok(s) => s,
            Err(e) => return Ok(fail(&Error::from(e))),
        };
        let counters = status.get_document("opcounters").ok().cloned();
        let rates = match (&counters, &previous) {
            (None, _) => None,
            (Some(now), Some((at, before))) => {
                Some(rates(now, before, at.elapsed().as_secs_f64().max(1e-3)))
            }
            (Some(_), None) => Some(Vec::new()),
        };
        if let Some(counters) = counters {
            previous = Some((Instant::now(), counters));
        }
        let mut databases: Vec<(String, i64)> = match poly.stats().list_databases().await {
            Ok(list) => list.into_iter().map(|d| (d.name, d.size_on_disk)).collect(),
            Err(e) => return Ok(fail(&e)),
        };
        databases.sort_by_key(|d| std::cmp::Reverse(d.1));
        databases.truncate(SHOWN);
        let snapshot = TopSnapshot {
            connections: status
                .get_document("connections")
                .map(|c| number(c, "current"))
                .unwrap_or(0),
            operations_per_second: rates,
            databases,
        };
        if json {
            out::json_line(&snapshot)?;
        } else {
            out::bytes(render(&snapshot, live).as_bytes())?;
        }
        // A terminal refreshes; JSON lines go on unless --once; anything else prints once.
        let again = live || (json && !once);
        if !again {
            return Ok(exit::OK);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(exit::OK),
        }
    }
}

/// Each counter's growth per second between two `opcounters` documents. The difference is
/// taken in `f64`: the numbers are the server's, and two far apart must not overflow.
fn rates(now: &Document, before: &Document, secs: f64) -> Vec<(String, f64)> {
    now.keys()
        .map(|k| {
            let grown = number(now, k) as f64 - number(before, k) as f64;
            (k.clone(), grown / secs)
        })
        .collect()
}

fn render(s: &TopSnapshot, live: bool) -> String {
    let mut out = String::new();
    if live {
        // Clear the screen and go home, so the table refreshes in place.
        out.push_str("\x1b[2J\x1b[H");
    }
    out.push_str(&format!(
        "polymongo top — server connections: {}\n\n",
        s.connections
    ));
    match &s.operations_per_second {
        None => out.push_str("operations/s: n/a (the server reports no opcounters)\n"),
        Some(rates) if rates.is_empty() => out.push_str("operations/s: (measuring…)\n"),
        Some(rates) => {
            out.push_str("operations/s:");
            for (name, rate) in rates {
                out.push_str(&format!("  {name} {rate:.1}"));
            }
            out.push('\n');
        }
    }
    out.push_str(&format!("\n{:40} {:>12}\n", "database", "size"));
    for (name, size) in &s.databases {
        out.push_str(&format!("{name:40} {:>12}\n", human_bytes(*size)));
    }
    if live {
        out.push_str("\nCtrl-C to quit\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_far_apart_give_a_rate_without_overflow() {
        let before = doc! { "query": i64::MIN, "insert": 10_i64 };
        let now = doc! { "query": i64::MAX, "insert": 30_i64 };
        let rates = rates(&now, &before, 2.0);
        assert_eq!(rates[1], ("insert".to_owned(), 10.0));
        assert!(rates[0].1 > 9e18, "{rates:?}");
    }
}
