//! What the two emulated servers (nx-27017 and mongoeco) share: installing their cached
//! environment off the async runtime, and spawning a launcher on a free port until one binds.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

use crate::error::TestKitError;
use crate::options::ServerOptions;
use crate::port::free_port;
use crate::process::ServerProcess;
use crate::python;
use crate::server::{ServerKind, TestServer};
use crate::venv::{self, Flavor, Install};

/// Default time for an emulator to answer after spawning (nx ~0.2 s, mongoeco ~1.5 s).
pub(crate) const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Fresh ports tried when another process takes the chosen one first.
const PORT_ATTEMPTS: usize = 5;

/// Finds the interpreter for `flavor` and makes sure its environment is installed (blocking
/// work, moved off the runtime).
pub(crate) async fn install(
    flavor: &'static Flavor,
    opts: &ServerOptions,
) -> Result<Install, TestKitError> {
    let explicit = opts.python.clone();
    let cache_dir = opts.cache_dir.clone();
    tokio::task::spawn_blocking(move || {
        let base = match flavor.kind {
            ServerKind::MongoEco => python::find_for_mongoeco(explicit.as_deref())?,
            _ => python::find_for_nx(explicit.as_deref())?,
        };
        venv::ensure(flavor, &base, cache_dir.as_deref())
    })
    .await
    .map_err(|e| {
        TestKitError::io(
            format!("installing {}", flavor.kind),
            std::io::Error::other(format!("the install task failed: {e}")),
        )
    })?
}

/// A temporary directory for one server instance.
pub(crate) fn instance_dir(kind: ServerKind) -> Result<TempDir, TestKitError> {
    let prefix = match kind {
        ServerKind::MongoEco => "polymongo-mongoeco-",
        _ => "polymongo-nx-",
    };
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| TestKitError::io(format!("creating a temporary directory for {kind}"), e))
}

/// How to run one emulator instance.
pub(crate) struct Launch {
    pub(crate) kind: ServerKind,
    pub(crate) install: Install,
    pub(crate) dir: TempDir,
    /// The launcher's arguments after its path, for a given port.
    pub(crate) args: Box<dyn Fn(u16) -> Vec<OsString> + Send>,
    pub(crate) pid_file: PathBuf,
    pub(crate) timeout: Duration,
    pub(crate) persistent: bool,
}

/// Spawns the launcher on a free port (a new port when another process took it first) and
/// waits until it answers with its own pid.
pub(crate) async fn start(launch: Launch) -> Result<TestServer, TestKitError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port()?;
        let mut args: Vec<OsString> = vec![
            "-I".into(),
            "-u".into(),
            launch.install.launcher.clone().into_os_string(),
        ];
        args.extend((launch.args)(port));
        let mut process = ServerProcess::new(
            launch.kind,
            launch.install.python.clone(),
            args,
            launch.dir.path().to_path_buf(),
            launch.dir.path().join("console.log"),
            Vec::new(),
            launch.pid_file.clone(),
        );
        process.spawn()?;
        match process.wait_ready(port, launch.timeout).await {
            Ok(()) => {
                let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
                return Ok(TestServer::managed(
                    launch.kind,
                    uri,
                    port,
                    false,
                    launch.persistent,
                    launch.timeout,
                    process,
                    launch.dir,
                ));
            }
            Err(TestKitError::PortInUse { port }) if attempt < PORT_ATTEMPTS => {
                tracing::debug!(
                    port,
                    attempt,
                    kind = %launch.kind,
                    "port taken before the server bound it; retrying"
                );
            }
            Err(e) => return Err(e),
        }
    }
}
