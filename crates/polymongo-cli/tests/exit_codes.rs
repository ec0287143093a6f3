//! Exit code 4, with a clear message and no driver text, whenever the cluster cannot be
//! reached or refuses the credentials — whichever command meets it.

mod common;

use common::free_port;
use polymongo_testkit::TestServer;

/// Runs the binary: (exit code, stderr).
async fn run(args: &[&str]) -> (i32, String) {
    let (code, _, err) = common::run(args).await;
    (code, err)
}

fn assert_clear(err: &str, says: &str, case: &str) {
    assert!(err.contains(says), "{case}: {err}");
    for driver_text in ["Topology", "Kind:", "labels:", "SCRAM"] {
        assert!(!err.contains(driver_text), "{case}: driver text in {err}");
    }
    assert!(!err.contains("S3cretPw"), "{case}: {err}");
}

#[tokio::test]
async fn an_unreachable_cluster_exits_4_from_every_command() {
    let uri = format!(
        "mongodb://ops:S3cretPw@127.0.0.1:{}/?directConnection=true&serverSelectionTimeoutMS=200",
        free_port()
    );
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump.ndjson");
    std::fs::write(&dump, "").unwrap();
    let dump = dump.to_str().unwrap();
    for (case, args) in [
        ("top --once", vec!["--uri", &uri, "top", "--once"]),
        (
            "import",
            vec!["--uri", &uri, "import", "target", "-i", dump],
        ),
        (
            "export",
            vec!["--uri", &uri, "export", "source", "-o", dump],
        ),
        ("stats", vec!["--uri", &uri, "stats"]),
        ("dbs", vec!["--uri", &uri, "dbs"]),
    ] {
        let (code, err) = run(&args).await;
        assert_eq!(code, 4, "{case}: {err}");
        assert_clear(&err, "cannot reach the cluster", case);
        assert!(
            err.contains("ops:***@"),
            "{case}: the cluster is named: {err}"
        );
    }
}

#[tokio::test]
async fn refused_credentials_exit_4() {
    let server = TestServer::start().await.expect("server");
    let uri = format!(
        "mongodb://nobody:S3cretPw@127.0.0.1:{}/?directConnection=true&serverSelectionTimeoutMS=2000",
        server.port().unwrap()
    );
    let (code, err) = run(&["--uri", &uri, "ping"]).await;
    if code == 0 {
        polymongo_testkit::record_skip("this server accepts any credentials");
        return;
    }
    for (case, args) in [
        ("top --once", vec!["--uri", &uri, "top", "--once"]),
        ("ping", vec!["--uri", &uri, "ping"]),
    ] {
        let (code, err) = run(&args).await;
        assert_eq!(code, 4, "{case}: {err}");
        assert_clear(&err, "refused the credentials", case);
    }
    drop(err);
}
