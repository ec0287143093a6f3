//! Choosing a server by capability, skips with reasons, and the run report.
//!
//! Tests that depend on the environment (no Python 3.13, a forced kind, the report file) run
//! their own test function again in a child process with that environment (`CHILD_ROLE`), so
//! nothing changes the environment of this process, whose tests run in parallel.

mod common;

use std::process::Command;

use polymongo_testkit::{
    server_for, Capability, RunReport, ServerKind, ServerOptions, TestServer, ENV_TEST_REPORT,
};

/// Set in a child process: which part of a test to run there.
const CHILD_ROLE: &str = "POLYMONGO_TESTKIT_TEST_CHILD";

/// Whether this environment picks servers automatically (no forced kind, no external URI, no
/// mongod), which the exact-kind assertions below assume.
fn automatic_emulators() -> bool {
    common::expected_default_kind() == ServerKind::Nx27017
}

/// Runs `test` of this binary alone in a child process with `role` and `envs`, and returns
/// its report (from a fresh report file) and its combined output. Fails if the child fails.
fn run_child(test: &str, role: &str, envs: &[(&str, &str)]) -> (RunReport, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report.tsv");
    let exe = std::env::current_exe().expect("test executable");
    let output = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ROLE, role)
        .env(ENV_TEST_REPORT, &report)
        .envs(envs.iter().copied())
        .output()
        .expect("run the child test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "child {role} failed:\n{text}");
    assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
    let lines = std::fs::read_to_string(&report).unwrap_or_default();
    (RunReport::parse(&lines), text)
}

fn role() -> Option<String> {
    std::env::var(CHILD_ROLE).ok()
}

#[tokio::test]
async fn each_capability_is_served_by_a_server_that_has_it() {
    for cap in Capability::ALL {
        // `start_with`, not `server_for`: a capability missing here is part of what this test
        // checks, not a skip of the test.
        let server = match TestServer::start_with(ServerOptions::new().require(cap)).await {
            Ok(server) => Some(server),
            Err(e) if e.is_unavailable() => None,
            Err(e) => panic!("{cap}: {e}"),
        };
        let Some(server) = server else {
            // Only what no server here has may be skipped: wide change streams need a replica
            // set, and mongoeco's capabilities need Python 3.13+; nx-27017's never skip.
            if automatic_emulators() {
                assert!(
                    !matches!(
                        cap,
                        Capability::ChangeStreams
                            | Capability::Transactions
                            | Capability::RestartKeepsData
                            | Capability::LargeCollections
                    ),
                    "{cap} was skipped"
                );
            }
            continue;
        };
        assert!(server.has(cap), "{cap} on {:?}", server.kind());
        if automatic_emulators() {
            let expected = match cap {
                Capability::ChangeStreams
                | Capability::Transactions
                | Capability::RestartKeepsData
                | Capability::LargeCollections => ServerKind::Nx27017,
                _ => ServerKind::MongoEco,
            };
            assert_eq!(server.kind(), expected, "{cap}");
        }
    }
}

#[tokio::test]
async fn restart_keeps_data_implies_a_persistent_server_the_kit_owns() {
    let Some(mut server) = server_for(&[Capability::RestartKeepsData]).await else {
        return;
    };
    assert!(server.pid().is_some(), "a managed server");
    assert!(server.has(Capability::RestartKeepsData));
    let client = common::client(&server).await;
    client
        .database("kept")
        .collection::<mongodb::bson::Document>("c")
        .insert_one(mongodb::bson::doc! { "_id": 1 })
        .await
        .expect("insert");
    client.shutdown().await;
    server.kill().await.expect("kill");
    server.restart().await.expect("restart");
    let client = common::client(&server).await;
    let kept = client
        .database("kept")
        .collection::<mongodb::bson::Document>("c")
        .count_documents(mongodb::bson::doc! {})
        .await
        .expect("count");
    assert_eq!(kept, 1, "persistent, without asking for it");
    client.shutdown().await;
}

#[tokio::test]
async fn needs_no_server_has_are_a_skip_with_every_reason() {
    if role().as_deref() == Some("skip") {
        let server = server_for(&[Capability::ChangeStreams, Capability::FailPoints]).await;
        assert!(server.is_none(), "{server:?}");
        return;
    }
    if !automatic_emulators() {
        polymongo_testkit::record_skip("another server kind is forced or present");
        return;
    }
    let (report, output) = run_child(
        "needs_no_server_has_are_a_skip_with_every_reason",
        "skip",
        &[],
    );
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    let (test, reason) = report.skipped.iter().next().expect("the skip");
    assert!(test.starts_with("capabilities "), "{test}");
    for part in [
        "no test server here has fail-points, change-streams",
        "nx-27017 lacks fail-points",
        "mongoeco lacks change-streams",
    ] {
        assert!(reason.contains(part), "{reason:?} lacks {part:?}");
    }
    assert!(output.contains("SKIPPED "), "{output}");
    assert!(report.ran.is_empty(), "no server was started: {report:?}");
    assert!(report
        .summary()
        .contains("skipped tests: 1 (cargo test lists them as ok; they did not run)"));
    assert!(report.skipped_once.is_empty());
}

#[tokio::test]
async fn without_python_3_13_mongoeco_tests_are_skipped_with_that_reason() {
    if role().as_deref() == Some("no-python") {
        let server = server_for(&[Capability::FailPoints]).await;
        assert!(server.is_none(), "{server:?}");
        // Asked for by name, it is an error that says what to do, not a skip.
        let err = TestServer::start_with(ServerOptions::new().kind(ServerKind::MongoEco))
            .await
            .expect_err("no python");
        assert!(err.to_string().contains("pyenv install 3.13"), "{err}");
        return;
    }
    if !automatic_emulators() {
        polymongo_testkit::record_skip("another server kind is forced or present");
        return;
    }
    let empty = tempfile::tempdir().expect("tempdir");
    let empty = empty.path().to_str().expect("utf-8 path");
    let (report, _) = run_child(
        "without_python_3_13_mongoeco_tests_are_skipped_with_that_reason",
        "no-python",
        &[("PATH", empty), ("HOME", empty), ("PYENV_ROOT", empty)],
    );
    let reason = report.skipped.values().next().expect("a skip");
    assert!(
        reason.contains("mongoeco needs Python 3.13 or newer and none was found"),
        "{reason}"
    );
    assert!(reason.contains("nx-27017 lacks fail-points"), "{reason}");
}

#[tokio::test]
async fn a_forced_kind_serves_every_test_or_skips_it() {
    match role().as_deref() {
        Some("forced-nx") => {
            let skipped = server_for(&[Capability::FailPoints]).await;
            assert!(skipped.is_none());
            let server = server_for(&[]).await.expect("nx serves plain tests");
            assert_eq!(server.kind(), ServerKind::Nx27017);
            return;
        }
        Some("forced-mongoeco") => {
            let server = TestServer::start()
                .await
                .expect("mongoeco serves plain tests");
            assert_eq!(server.kind(), ServerKind::MongoEco);
            let skipped = server_for(&[Capability::ChangeStreams]).await;
            assert!(skipped.is_none());
            return;
        }
        _ => {}
    }
    if common::mongod_on_path() {
        polymongo_testkit::record_skip("mongod on PATH would be forced instead");
        return;
    }
    let test = "a_forced_kind_serves_every_test_or_skips_it";
    let (report, _) = run_child(test, "forced-nx", &[("POLYMONGO_TEST_SERVER", "nx")]);
    let reason = report.skipped.values().next().expect("a skip");
    assert!(
        reason.contains("POLYMONGO_TEST_SERVER=nx chooses it, and nx-27017 lacks fail-points"),
        "{reason}"
    );
    // The child started nx-27017 too (it asserts the kind), but a test that reported a skip
    // counts as skipped in that pass.
    assert!(report.ran.is_empty(), "{report:?}");

    let probe = server_for(&[Capability::FailPoints]).await;
    if probe.as_ref().map(TestServer::kind) != Some(ServerKind::MongoEco) {
        return; // no mongoeco here: the forced run would fail to start it
    }
    let (report, _) = run_child(
        test,
        "forced-mongoeco",
        &[("POLYMONGO_TEST_SERVER", "mongoeco")],
    );
    let reason = report.skipped.values().next().expect("a skip");
    assert!(reason.contains("mongoeco lacks change-streams"), "{reason}");
}

#[tokio::test]
async fn an_external_server_is_asked_what_it_is() {
    let Some(eco) = server_for(&[Capability::FailPoints]).await else {
        return;
    };
    let nx = TestServer::start_with(ServerOptions::new().kind(ServerKind::Nx27017))
        .await
        .expect("nx");
    for backing in [&eco, &nx] {
        let external = TestServer::start_with(ServerOptions::new().external_uri(backing.uri()))
            .await
            .expect("external");
        assert_eq!(external.kind(), ServerKind::External);
        let expected = if backing.kind() == ServerKind::External {
            backing.capabilities()
        } else {
            backing.capabilities().without(Capability::RestartKeepsData)
        };
        assert_eq!(
            external.capabilities(),
            expected,
            "over {:?}",
            backing.kind()
        );
    }
    // And a requirement the external server lacks makes it unavailable, not a silent
    // fallback to another server.
    let err = TestServer::start_with(
        ServerOptions::new()
            .external_uri(nx.uri())
            .require(Capability::FailPoints),
    )
    .await
    .expect_err("nx has no fail points");
    assert!(err.is_unavailable(), "{err}");
    assert!(
        err.to_string()
            .contains("the external server lacks fail-points"),
        "{err}"
    );
}
