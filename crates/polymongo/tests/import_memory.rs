//! The memory an import holds stays bounded whatever its input: a gzip bomb (a few KiB that
//! inflate to a million empty lines, each a failure) in every mode, with the process's
//! resident memory sampled while it runs. Alone in its binary so that no other test's
//! allocations blur the figure.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use polymongo::bulk::{ImportOptions, OnError, WriteMode};
use polymongo::Error;

const HEADER: &str = r#"{"polymongo_dump":{"version":1,"database":"d","created":"2026-11-25T00:00:00Z","producer":"test"}}"#;
const COLLECTION: &str =
    r#"{"collection":{"name":"c","type":"collection","options":{},"indexes":[]}}"#;

fn gzip_bomb(newlines: usize) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    writeln!(gz, "{HEADER}\n{COLLECTION}").unwrap();
    let chunk = vec![b'\n'; 1 << 16];
    let mut left = newlines;
    while left > 0 {
        let k = left.min(chunk.len());
        gz.write_all(&chunk[..k]).unwrap();
        left -= k;
    }
    gz.finish().unwrap()
}

/// Resident memory of this process in bytes (Linux), else `None`.
fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_does_not_grow_memory_in_any_mode() {
    if rss().is_none() {
        eprintln!("no /proc/self/status: resident memory cannot be sampled here");
        return;
    }
    let server = common::server().await;
    let poly = common::manager(&server, 4).await;
    let lines = 1_000_000;
    let bomb = gzip_bomb(lines);
    assert!(bomb.len() < 8 * 1024, "{} bytes", bomb.len());
    for (on_error, mode) in [
        (OnError::Continue, WriteMode::Insert),
        (OnError::Continue, WriteMode::Upsert),
        (OnError::Stop, WriteMode::Insert),
        (OnError::Stop, WriteMode::Upsert),
    ] {
        let base = rss().unwrap();
        let peak = Arc::new(AtomicU64::new(base));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, done) = (peak.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    if let Some(now) = rss() {
                        peak.fetch_max(now, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        let result = poly
            .bulk()
            .import_stream(
                "memory_bomb",
                &bomb[..],
                ImportOptions::default()
                    .on_error(on_error)
                    .mode(mode)
                    .drop_target_first(true),
            )
            .await;
        done.store(true, Ordering::Relaxed);
        sampler.await.unwrap();
        let report = match result {
            Err(Error::Import(report)) => report,
            other => panic!("expected the import to stop, got {other:?}"),
        };
        let failures = report.failures.len() as u64 + report.failures_dropped;
        if on_error == OnError::Continue {
            assert!(failures >= lines as u64, "{failures}");
        }
        assert!(report.failures.len() <= 1000);
        let grown = peak.load(Ordering::Relaxed).saturating_sub(base);
        assert!(
            grown < 64 * 1024 * 1024,
            "{on_error:?} {mode:?}: resident memory grew by {} MiB over {failures} failures",
            grown / (1024 * 1024)
        );
    }
    poly.close_all(Duration::from_secs(5)).await;
}
