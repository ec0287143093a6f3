//! End-to-end: the built `polymongo` binary against test-kit servers, effects checked with a
//! raw client.

use futures_util::TryStreamExt;
use polymongo::mongodb::bson::{doc, Document, RawDocumentBuf};
use polymongo::mongodb::Client;
use polymongo_testkit::TestServer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

mod common;

use common::{run, spawn, HANG};

async fn server() -> TestServer {
    TestServer::start().await.expect("test server")
}

async fn raw(server: &TestServer) -> Client {
    Client::with_uri_str(server.uri())
        .await
        .expect("raw client")
}

async fn docs(client: &Client, db: &str, coll: &str) -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = client
        .database(db)
        .collection::<RawDocumentBuf>(coll)
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .map(RawDocumentBuf::into_bytes)
        .collect();
    all.sort();
    all
}

async fn seed(client: &Client, db: &str, n: i32) {
    client
        .database(db)
        .collection::<Document>("orders")
        .insert_many(
            (0..n).map(
                |i| doc! { "_id": i, "total": i64::from(i) * 3, "note": format!("order {i}") },
            ),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn export_then_import_reproduces_the_database() {
    let server = server().await;
    let raw = raw(&server).await;
    seed(&raw, "cli_src", 500).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dump.ndjson.gz");
    let file = file.to_str().unwrap();
    let (code, _, err) = run(&[
        "--uri",
        server.uri(),
        "export",
        "cli_src",
        "-o",
        file,
        "--gzip",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("exported 500 documents"), "{err}");
    let (code, out, err) = run(&[
        "--uri",
        server.uri(),
        "--json",
        "import",
        "cli_dst",
        "-i",
        file,
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["documents"], 500);
    assert_eq!(
        docs(&raw, "cli_dst", "orders").await,
        docs(&raw, "cli_src", "orders").await
    );

    // Importing the same dump again collides on `_id`: a partial result, exit 5.
    let (code, _, err) = run(&[
        "--uri",
        server.uri(),
        "import",
        "cli_dst",
        "-i",
        file,
        "--continue-on-error",
    ])
    .await;
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("0 documents written") && err.contains("11000"),
        "{err}"
    );
}

#[tokio::test]
async fn copy_reaches_another_server() {
    let (a, b) = (server().await, server().await);
    let (raw_a, raw_b) = (raw(&a).await, raw(&b).await);
    seed(&raw_a, "cli_copy", 120).await;
    let (code, _, err) = run(&[
        "--uri",
        a.uri(),
        "copy",
        "cli_copy",
        "cli_copied",
        "--to-uri",
        b.uri(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        docs(&raw_b, "cli_copied", "orders").await,
        docs(&raw_a, "cli_copy", "orders").await
    );
    let names = raw_a.list_database_names().await.unwrap();
    assert!(
        !names.contains(&"cli_copied".to_owned()),
        "the copy went to the other server"
    );
}

#[tokio::test]
async fn drop_refuses_without_yes() {
    let server = server().await;
    let raw = raw(&server).await;
    seed(&raw, "cli_keep", 3).await;
    let (code, _, err) = run(&["--uri", server.uri(), "drop", "cli_keep"]).await;
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("--yes"), "{err}");
    assert!(raw
        .list_database_names()
        .await
        .unwrap()
        .contains(&"cli_keep".to_owned()));
    let (code, _, err) = run(&["--uri", server.uri(), "drop", "cli_keep", "--yes"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(!raw
        .list_database_names()
        .await
        .unwrap()
        .contains(&"cli_keep".to_owned()));
}

#[tokio::test]
async fn config_check_names_each_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        "uri = \"mongodb://127.0.0.1:27017\"\nmax_pool_size = 5\n\n[retry]\nattempts = 0\n\n[databases.shop]\nmax_connections = 0\n",
    )
    .unwrap();
    let path = broken.to_str().unwrap();
    let (code, out, _) = run(&["config", "check", path]).await;
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!("{path}:5: invalid option `retry.attempts`")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{path}:8: ")) && out.contains("max_connections"),
        "{out}"
    );

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "uri = \"mongodb://h\"\nmax_pool = 3\n").unwrap();
    let (code, out, _) = run(&["config", "check", typo.to_str().unwrap()]).await;
    assert_eq!(code, 3);
    assert!(out.contains(":2: ") && out.contains("max_pool"), "{out}");

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "uri = \"mongodb://h\"\nmax_pool_size = 5\n").unwrap();
    let (code, out, _) = run(&["config", "check", good.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn an_unreachable_cluster_exits_4_and_hides_the_password() {
    let port = common::free_port();
    let uri = format!("mongodb://ops:S3cretPw@127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=200");
    let (code, out, err) = run(&["--uri", &uri, "ping"]).await;
    assert_eq!(code, 4, "{err}");
    assert!(
        !out.contains("S3cretPw") && !err.contains("S3cretPw"),
        "{err}"
    );
    assert!(err.contains("ops:***@"), "{err}");
}

/// Starts the binary with piped output and waits for `ready` on stderr.
async fn start(args: &[&str], ready: &str) -> (tokio::process::Child, String) {
    let mut child = spawn(args);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(HANG, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(ready) {
                return line;
            }
        }
        panic!("the binary ended before {ready:?}");
    })
    .await
    .expect("never ready");
    (child, line)
}

async fn interrupt(child: &mut tokio::process::Child) -> i32 {
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(HANG, child.wait())
        .await
        .expect("exit")
        .unwrap();
    status.code().unwrap_or(-1)
}

#[tokio::test]
async fn metrics_answers_a_scrape_with_pool_and_usage_series() {
    let server = server().await;
    let (mut child, line) = start(
        &["--uri", server.uri(), "metrics", "--listen", "127.0.0.1:0"],
        "serving metrics on",
    )
    .await;
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap()
        .to_owned();
    let mut body = String::new();
    for _ in 0..2 {
        // Twice: the first scrape's own commands show in the second.
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        body.clear();
        conn.read_to_string(&mut body).await.unwrap();
    }
    assert!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "{body}"
    );
    assert!(body.contains("text/plain; version=0.0.4"), "{body}");
    assert!(body.contains("polymongo_pool_connections{"), "{body}");
    assert!(body.contains("polymongo_db_commands_total{"), "{body}");
    assert_eq!(interrupt(&mut child).await, 0);
}

#[tokio::test]
async fn watch_prints_an_insert_made_by_another_client() {
    let server = server().await;
    let raw = raw(&server).await;
    let (mut child, _) = start(
        &["--uri", server.uri(), "watch", "cli_watch", "orders"],
        "watching cli_watch.orders",
    )
    .await;
    raw.database("cli_watch")
        .collection::<Document>("orders")
        .insert_one(doc! { "_id": 42, "item": "lamp" })
        .await
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(HANG, out.next_line())
        .await
        .expect("no event printed")
        .unwrap()
        .expect("a line");
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["operationType"], "insert", "{line}");
    assert_eq!(event["fullDocument"]["item"], "lamp", "{line}");
    assert_eq!(interrupt(&mut child).await, 0);
}

#[tokio::test]
async fn completions_and_help_are_printed() {
    let (code, out, _) = run(&["completions", "bash"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("polymongo"), "{out}");
    let (code, out, _) = run(&["--help"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("Exit codes") && out.contains("export"),
        "{out}"
    );
}

#[tokio::test]
async fn stats_without_a_database_shows_each_cluster_as_its_server_reports_it() {
    let (a, b) = (server().await, server().await);
    let (raw_a, raw_b) = (raw(&a).await, raw(&b).await);
    seed(&raw_a, "cli_big", 200).await;
    seed(&raw_b, "cli_elsewhere", 10).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("poly.toml");
    std::fs::write(
        &config,
        format!(
            "uri = \"{}\"\n\n[databases.cli_elsewhere]\nuri = \"{}\"\n",
            a.uri(),
            b.uri()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (code, out, err) = run(&["-c", config, "--json", "stats"]).await;
    assert_eq!(code, 0, "{err}");
    let clusters: serde_json::Value = serde_json::from_str(&out).unwrap();
    let clusters = clusters.as_array().expect("one entry per cluster");
    assert_eq!(clusters.len(), 2, "{out}");
    for (entry, raw, routed, own, other) in [
        (&clusters[0], &raw_a, "(main)", "cli_big", "cli_elsewhere"),
        (
            &clusters[1],
            &raw_b,
            "cli_elsewhere",
            "cli_elsewhere",
            "cli_big",
        ),
    ] {
        assert_eq!(entry["routed"][0], routed, "{entry}");
        // The server's own figures: its databases, and at least this tool's connection.
        let names = raw.list_database_names().await.unwrap();
        assert_eq!(entry["databases"], names.len(), "{entry}");
        let largest: Vec<&str> = entry["largest"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d[0].as_str())
            .collect();
        assert!(largest.contains(&own), "{entry}");
        assert!(!largest.contains(&other), "{entry}");
        assert!(
            entry["connections_current"].as_i64().unwrap() >= 1,
            "{entry}"
        );
    }
    let (code, out, _) = run(&["-c", config, "stats"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("server connections") && out.contains("cli_big"),
        "{out}"
    );
}
