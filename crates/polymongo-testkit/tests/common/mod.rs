//! Helpers shared by the integration tests (each test file is its own binary).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use mongodb::Client;
use polymongo_testkit::{ServerKind, TestServer};

/// The kind `TestServer::start()` picks in this environment.
pub fn expected_default_kind() -> ServerKind {
    let forced = std::env::var("POLYMONGO_TEST_SERVER").unwrap_or_default();
    match forced.trim().to_ascii_lowercase().as_str() {
        "nx" | "nx-27017" | "nx27017" => return ServerKind::Nx27017,
        "mongoeco" => return ServerKind::MongoEco,
        "mongod" => return ServerKind::Mongod,
        "external" => return ServerKind::External,
        _ => {}
    }
    if std::env::var("POLYMONGO_TEST_URI").is_ok_and(|v| !v.trim().is_empty()) {
        return ServerKind::External;
    }
    if mongod_on_path() {
        ServerKind::Mongod
    } else {
        ServerKind::Nx27017
    }
}

pub fn mongod_on_path() -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("mongod").is_file()))
        .unwrap_or(false)
}

pub async fn client(server: &TestServer) -> Client {
    Client::with_uri_str(server.uri()).await.expect("client")
}

/// Polls `check` every 20 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a process with this pid exists (Linux: /proc/<pid>).
pub fn pid_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A database name no other test (or earlier run on an external server) uses.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
