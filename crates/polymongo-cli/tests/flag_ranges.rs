//! Numeric flags out of their range are a usage error (exit 2) naming the flag and the range,
//! found while parsing: never a panic, a hang, nor a value silently changed.

mod common;

use common::{free_port, run};

/// A cluster nothing answers on, given up on quickly: a flag accepted by mistake ends in
/// exit 4, not in a wait.
fn nowhere() -> String {
    format!(
        "mongodb://127.0.0.1:{}/?directConnection=true&serverSelectionTimeoutMS=200",
        free_port()
    )
}

/// Runs the binary and checks it refused `flag` with the `range` it names.
async fn refused(args: &[&str], flag: &str, range: &str) {
    let (code, stdout, stderr) = run(args).await;
    assert_eq!(code, 2, "{args:?}: {stderr}{stdout}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(stderr.contains(flag), "{args:?} names {flag}: {stderr}");
    assert!(stderr.contains(range), "{args:?} names {range}: {stderr}");
}

#[tokio::test]
async fn top_interval_out_of_range_is_a_usage_error() {
    let app = format!("127.0.0.1:{}", free_port());
    let uri = nowhere();
    for interval in ["0", "86401", "18446744073709551615"] {
        refused(
            &["top", "--app", &app, "--interval", interval, "--once"],
            "--interval",
            "1..=86400",
        )
        .await;
        refused(
            &["--uri", &uri, "top", "--interval", interval, "--once"],
            "--interval",
            "1..=86400",
        )
        .await;
    }
}

#[tokio::test]
async fn top_interval_at_its_bounds_is_accepted() {
    let app = format!("127.0.0.1:{}", free_port());
    for interval in ["1", "86400"] {
        let (code, _, stderr) =
            run(&["top", "--app", &app, "--interval", interval, "--once"]).await;
        // Printed once, nothing answered: exit 4, not a usage error nor a panic.
        assert_eq!(code, 4, "--interval {interval}: {stderr}");
        assert!(stderr.contains("no instance answered"), "{stderr}");
    }
}

#[tokio::test]
async fn batch_sizes_out_of_range_are_usage_errors() {
    let uri = nowhere();
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump.ndjson");
    std::fs::write(&dump, "").unwrap();
    let dump = dump.to_str().unwrap();
    for size in ["0", "2147483648"] {
        refused(
            &[
                "--uri",
                &uri,
                "export",
                "shop",
                "-o",
                dump,
                "--batch-size",
                size,
            ],
            "--batch-size",
            "1..=2147483647",
        )
        .await;
    }
    for size in ["0", "100001", "18446744073709551615"] {
        refused(
            &[
                "--uri",
                &uri,
                "import",
                "shop",
                "-i",
                dump,
                "--batch-size",
                size,
            ],
            "--batch-size",
            "1..=100000",
        )
        .await;
    }
}

#[tokio::test]
async fn migration_lock_durations_out_of_range_are_usage_errors() {
    let uri = nowhere();
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().to_str().unwrap();
    for (flag, value, range) in [
        // 1e19 s fits a Duration but not a deadline: the runner used to panic adding it to now.
        ("--lock-wait", "1e19", "0..=86400"),
        ("--lock-wait", "86401", "0..=86400"),
        ("--lock-wait", "nan", "0..=86400"),
        ("--lock-ttl", "0", "0.001..=86400"),
        ("--lock-ttl", "1e19", "0.001..=86400"),
    ] {
        refused(
            &[
                "--uri", &uri, "migrate", "--dir", migrations, "apply", "t_a", flag, value,
            ],
            flag,
            range,
        )
        .await;
    }
}

#[tokio::test]
async fn an_archive_settle_time_out_of_range_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().to_str().unwrap();
    for settle in ["3600001", "18446744073709551615"] {
        refused(
            &[
                "--uri",
                &nowhere(),
                "tenants",
                "archive",
                "acme",
                "--to",
                folder,
                "--settle-ms",
                settle,
            ],
            "--settle-ms",
            "0..=3600000",
        )
        .await;
    }
}
