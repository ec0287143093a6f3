//! [`TestServer`]: choosing, owning and controlling one test server.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use mongodb::bson::{doc, Document};
use mongodb::options::ClientOptions;
use mongodb::Client;
use tempfile::TempDir;

use crate::error::TestKitError;
use crate::options::ServerOptions;
use crate::probe::{self, redact};
use crate::process::ServerProcess;
use crate::{mongod, nx, venv};

/// Env var with the URI of an existing server to test against.
pub const ENV_TEST_URI: &str = "POLYMONGO_TEST_URI";
/// Env var forcing the kind of server: `nx` (or `nx-27017`), `mongod`,
/// `external`, or `auto` (the default order).
pub const ENV_TEST_SERVER: &str = "POLYMONGO_TEST_SERVER";

/// How long `stop` waits after SIGTERM before it kills.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Which server a [`TestServer`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// A server the kit did not start (`POLYMONGO_TEST_URI` or
    /// [`ServerOptions::external_uri`]); it cannot be stopped, killed or restarted.
    External,
    /// A `mongod` from PATH, started as a single-node replica set.
    Mongod,
    /// nx-27017 (PyPI), a MongoDB wire-protocol server on SQLite. Not MongoDB:
    /// see the crate's QUIRKS.md and the design notes.
    Nx27017,
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerKind::External => "external",
            ServerKind::Mongod => "mongod",
            ServerKind::Nx27017 => "nx-27017",
        })
    }
}

/// A MongoDB-compatible server for one test (or a few).
///
/// Dropping it stops the server it started (SIGKILL to the child's own pid,
/// then a wait; safe outside a tokio runtime) and deletes its temporary
/// directory (data, logs, pid file). An external server is left alone.
pub struct TestServer {
    kind: ServerKind,
    uri: String,
    port: Option<u16>,
    replica_set: bool,
    transactions: bool,
    start_timeout: Duration,
    /// `None` for an external server. Declared before `dir` so the process is
    /// killed before its directory is deleted.
    process: Option<ServerProcess>,
    dir: Option<TempDir>,
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServer")
            .field("kind", &self.kind)
            .field("uri", &redact(&self.uri))
            .field("port", &self.port)
            .field("pid", &self.pid())
            .field("replica_set", &self.replica_set)
            .field("dir", &self.dir.as_ref().map(TempDir::path))
            .finish()
    }
}

enum Plan {
    External(String),
    Mongod(PathBuf),
    Nx,
}

fn external_uri_from_env() -> Option<String> {
    std::env::var(ENV_TEST_URI)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn mongod_on_path() -> Option<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    venv::find_on_path("mongod", &path_var)
}

/// Decides which server to start (see [`TestServer::start`] for the order).
fn plan(opts: &ServerOptions) -> Result<Plan, TestKitError> {
    let external = || {
        opts.external_uri
            .clone()
            .or_else(external_uri_from_env)
            .map(Plan::External)
            .ok_or(TestKitError::NoExternalUri)
    };
    let mongod = || {
        mongod_on_path()
            .map(Plan::Mongod)
            .ok_or(TestKitError::NoMongod)
    };
    let auto_managed = || Ok(mongod_on_path().map_or(Plan::Nx, Plan::Mongod));

    match opts.kind {
        Some(ServerKind::External) => return external(),
        Some(ServerKind::Mongod) => return mongod(),
        Some(ServerKind::Nx27017) => return Ok(Plan::Nx),
        None => {}
    }
    if let Some(uri) = &opts.external_uri {
        return Ok(Plan::External(uri.clone()));
    }
    let forced = std::env::var(ENV_TEST_SERVER).unwrap_or_default();
    match forced.trim().to_ascii_lowercase().as_str() {
        "nx" | "nx-27017" | "nx27017" => return Ok(Plan::Nx),
        "mongod" => return mongod(),
        "external" if !opts.managed => return external(),
        "external" | "" | "auto" => {}
        _ => {
            return Err(TestKitError::BadEnv {
                name: ENV_TEST_SERVER,
                value: forced,
                hint: "use nx, mongod, external or auto",
            })
        }
    }
    if !opts.managed {
        if let Some(uri) = external_uri_from_env() {
            return Ok(Plan::External(uri));
        }
    }
    auto_managed()
}

impl TestServer {
    /// Starts a server with default options; see [`start_with`](Self::start_with).
    pub async fn start() -> Result<TestServer, TestKitError> {
        Self::start_with(ServerOptions::new()).await
    }

    /// Starts (or connects to) a test server.
    ///
    /// Which one, first match wins:
    /// 1. [`ServerOptions::kind`], then [`ServerOptions::external_uri`];
    /// 2. env `POLYMONGO_TEST_SERVER` = `nx` | `mongod` | `external` forces a
    ///    kind (`auto` or unset: continue);
    /// 3. env `POLYMONGO_TEST_URI` → [`ServerKind::External`] (unless
    ///    [`ServerOptions::managed`]);
    /// 4. `mongod` on PATH → [`ServerKind::Mongod`], a single-node replica set
    ///    on a free 127.0.0.1 port with a temporary dbpath;
    /// 5. else [`ServerKind::Nx27017`], installed on first use into a cached
    ///    virtual environment (about 6 s, once per cache) and started on a
    ///    free 127.0.0.1 port (ready in well under a second).
    pub async fn start_with(opts: ServerOptions) -> Result<TestServer, TestKitError> {
        match plan(&opts)? {
            Plan::External(uri) => Self::external(uri).await,
            Plan::Mongod(path) => mongod::start(&opts, path).await,
            Plan::Nx => nx::start(&opts).await,
        }
    }

    /// Asks an existing server `hello` to learn its topology.
    async fn external(uri: String) -> Result<TestServer, TestKitError> {
        let mut options = ClientOptions::parse(&uri).await?;
        if options.server_selection_timeout.is_none() {
            options.server_selection_timeout = Some(Duration::from_secs(15));
        }
        let client = Client::with_options(options)?;
        let admin = client.database("admin");
        let hello = match admin.run_command(doc! { "hello": 1 }).await {
            Ok(reply) => Ok(reply),
            // Servers before 4.4.2 only know the legacy name.
            Err(first) => admin
                .run_command(doc! { "isMaster": 1 })
                .await
                .map_err(|_| first),
        };
        client.shutdown().await;
        let hello: Document = hello?;
        let replica_set = hello.get_str("setName").is_ok();
        let mongos = matches!(hello.get_str("msg"), Ok("isdbgrid"));
        Ok(TestServer {
            kind: ServerKind::External,
            uri,
            port: None,
            replica_set,
            transactions: replica_set || mongos,
            start_timeout: Duration::ZERO,
            process: None,
            dir: None,
        })
    }

    /// Wraps a started, ready process.
    pub(crate) fn managed(
        kind: ServerKind,
        uri: String,
        port: u16,
        replica_set: bool,
        start_timeout: Duration,
        process: ServerProcess,
        dir: TempDir,
    ) -> TestServer {
        TestServer {
            kind,
            uri,
            port: Some(port),
            replica_set,
            transactions: replica_set,
            start_timeout,
            process: Some(process),
            dir: Some(dir),
        }
    }

    /// The connection string, e.g.
    /// `mongodb://127.0.0.1:PORT/?directConnection=true` for nx-27017,
    /// `mongodb://127.0.0.1:PORT/?replicaSet=testkit` for mongod, the given
    /// URI for an external server.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Which server this is.
    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    /// The 127.0.0.1 port of a server the kit started (`None` for external).
    /// It stays the same across [`restart`](Self::restart).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The pid of the running server process (`None` for external, or after
    /// [`stop`](Self::stop) / [`kill`](Self::kill)).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ServerProcess::pid)
    }

    /// Whether multi-document transactions with MongoDB's semantics work:
    /// true for the kit's mongod (a replica set) and for an external replica
    /// set or mongos (decided from its `hello`).
    ///
    /// False for nx-27017, although it does commit and abort transactions
    /// within ONE database: it gives no isolation (other clients see
    /// uncommitted writes) and refuses transactions spanning databases with an
    /// error that has no code. Test commit/abort there; test isolation and
    /// cross-database transactions only where this returns true.
    pub fn supports_transactions(&self) -> bool {
        self.transactions
    }

    /// Whether the server is a replica-set member (the kit's mongod always is).
    pub fn is_replica_set(&self) -> bool {
        self.replica_set
    }

    fn process_mut(&mut self, what: &str) -> Result<&mut ServerProcess, TestKitError> {
        let kind = self.kind;
        self.process.as_mut().ok_or_else(|| {
            TestKitError::Unsupported(format!(
                "cannot {what} an {kind} server: the test kit did not start it; use \
                 ServerOptions::managed(true) for tests that need to {what} the server"
            ))
        })
    }

    /// Stops the server: SIGTERM, then SIGKILL if it has not exited after
    /// 10 s. Data of a persistent server stays for [`restart`](Self::restart).
    /// Stopping a stopped server does nothing.
    pub async fn stop(&mut self) -> Result<(), TestKitError> {
        self.process_mut("stop")?.stop(STOP_GRACE).await
    }

    /// Kills the server with SIGKILL (for fault tests) and reaps it.
    pub async fn kill(&mut self) -> Result<(), TestKitError> {
        self.process_mut("kill")?.kill().await
    }

    /// Starts the server again on the same port and waits until it is ready
    /// (for mongod: until it is primary again). A running server is stopped
    /// first. The stale pid file of a killed server is removed first.
    ///
    /// An in-memory nx-27017 server comes back EMPTY; use
    /// [`ServerOptions::persistent`] to keep data. If another process took the
    /// port meanwhile, this fails with [`TestKitError::PortInUse`].
    pub async fn restart(&mut self) -> Result<(), TestKitError> {
        let (timeout, kind, port) = (self.start_timeout, self.kind, self.port);
        let process = self.process_mut("restart")?;
        let port = port.ok_or_else(|| {
            TestKitError::Unsupported(format!("cannot restart a {kind} server without a port"))
        })?;
        process.stop(STOP_GRACE).await?;
        process.spawn()?;
        process.wait_ready(port, timeout).await?;
        if kind == ServerKind::Mongod {
            mongod::wait_primary(process, port, timeout).await?;
        }
        Ok(())
    }

    /// Client connections the server has open right now, not counting the
    /// probe's own (see [`connection_count`](crate::connection_count)).
    pub async fn connection_count(&self) -> Result<i64, TestKitError> {
        match self.port {
            Some(port) if self.process.is_some() => {
                probe::connection_count_at(&format!("127.0.0.1:{port}")).await
            }
            _ => probe::connection_count(&self.uri).await,
        }
    }
}
