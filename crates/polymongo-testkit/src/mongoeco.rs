//! Starting mongoeco (PyPI `mongoeco[wire]`) through the kit's launcher.
//!
//! mongoeco has no command-line entry point; `src/mongoeco_launcher.py` patches it (Int64
//! command options, Int64 cursor ids, error codes, the live connection count, admin-routed
//! `renameCollection`), checks each patch against a throwaway server, then serves
//! `mongoeco.wire.proxy.AsyncMongoEcoProxyServer` on 127.0.0.1:
//!
//! ```text
//! <venv>/bin/python -I -u <cache>/mongoeco_launcher.py --port <free port>
//!     [--sqlite <instance dir>/data.sqlite3]      # persistent(true): the SQLite engine
//! ```
//!
//! Without `--sqlite` the memory engine is used: transactions there do not lock out other
//! clients (mongoeco's SQLite engine is exclusive while a transaction is open).

use std::ffi::OsString;

use crate::emulator::{self, Launch, DEFAULT_START_TIMEOUT};
use crate::error::TestKitError;
use crate::options::ServerOptions;
use crate::server::{ServerKind, TestServer};
use crate::venv;

pub(crate) async fn start(opts: &ServerOptions) -> Result<TestServer, TestKitError> {
    let install = emulator::install(&venv::MONGOECO, opts).await?;
    let dir = emulator::instance_dir(ServerKind::MongoEco)?;
    let sqlite: Option<OsString> = opts
        .persistent
        .then(|| dir.path().join("data.sqlite3").into_os_string());
    // The launcher writes no pid file; the kit checks the pid in serverStatus instead.
    let pid_file = dir.path().join("mongoeco.pid");
    emulator::start(Launch {
        kind: ServerKind::MongoEco,
        install,
        dir,
        args: Box::new(move |port| {
            let mut args: Vec<OsString> = vec!["--port".into(), port.to_string().into()];
            if let Some(file) = &sqlite {
                args.extend(["--sqlite".into(), file.clone()]);
            }
            args
        }),
        pid_file,
        timeout: opts.start_timeout.unwrap_or(DEFAULT_START_TIMEOUT),
        persistent: opts.persistent,
    })
    .await
}
