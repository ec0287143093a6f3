//! Starting nx-27017 (PyPI) through the kit's launcher.
//!
//! Command line (see `python nx_launcher.py --help` for nx's own flags):
//!
//! ```text
//! <venv>/bin/python -I -u <cache>/nx_launcher.py
//!     --host 127.0.0.1 --port <free port>
//!     --data-dir memory | --data-dir <instance dir>/data
//!     --pid-file <instance dir>/nx.pid --log-file <instance dir>/nx.log
//! ```
//!
//! Storage is never nx's default single-file mode (`--db FILE`), in which every
//! database shares one set of collections. `--data-dir memory` gives one
//! in-memory SQLite database per logical database (measured: a document
//! inserted in `a.c` is not in `b.c`; `--db memory` behaves the same), and
//! `--data-dir <dir>` one file per database, which survives a restart.
//! The child's working directory is the instance directory, so a stray
//! default file could never land in the caller's tree.

use std::ffi::OsString;
use std::time::Duration;

use crate::error::TestKitError;
use crate::options::ServerOptions;
use crate::port::free_port;
use crate::process::ServerProcess;
use crate::server::{ServerKind, TestServer};
use crate::venv;

/// Default time for nx-27017 to answer after spawning (it takes ~0.2-0.5 s).
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Fresh ports tried when another process takes the chosen one first.
const PORT_ATTEMPTS: usize = 5;

pub(crate) async fn start(opts: &ServerOptions) -> Result<TestServer, TestKitError> {
    let python = opts.python.clone();
    let cache_dir = opts.cache_dir.clone();
    let install =
        tokio::task::spawn_blocking(move || venv::ensure(python.as_deref(), cache_dir.as_deref()))
            .await
            .map_err(|e| {
                TestKitError::io(
                    "installing nx-27017",
                    std::io::Error::other(format!("the install task failed: {e}")),
                )
            })??;

    let dir = tempfile::Builder::new()
        .prefix("polymongo-nx-")
        .tempdir()
        .map_err(|e| TestKitError::io("creating a temporary directory for nx-27017", e))?;
    let data_dir: OsString = if opts.persistent {
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)
            .map_err(|e| TestKitError::io(format!("creating {}", data.display()), e))?;
        data.into_os_string()
    } else {
        "memory".into()
    };
    let timeout = opts.start_timeout.unwrap_or(DEFAULT_START_TIMEOUT);

    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port()?;
        let mut args: Vec<OsString> = vec![
            "-I".into(),
            "-u".into(),
            install.launcher.clone().into_os_string(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string().into(),
            "--data-dir".into(),
            data_dir.clone(),
        ];
        args.extend([
            "--pid-file".into(),
            dir.path().join("nx.pid").into_os_string(),
            "--log-file".into(),
            dir.path().join("nx.log").into_os_string(),
        ]);
        let mut process = ServerProcess::new(
            ServerKind::Nx27017,
            install.python.clone(),
            args,
            dir.path().to_path_buf(),
            dir.path().join("console.log"),
            Vec::new(),
            dir.path().join("nx.pid"),
        );
        process.spawn()?;
        match process.wait_ready(port, timeout).await {
            Ok(()) => {
                let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
                return Ok(TestServer::managed(
                    ServerKind::Nx27017,
                    uri,
                    port,
                    false,
                    timeout,
                    process,
                    dir,
                ));
            }
            Err(TestKitError::PortInUse { port }) if attempt < PORT_ATTEMPTS => {
                tracing::debug!(
                    port,
                    attempt,
                    "port taken before nx-27017 bound it; retrying"
                );
            }
            Err(e) => return Err(e),
        }
    }
}
