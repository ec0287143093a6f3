//! The nx-27017 install is race-free and never uses a half-finished
//! environment. Each test uses its own fresh cache directory (slow: ~6 s each).

mod common;

use std::path::Path;

use futures_util::future::join_all;
use polymongo_testkit::{ServerKind, ServerOptions, TestServer};

fn venv_dirs(cache: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(cache)
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_starts_share_one_install() {
    let cache = tempfile::tempdir().expect("cache");
    let opts = ServerOptions::new()
        .kind(ServerKind::Nx27017)
        .cache_dir(cache.path());
    let servers = join_all((0..4).map(|_| TestServer::start_with(opts.clone()))).await;
    let servers: Vec<TestServer> = servers
        .into_iter()
        .map(|s| s.expect("every concurrent start succeeds"))
        .collect();
    for server in &servers {
        assert_eq!(server.connection_count().await.expect("answers"), 0);
    }
    let dirs = venv_dirs(cache.path());
    assert_eq!(
        dirs.len(),
        1,
        "one environment, not one per start: {dirs:?}"
    );
    assert!(dirs[0].join("READY").is_file());
}

#[tokio::test]
async fn an_unfinished_install_is_redone() {
    let cache = tempfile::tempdir().expect("cache");
    let opts = ServerOptions::new()
        .kind(ServerKind::Nx27017)
        .cache_dir(cache.path());
    drop(
        TestServer::start_with(opts.clone())
            .await
            .expect("first install"),
    );
    let dir = venv_dirs(cache.path()).pop().expect("venv dir");

    // Simulate an install interrupted before the marker: no READY, broken venv.
    std::fs::remove_file(dir.join("READY")).expect("remove marker");
    std::fs::remove_dir_all(dir.join("venv").join("lib")).expect("break the venv");

    let server = TestServer::start_with(opts).await.expect("reinstalled");
    assert!(dir.join("READY").is_file());
    assert_eq!(server.connection_count().await.expect("answers"), 0);
}
