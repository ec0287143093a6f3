//! Error paths, and external servers (which the kit cannot control).

mod common;

use polymongo_testkit::{connection_count, ServerKind, ServerOptions, TestKitError, TestServer};

#[tokio::test]
async fn missing_python_is_no_python_with_advice() {
    let err = TestServer::start_with(
        ServerOptions::new()
            .kind(ServerKind::Nx27017)
            .python("/nonexistent/bin/python3"),
    )
    .await
    .expect_err("no python there");
    assert!(matches!(err, TestKitError::NoPython { .. }), "{err}");
    let message = err.to_string();
    for advice in [
        "/nonexistent/bin/python3",
        "install python3",
        "POLYMONGO_TEST_URI",
    ] {
        assert!(message.contains(advice), "{message:?} lacks {advice:?}");
    }
}

#[tokio::test]
async fn a_program_that_is_not_python_is_no_python() {
    let err = TestServer::start_with(
        ServerOptions::new()
            .kind(ServerKind::Nx27017)
            .python("/bin/false"),
    )
    .await
    .expect_err("false is not python");
    assert!(matches!(err, TestKitError::NoPython { .. }), "{err}");
}

#[tokio::test]
async fn external_server_cannot_be_controlled() {
    let backing = TestServer::start_with(ServerOptions::new().kind(ServerKind::Nx27017))
        .await
        .expect("start nx");
    let mut external = TestServer::start_with(ServerOptions::new().external_uri(backing.uri()))
        .await
        .expect("external");
    assert_eq!(external.kind(), ServerKind::External);
    assert_eq!(external.uri(), backing.uri());
    assert_eq!(external.port(), None);
    assert_eq!(external.pid(), None);
    // nx's hello has no setName and no msg: "isdbgrid".
    assert!(!external.is_replica_set());
    assert!(!external.supports_transactions());
    // The probe in start_with closed its client: nothing is left connected.
    assert_eq!(external.connection_count().await.expect("count"), 0);

    for result in [
        external.stop().await,
        external.kill().await,
        external.restart().await,
    ] {
        let err = result.expect_err("external servers are not ours");
        assert!(matches!(err, TestKitError::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("managed(true)"), "{err}");
    }
    drop(external);
    // Dropping the external handle leaves the server running.
    assert_eq!(backing.connection_count().await.expect("still up"), 0);
}

#[tokio::test]
async fn external_kind_without_uri_says_what_to_set() {
    if std::env::var_os("POLYMONGO_TEST_URI").is_some() {
        return; // the environment provides one
    }
    let err = TestServer::start_with(ServerOptions::new().kind(ServerKind::External))
        .await
        .expect_err("no uri");
    assert!(matches!(err, TestKitError::NoExternalUri), "{err}");
    assert!(err.to_string().contains("POLYMONGO_TEST_URI"));
}

#[tokio::test]
async fn mongod_kind_without_mongod_is_no_mongod() {
    if common::mongod_on_path() {
        return;
    }
    let err = TestServer::start_with(ServerOptions::new().kind(ServerKind::Mongod))
        .await
        .expect_err("no mongod");
    assert!(matches!(err, TestKitError::NoMongod), "{err}");
}

#[tokio::test]
async fn unprobeable_uris_are_rejected_without_leaking_credentials() {
    for uri in [
        "mongodb+srv://cluster.example.com/",
        "mongodb://user:s3cret@127.0.0.1:1/",
        "mongodb://127.0.0.1:1/?tls=true",
        "postgres://127.0.0.1/",
    ] {
        let err = connection_count(uri).await.expect_err(uri);
        assert!(matches!(err, TestKitError::BadUri { .. }), "{uri}: {err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
