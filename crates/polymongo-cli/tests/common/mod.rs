//! Shared by the tests that run the built binary: running it to completion, or spawning it
//! with its output piped.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub mod tmux;

pub const BIN: &str = env!("CARGO_BIN_EXE_polymongo");

/// A bound no healthy step comes near; reaching it means a hang.
pub const HANG: Duration = Duration::from_secs(120);

/// Runs the binary to completion: (exit code, stdout, stderr).
pub async fn run(args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        HANG,
        Command::new(BIN)
            .args(args)
            .env_remove("MONGODB_URI")
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("the binary hung")
    .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts the binary with its standard output and error piped, killed when dropped.
pub fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .env_remove("MONGODB_URI")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts")
}

/// A local port nothing listens on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}
