//! The built binary writing into a pipe its reader already closed (`… | head`): it ends
//! quietly with 141, as a tool killed by SIGPIPE would, never with a panic and a backtrace.

mod common;

use common::{spawn, HANG};
use polymongo::mongodb::bson::{doc, Document};
use polymongo_testkit::TestServer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Runs the binary with its standard output closed by the reader after `keep_lines` lines
/// (0: before it writes anything); returns the exit code and standard error.
async fn with_closed_stdout(args: &[&str], keep_lines: usize) -> (i32, String) {
    let mut child = spawn(args);
    let stdout = child.stdout.take().expect("stdout");
    if keep_lines > 0 {
        let mut lines = BufReader::new(stdout).lines();
        for _ in 0..keep_lines {
            tokio::time::timeout(HANG, lines.next_line())
                .await
                .expect("a line in time")
                .expect("readable")
                .expect("a line");
        }
    } else {
        drop(stdout);
    }
    let mut err = String::new();
    let mut stderr = child.stderr.take().expect("stderr");
    let status = tokio::time::timeout(HANG, async {
        let _ = stderr.read_to_string(&mut err).await;
        child.wait().await
    })
    .await
    .expect("the binary ended")
    .expect("status");
    (status.code().unwrap_or(-1), err)
}

fn assert_quiet(code: i32, err: &str, case: &str) {
    assert_eq!(code, 141, "{case}: {err}");
    assert!(!err.contains("panicked"), "{case}: {err}");
    assert!(!err.contains("Broken pipe"), "{case}: {err}");
}

#[tokio::test]
async fn every_output_ends_quietly_when_its_reader_is_gone() {
    let server = TestServer::start().await.expect("server");
    let raw = polymongo::mongodb::Client::with_uri_str(server.uri())
        .await
        .unwrap();
    raw.database("piped")
        .collection::<Document>("items")
        .insert_many((0..2_000).map(|i| doc! { "_id": i, "v": format!("value {i}") }))
        .await
        .unwrap();
    let uri = server.uri();
    let migrations = tempfile::tempdir().unwrap();
    std::fs::write(
        migrations.path().join("0001_index.json"),
        r#"{"up": [{"createIndexes": "items", "indexes": [{"key": {"v": 1}, "name": "v_1"}]}]}"#,
    )
    .unwrap();
    let dir = migrations.path().to_str().unwrap();
    for (case, args) in [
        ("stats --json", vec!["--uri", uri, "stats", "--json"]),
        ("dbs", vec!["--uri", uri, "dbs"]),
        (
            "export to stdout",
            vec!["--uri", uri, "-q", "export", "piped"],
        ),
        ("completions", vec!["completions", "bash"]),
        (
            "migrate status",
            vec!["--uri", uri, "migrate", "--dir", dir, "status", "piped"],
        ),
        (
            "migrate apply --json",
            vec![
                "--uri", uri, "--json", "migrate", "--dir", dir, "apply", "piped",
            ],
        ),
    ] {
        let (code, err) = with_closed_stdout(&args, 0).await;
        assert_quiet(code, &err, case);
    }
    // A stream: the reader takes three snapshots of `top --json` and goes.
    let (code, err) =
        with_closed_stdout(&["--uri", uri, "--json", "top", "--interval", "1"], 3).await;
    assert_quiet(code, &err, "top --json | head -3");
}
