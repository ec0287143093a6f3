//! The command line and the quickstart against the test kit's `polymongo-test-server`
//! program, as a user runs them side by side: start the server, point `polymongo` and the
//! quickstart at the URI it printed, stop it with SIGINT.
//!
//! The server program belongs to another package, so cargo builds it here only when the whole
//! workspace (or `-p polymongo-testkit`) is built: the test looks for it next to this package's
//! own binary and reports a skip (stderr and `POLYMONGO_TEST_REPORT`) when it is not there.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

mod common;

use common::{run, BIN, HANG};

/// `target/<profile>/polymongo-test-server`, beside `target/<profile>/polymongo`.
fn server_program() -> Option<PathBuf> {
    let path = PathBuf::from(BIN).with_file_name("polymongo-test-server");
    path.is_file().then_some(path)
}

/// `target/<profile>/examples`, where cargo puts the workspace's examples.
fn examples_dir() -> PathBuf {
    PathBuf::from(BIN).with_file_name("examples")
}

/// The core crate's quickstart example, built by `cargo test --workspace` (examples are built
/// with the tests) or `cargo build -p polymongo --example quickstart`.
fn quickstart_program() -> Option<PathBuf> {
    let path = examples_dir().join("quickstart");
    path.is_file().then_some(path)
}

#[tokio::test]
async fn ping_succeeds_against_the_uri_the_test_server_program_prints() {
    let Some(program) = server_program() else {
        polymongo_testkit::record_skip(&format!(
            "{} is not built (cargo build -p polymongo-testkit --bin polymongo-test-server, or \
             test the whole workspace)",
            PathBuf::from(BIN)
                .with_file_name("polymongo-test-server")
                .display()
        ));
        return;
    };
    eprintln!("server program: {}", program.display());
    let mut server = Command::new(&program)
        .arg("--json")
        .env_remove("POLYMONGO_TEST_URI")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the server program starts");
    let pid = server.id().expect("pid");
    let mut notes = server.stderr.take().expect("stderr");
    let notes = tokio::spawn(async move {
        let mut text = String::new();
        let _ = notes.read_to_string(&mut text).await;
        text
    });
    let mut first = String::new();
    let mut stdout = BufReader::new(server.stdout.take().expect("stdout"));
    let read = tokio::time::timeout(HANG, stdout.read_line(&mut first)).await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        let _ = server.start_kill();
        panic!(
            "no URI line within {HANG:?}; stderr:\n{}",
            notes.await.unwrap_or_default()
        );
    }
    let line: serde_json::Value = serde_json::from_str(&first).expect("a JSON line");
    let uri = line["uri"].as_str().expect("uri").to_owned();
    eprintln!("server: {line}");

    // The URI as a flag…
    let (code, out, err) = run(&["--uri", &uri, "ping"]).await;
    eprintln!("polymongo --uri <uri> ping: exit {code}, stdout {out:?}, stderr {err:?}");
    assert_eq!(code, 0, "stdout {out}\nstderr {err}");
    assert!(
        out.starts_with("test: ") && out.trim_end().ends_with(" ms"),
        "{out}"
    );

    // …and from the environment, as `MONGODB_URI=$(polymongo-test-server) …` would give it.
    let json_ping = tokio::time::timeout(
        HANG,
        Command::new(BIN)
            .args(["--json", "ping", "app"])
            .env("MONGODB_URI", &uri)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("ping hung")
    .expect("ping runs");
    let out = String::from_utf8_lossy(&json_ping.stdout);
    eprintln!("MONGODB_URI=<uri> polymongo --json ping app: {out}");
    assert_eq!(json_ping.status.code(), Some(0), "{out}");
    let reply: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(reply["database"], "app");
    assert!(reply["rtt_us"].as_u64().is_some(), "{reply}");

    // The quickstart against the same URI, as the README's first command runs it with
    // `MONGODB_URI` set: it writes through its own manager; the documents are read back here
    // with a raw driver client.
    match quickstart_program() {
        None => polymongo_testkit::record_skip(&format!(
            "{} is not built (cargo build -p polymongo --example quickstart, or test the \
             whole workspace)",
            examples_dir().join("quickstart").display()
        )),
        Some(quickstart) => {
            let run = tokio::time::timeout(
                HANG,
                Command::new(&quickstart)
                    .env("MONGODB_URI", &uri)
                    .stdin(Stdio::null())
                    .output(),
            )
            .await
            .expect("the quickstart hung")
            .expect("the quickstart runs");
            let out = String::from_utf8_lossy(&run.stdout);
            let err = String::from_utf8_lossy(&run.stderr);
            eprintln!(
                "MONGODB_URI=<uri> quickstart: exit {:?}\n{out}",
                run.status.code()
            );
            assert_eq!(run.status.code(), Some(0), "stdout {out}\nstderr {err}");
            assert!(out.contains("tenant_3: admins"), "{out}");
            let raw = polymongo::mongodb::Client::with_uri_str(&uri)
                .await
                .expect("raw client");
            for tenant in ["tenant_1", "tenant_2", "tenant_3"] {
                let n = raw
                    .database(tenant)
                    .collection::<polymongo::mongodb::bson::Document>("users")
                    .count_documents(polymongo::mongodb::bson::doc! {})
                    .await
                    .expect("count");
                assert_eq!(n, 2, "{tenant} holds the quickstart's two users");
            }
        }
    }

    // Ctrl-C: the server program stops its server and exits 0.
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(20), server.wait())
        .await
        .expect("the server program exits after SIGINT")
        .expect("wait");
    let notes = notes.await.expect("stderr");
    assert_eq!(status.code(), Some(0), "stderr:\n{notes}");
    assert!(notes.contains("stopped in"), "{notes}");
    // The server itself is gone, and its port closed.
    let server_pid = line["pid"].as_u64().expect("pid");
    assert!(
        !std::path::Path::new(&format!("/proc/{server_pid}")).exists(),
        "server process {server_pid} left behind"
    );
    let port: u16 = uri
        .trim_start_matches("mongodb://127.0.0.1:")
        .split(['/', '?'])
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in the URI");
    assert!(
        std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(2)
        )
        .is_err(),
        "port {port} still accepts connections"
    );
}
