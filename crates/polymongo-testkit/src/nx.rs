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

use crate::emulator::{self, Launch, DEFAULT_START_TIMEOUT};
use crate::error::TestKitError;
use crate::options::ServerOptions;
use crate::server::{ServerKind, TestServer};
use crate::venv;

pub(crate) async fn start(opts: &ServerOptions) -> Result<TestServer, TestKitError> {
    let install = emulator::install(&venv::NX, opts).await?;
    let dir = emulator::instance_dir(ServerKind::Nx27017)?;
    let data_dir: OsString = if opts.persistent {
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)
            .map_err(|e| TestKitError::io(format!("creating {}", data.display()), e))?;
        data.into_os_string()
    } else {
        "memory".into()
    };
    let (pid_file, log_file) = (dir.path().join("nx.pid"), dir.path().join("nx.log"));
    let pid_arg = pid_file.clone().into_os_string();
    emulator::start(Launch {
        kind: ServerKind::Nx27017,
        install,
        dir,
        args: Box::new(move |port| {
            vec![
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string().into(),
                "--data-dir".into(),
                data_dir.clone(),
                "--pid-file".into(),
                pid_arg.clone(),
                "--log-file".into(),
                log_file.clone().into_os_string(),
            ]
        }),
        pid_file,
        timeout: opts.start_timeout.unwrap_or(DEFAULT_START_TIMEOUT),
        persistent: opts.persistent,
    })
    .await
}
