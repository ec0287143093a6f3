//! The binary in a real terminal (tmux): the progress bar of an export and the `top` screen,
//! captured from the pane; Ctrl-C during an import, which reports what was written; and the
//! bar of a migration run, which Ctrl-C stops with its report.
//!
//! The export is slowed by the test kit's fault proxy (latency on every round trip) so the bar
//! is on screen long enough to be captured. Skipped, with its reason, when tmux is absent.
//! To watch by hand:
//! `tmux new-session 'polymongo --uri … export big --batch-size 10 -o /tmp/big.ndjson'`.

use std::process::Stdio;
use std::time::Duration;

use futures_util::TryStreamExt;
use polymongo::mongodb::bson::{doc, Document};
use polymongo::mongodb::Client;
use polymongo_testkit::{FaultProxy, TestServer};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

mod common;

use common::tmux::{tmux_available, Tmux};

const BIN: &str = env!("CARGO_BIN_EXE_polymongo");
const HANG: Duration = Duration::from_secs(60);

async fn seeded(n: i32) -> (TestServer, Client) {
    let server = TestServer::start().await.expect("server");
    let raw = Client::with_uri_str(server.uri()).await.unwrap();
    raw.database("term")
        .collection::<Document>("items")
        .insert_many((0..n).map(|i| doc! { "_id": i, "v": format!("value {i}") }))
        .await
        .unwrap();
    (server, raw)
}

#[tokio::test]
async fn the_export_progress_bar_and_top_render_in_a_terminal() {
    if !tmux_available() {
        polymongo_testkit::record_skip(
            "tmux is not installed, so there is no terminal to render in",
        );
        return;
    }
    let (server, raw) = seeded(2_000).await;
    let proxy = FaultProxy::start(&format!("127.0.0.1:{}", server.port().unwrap()))
        .await
        .unwrap();
    proxy.set_latency(Duration::from_millis(25));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("term.ndjson");
    let uri = proxy.uri_for(server.uri());
    let tmux = Tmux::start(&format!(
        "{BIN} --uri '{uri}' export term --batch-size 10 -o {}; sleep 30",
        out.display()
    ));
    // The bar, part way: prefix, bar, a position short of the estimated total, rate, ETA.
    let screen = tmux
        .wait_for(|s| {
            s.lines().any(|l| {
                l.contains("export [")
                    && l.contains("/2,000 docs")
                    && !l.contains("] 0/")
                    && !l.contains("] 2,000/")
            })
        })
        .await;
    assert!(screen.contains("/s") && screen.contains("eta"), "{screen}");
    eprintln!("captured:\n{screen}");
    // Then the summary, the bar cleared.
    let screen = tmux
        .wait_for(|s| s.contains("exported 2000 documents"))
        .await;
    assert!(
        !screen.contains("export ["),
        "the bar is cleared at the end:\n{screen}"
    );
    drop(tmux);

    proxy.pass_through();
    let top = Tmux::start(&format!("{BIN} --uri '{}' top --interval 1", server.uri()));
    let screen = top
        .wait_for(|s| s.contains("polymongo top") && s.contains("term"))
        .await;
    assert!(screen.contains("server connections:"), "{screen}");
    eprintln!("captured:\n{screen}");
    // It refreshes in place: a database created now appears on the same screen.
    raw.database("term_new")
        .collection::<Document>("x")
        .insert_one(doc! { "a": 1 })
        .await
        .unwrap();
    let screen = top.wait_for(|s| s.contains("term_new")).await;
    assert_eq!(screen.matches("polymongo top").count(), 1, "{screen}");
}

/// Exports database `term` of `server` to a file with the binary, and puts a proxy adding
/// `latency` in front of the server, so an import through it is slow enough to watch.
async fn exported_behind_a_slow_proxy(
    server: &TestServer,
    latency: Duration,
) -> (tempfile::TempDir, std::path::PathBuf, FaultProxy) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dump.ndjson");
    let status = Command::new(BIN)
        .args([
            "--uri",
            server.uri(),
            "export",
            "term",
            "-o",
            file.to_str().unwrap(),
        ])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let proxy = FaultProxy::start(&format!("127.0.0.1:{}", server.port().unwrap()))
        .await
        .unwrap();
    proxy.set_latency(latency);
    (dir, file, proxy)
}

#[tokio::test]
async fn ctrl_c_during_an_import_reports_what_was_written() {
    let (server, raw) = seeded(3_000).await;
    // A slow target, so the import is still running when Ctrl-C comes.
    let (_dir, file, proxy) =
        exported_behind_a_slow_proxy(&server, Duration::from_millis(50)).await;
    let mut child = Command::new(BIN)
        .args([
            "--uri",
            &proxy.uri_for(server.uri()),
            "import",
            "term_copy",
            "-i",
            file.to_str().unwrap(),
            "--batch-size",
            "50",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let items = raw.database("term_copy").collection::<Document>("items");
    let until = tokio::time::Instant::now() + HANG;
    loop {
        // `find` rather than `count`: the collection may not exist yet (nx-27017 quirk).
        let n = items
            .find(doc! {})
            .await
            .unwrap()
            .count_documents_hint()
            .await;
        if n > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the import never wrote"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(HANG, child.wait())
        .await
        .expect("exit")
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    let reported: u64 = err
        .split("interrupted; ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no report in {err:?}"));
    proxy.pass_through();
    let stored = items
        .find(doc! {})
        .await
        .unwrap()
        .count_documents_hint()
        .await;
    // Acknowledged writes are all there; at most the one batch in flight may have landed too.
    assert!(
        reported <= stored && stored <= reported + 50,
        "reported {reported}, stored {stored}"
    );
    assert!(reported < 3_000, "interrupted before the end");
}

/// Counting through a cursor (nx-27017 refuses `count` on a missing collection).
trait CountHint {
    async fn count_documents_hint(self) -> u64;
}

impl CountHint for polymongo::mongodb::Cursor<Document> {
    async fn count_documents_hint(mut self) -> u64 {
        let mut n = 0;
        while self.advance().await.unwrap() {
            n += 1;
        }
        n
    }
}

#[tokio::test]
async fn the_import_bar_counts_bytes_with_an_eta() {
    if !tmux_available() {
        polymongo_testkit::record_skip(
            "tmux is not installed, so there is no terminal to render in",
        );
        return;
    }
    let (server, _raw) = seeded(2_000).await;
    let (_dir, file, proxy) =
        exported_behind_a_slow_proxy(&server, Duration::from_millis(25)).await;
    let tmux = Tmux::start(&format!(
        "{BIN} --uri '{}' import term_in -i {} --batch-size 20; sleep 30",
        proxy.uri_for(server.uri()),
        file.display()
    ));
    let screen = tmux
        .wait_for(|s| {
            s.lines().any(|l| {
                l.contains("import [")
                    && l.contains("eta")
                    && l.contains(" docs")
                    && !l.contains(" 0 docs")
            })
        })
        .await;
    eprintln!("captured:\n{screen}");
    let screen = tmux
        .wait_for(|s| s.contains("2000 documents written"))
        .await;
    assert!(!screen.contains("import ["), "{screen}");
}

#[tokio::test]
async fn the_migration_bar_renders_and_ctrl_c_stops_the_run_with_its_report() {
    if !tmux_available() {
        polymongo_testkit::record_skip(
            "tmux is not installed, so there is no terminal to render in",
        );
        return;
    }
    let server = TestServer::start().await.expect("server");
    let raw = Client::with_uri_str(server.uri()).await.unwrap();
    let names: Vec<String> = (0..40).map(|i| format!("tm_{i:04}")).collect();
    for name in &names {
        raw.database(name)
            .collection::<Document>("seed")
            .insert_one(doc! { "created": true })
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("0001_index.json"),
        r#"{"up": [{"createIndexes": "users", "indexes": [{"key": {"email": 1}, "name": "email_1"}]}]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("0002_seed.json"),
        r#"{"up": [{"insert": "settings", "documents": [{"_id": "plan"}], "ordered": false}]}"#,
    )
    .unwrap();
    // Every round trip slowed, so the run is on screen for seconds.
    let proxy = FaultProxy::start(&format!("127.0.0.1:{}", server.port().unwrap()))
        .await
        .unwrap();
    proxy.set_latency(Duration::from_millis(25));
    let tmux = Tmux::start(&format!(
        "{BIN} --uri '{}' migrate --dir {} apply --prefix tm_ --concurrency 2; echo exit=$?; sleep 30",
        proxy.uri_for(server.uri()),
        dir.path().display()
    ));
    // The bar, part way: done/total, failed, rate, ETA.
    let screen = tmux
        .wait_for(|s| {
            s.lines().any(|l| {
                l.contains("apply [")
                    && l.contains("/40 databases, 0 failed")
                    && !l.contains("] 0/40")
                    && l.contains("db/s")
                    && l.contains("eta")
            })
        })
        .await;
    eprintln!("captured:\n{screen}");
    // Ctrl-C typed in the terminal: the terminal echoes `^C` where the cursor is.
    tmux.keys("C-c");
    let screen = tmux.wait_for(|s| s.contains("exit=")).await;
    eprintln!("captured:\n{screen}");
    assert!(screen.contains("exit=130"), "{screen}");
    assert!(screen.contains("stopped: interrupted"), "{screen}");
    assert!(!screen.contains("apply ["), "the bar is cleared:\n{screen}");
    proxy.pass_through();
    // Those in flight finished and released their locks; the rest were not started.
    let (mut done, mut untouched) = (0, 0);
    for name in &names {
        let ledger: Vec<Document> = raw
            .database(name)
            .collection::<Document>(polymongo::migrate::MIGRATIONS_COLLECTION)
            .find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        match ledger.len() {
            0 => untouched += 1,
            2 => done += 1,
            _ => panic!("{name}: {ledger:?}"),
        }
    }
    assert!(
        done > 0 && untouched > 0,
        "{done} done, {untouched} untouched"
    );
    assert!(
        screen.contains(&format!(
            "{done} of 40 databases done, 0 failed, {untouched} not started"
        )),
        "{screen}"
    );
}
