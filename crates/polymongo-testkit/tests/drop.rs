//! Dropping a TestServer stops its process, inside or outside a runtime.

mod common;

use std::time::{Duration, Instant};

use polymongo_testkit::{ServerOptions, TestServer};

fn wait_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !common::pid_exists(pid) {
            return true;
        }
        std::thread::yield_now();
    }
    !common::pid_exists(pid)
}

#[tokio::test]
async fn drop_stops_the_process() {
    let server = TestServer::start_with(ServerOptions::new().managed(true))
        .await
        .expect("start");
    let pid = server.pid().expect("pid");
    assert!(common::pid_exists(pid));
    drop(server);
    assert!(wait_gone(pid), "process {pid} still exists after drop");
}

#[test]
fn drop_outside_a_runtime_does_not_panic() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime
        .block_on(TestServer::start_with(ServerOptions::new().managed(true)))
        .expect("start");
    drop(runtime);
    let pid = server.pid().expect("pid");
    drop(server);
    assert!(wait_gone(pid), "process {pid} still exists after drop");
}

#[tokio::test]
async fn drop_removes_the_instance_directory() {
    let server = TestServer::start_with(ServerOptions::new().managed(true).persistent(true))
        .await
        .expect("start");
    let debug = format!("{server:?}");
    let dir = debug
        .split("dir: Some(\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(std::path::PathBuf::from)
        .expect("the Debug output names the instance directory");
    assert!(dir.is_dir());
    drop(server);
    assert!(!dir.exists(), "{} survived the drop", dir.display());
}
