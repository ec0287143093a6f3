//! Starting a real `mongod` as a single-node replica set.
//!
//! ```text
//! mongod --port <free port> --bind_ip 127.0.0.1 --dbpath <dir>/db
//!        --replSet testkit --logpath <dir>/mongod.log --pidfilepath <dir>/mongod.pid
//!        --nounixsocket --oplogSize 64 --wiredTigerCacheSizeGB 0.25
//!        --setParameter enableTestCommands=1
//! ```
//!
//! then `replSetInitiate` with the one member `127.0.0.1:<port>`, sent over a
//! direct connection (the kit's raw probe, one TCP connection to that node),
//! and `hello` is polled until the node reports `isWritablePrimary` (with a
//! deadline). The dbpath is persistent: after `kill` + `restart` the node
//! reads its replica-set config back and becomes primary again, so
//! `replSetInitiate` is only sent once.
//!
//! `enableTestCommands=1` makes `configureFailPoint` available: fault tests
//! may use fail points when [`ServerKind::Mongod`] is running.
//!
//! This branch cannot run on the project's build machines (no mongod there);
//! it follows MongoDB's documented single-node replica-set procedure.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Bson};

use crate::error::TestKitError;
use crate::options::ServerOptions;
use crate::port::free_port;
use crate::probe;
use crate::process::{ServerProcess, POLL_INTERVAL};
use crate::server::{ServerKind, TestServer};

/// The replica-set name used in the URI.
pub(crate) const REPLICA_SET: &str = "testkit";
/// Default time for mongod to start and become primary.
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Fresh ports tried when another process takes the chosen one first.
const PORT_ATTEMPTS: usize = 5;

pub(crate) async fn start(
    opts: &ServerOptions,
    mongod: PathBuf,
) -> Result<TestServer, TestKitError> {
    let dir = tempfile::Builder::new()
        .prefix("polymongo-mongod-")
        .tempdir()
        .map_err(|e| TestKitError::io("creating a temporary directory for mongod", e))?;
    let dbpath = dir.path().join("db");
    std::fs::create_dir_all(&dbpath)
        .map_err(|e| TestKitError::io(format!("creating {}", dbpath.display()), e))?;
    let timeout = opts.start_timeout.unwrap_or(DEFAULT_START_TIMEOUT);
    let log = dir.path().join("mongod.log");
    let pid_file = dir.path().join("mongod.pid");

    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port()?;
        let args: Vec<OsString> = vec![
            "--port".into(),
            port.to_string().into(),
            "--bind_ip".into(),
            "127.0.0.1".into(),
            "--dbpath".into(),
            dbpath.clone().into_os_string(),
            "--replSet".into(),
            REPLICA_SET.into(),
            "--logpath".into(),
            log.clone().into_os_string(),
            "--pidfilepath".into(),
            pid_file.clone().into_os_string(),
            // A unix socket in /tmp would outlive a SIGKILL and is not needed.
            "--nounixsocket".into(),
            "--oplogSize".into(),
            "64".into(),
            "--wiredTigerCacheSizeGB".into(),
            "0.25".into(),
            "--setParameter".into(),
            "enableTestCommands=1".into(),
        ];
        let mut process = ServerProcess::new(
            ServerKind::Mongod,
            mongod.clone(),
            args,
            dir.path().to_path_buf(),
            dir.path().join("console.log"),
            vec![log.clone()],
            pid_file.clone(),
        );
        process.spawn()?;
        match process.wait_ready(port, timeout).await {
            Ok(()) => {}
            Err(TestKitError::PortInUse { port }) if attempt < PORT_ATTEMPTS => {
                tracing::debug!(port, attempt, "port taken before mongod bound it; retrying");
                continue;
            }
            Err(e) => return Err(e),
        }
        initiate(port).await?;
        wait_primary(&mut process, port, timeout).await?;
        let uri = format!("mongodb://127.0.0.1:{port}/?replicaSet={REPLICA_SET}");
        return Ok(TestServer::managed(
            ServerKind::Mongod,
            uri,
            port,
            true,
            true,
            timeout,
            process,
            dir,
        ));
    }
}

/// `replSetInitiate` with this node as the only member.
async fn initiate(port: u16) -> Result<(), TestKitError> {
    let addr = format!("127.0.0.1:{port}");
    let command = doc! {
        "replSetInitiate": {
            "_id": REPLICA_SET,
            "members": [ { "_id": 0, "host": addr.as_str() } ],
        }
    };
    match probe::run_command(&addr, "admin", command, Duration::from_secs(30)).await {
        Ok(_) => Ok(()),
        // Code 23 AlreadyInitialized: nothing to do.
        Err(TestKitError::Command { message, .. }) if message.contains("(code 23)") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Polls `hello` until the node says it is a writable primary.
pub(crate) async fn wait_primary(
    process: &mut ServerProcess,
    port: u16,
    timeout: Duration,
) -> Result<(), TestKitError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let addr = format!("127.0.0.1:{port}");
    loop {
        if let Some(status) = process.exited() {
            return Err(TestKitError::ServerExited {
                kind: ServerKind::Mongod,
                status: status.to_string(),
                log_tail: process.log_tail(),
            });
        }
        if let Ok(hello) =
            probe::run_command(&addr, "admin", doc! { "hello": 1 }, probe::PROBE_TIMEOUT).await
        {
            if hello.get("isWritablePrimary") == Some(&Bson::Boolean(true)) {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(TestKitError::StartTimeout {
                kind: ServerKind::Mongod,
                waited: started.elapsed(),
                log_tail: process.log_tail(),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
