//! Export, import and copy of N small documents, side by side with a plain raw-driver loop
//! (cursor → `insert_many` of 1 000) on the same server, with each run's peak RSS.
//!
//! Each measured run is its own process (so its peak RSS is its own), against one test-kit
//! server seeded once.
//!
//! ```text
//! cargo bench -p polymongo --bench bulk               # N = 1 000 000
//! cargo bench -p polymongo --bench bulk -- 100000     # another N
//! ```

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use mongodb::bson::{doc, DateTime, Document, RawDocumentBuf};
use mongodb::Client;
use polymongo::bulk::{ExportOptions, ImportOptions};
use polymongo::PolyMongo;
use polymongo_testkit::TestServer;

const SOURCE: &str = "bench_src";

/// Peak resident set of this process, in MiB (`VmHWM`).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

async fn raw_copy(uri: &str, target: &str) -> u64 {
    let client = Client::with_uri_str(uri).await.expect("client");
    let from = client
        .database(SOURCE)
        .collection::<RawDocumentBuf>("items");
    let to = client
        .database(target)
        .collection::<RawDocumentBuf>("items");
    let mut cursor = from.find(doc! {}).await.expect("find");
    let mut batch = Vec::with_capacity(1000);
    let mut n = 0u64;
    while let Some(d) = cursor.try_next().await.expect("next") {
        batch.push(d);
        if batch.len() == 1000 {
            to.insert_many(&batch).ordered(false).await.expect("insert");
            n += batch.len() as u64;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        to.insert_many(&batch).ordered(false).await.expect("insert");
        n += batch.len() as u64;
    }
    // `shutdown` waits for every cursor of the client to be dropped.
    drop(cursor);
    client.shutdown().await;
    n
}

/// One measured run; prints `documents seconds peak_rss_mib`.
fn child(mode: &str, uri: &str, file: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (n, took) = rt.block_on(async {
        let poly = PolyMongo::builder().uri(uri).build().await.expect("build");
        let started = Instant::now();
        let n = match mode {
            "raw_copy" => raw_copy(uri, "bench_raw").await,
            "export" => {
                let out = tokio::fs::File::create(file).await.expect("file");
                let mut out = tokio::io::BufWriter::new(out);
                let report = poly
                    .bulk()
                    .export_stream(SOURCE, &mut out, ExportOptions::default())
                    .await
                    .expect("export");
                report.documents
            }
            "import" => {
                let input = tokio::fs::File::open(file).await.expect("file");
                let report = poly
                    .bulk()
                    .import_stream("bench_imported", input, ImportOptions::default())
                    .await
                    .expect("import");
                report.documents
            }
            "copy" => {
                let report = poly
                    .bulk()
                    .copy_database(SOURCE, "bench_copied", ImportOptions::default())
                    .await
                    .expect("copy");
                report.written.documents
            }
            other => panic!("unknown mode {other}"),
        };
        let took = started.elapsed();
        poly.close_all(Duration::from_secs(5)).await;
        (n, took)
    });
    println!("{n} {} {}", took.as_secs_f64(), peak_rss_mib());
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("child") {
        child(&args[1], &args[2], &args[3]);
        return;
    }
    let n: u64 = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = rt.block_on(async {
        let server = TestServer::start().await.expect("test server");
        let client = Client::with_uri_str(server.uri()).await.expect("client");
        let items = client.database(SOURCE).collection::<Document>("items");
        let started = Instant::now();
        let mut i = 0u64;
        while i < n {
            let end = (i + 10_000).min(n);
            items
                .insert_many((i..end).map(|k| {
                    doc! {
                        "_id": k as i64,
                        "name": format!("user {k}"),
                        "n": (k % 1000) as i32,
                        "at": DateTime::from_millis(1_700_000_000_000 + k as i64),
                    }
                }))
                .await
                .expect("seed");
            i = end;
        }
        eprintln!(
            "seeded {n} documents in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        client.shutdown().await;
        server
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("dump.ndjson");
    let file = file.to_str().expect("utf-8 path");
    let exe = std::env::current_exe().expect("exe");
    println!("| run | documents | seconds | documents/s | time vs raw loop | peak RSS (MiB) |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut raw_secs = None;
    for mode in ["raw_copy", "export", "import", "copy"] {
        let out = Command::new(&exe)
            .args(["child", mode, server.uri(), file])
            .output()
            .expect("child");
        if !out.status.success() {
            println!(
                "| {mode} | failed: {} | | | | |",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            continue;
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<f64> = line
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let [docs, secs, rss] = fields[..] else {
            println!("| {mode} | unreadable output {line:?} | | | | |");
            continue;
        };
        let base = *raw_secs.get_or_insert(secs);
        println!(
            "| {mode} | {docs} | {secs:.2} | {:.0} | {:.2} | {rss:.1} |",
            docs / secs,
            secs / base
        );
    }
    if let Ok(meta) = std::fs::metadata(file) {
        println!(
            "\ndump file: {:.1} MiB",
            meta.len() as f64 / 1024.0 / 1024.0
        );
    }
    drop(server);
}
