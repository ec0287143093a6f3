//! [`TestServer`]: choosing, owning and controlling one test server.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ClientOptions;
use mongodb::Client;
use tempfile::TempDir;

use crate::capability::{self, Capabilities, Capability, Implementation};
use crate::error::TestKitError;
use crate::options::ServerOptions;
use crate::probe::{self, redact};
use crate::process::ServerProcess;
use crate::{mongod, mongoeco, nx, python, report};

/// Env var with the URI of an existing server to test against.
pub const ENV_TEST_URI: &str = "POLYMONGO_TEST_URI";
/// Env var forcing the kind of server: `nx` (or `nx-27017`), `mongoeco`, `mongod`,
/// `external`, or `auto` (the default order). A forced kind is used for every test; a test
/// that requires a capability it lacks is skipped.
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
    /// mongoeco (PyPI, `mongoeco[wire]`), a MongoDB emulator in Python with a wire server,
    /// patched at start-up by the kit's launcher. Not MongoDB either, and wrong in other places
    /// than nx-27017: see QUIRKS.md.
    MongoEco,
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerKind::External => "external",
            ServerKind::Mongod => "mongod",
            ServerKind::Nx27017 => "nx-27017",
            ServerKind::MongoEco => "mongoeco",
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
    replica_set_or_mongos: bool,
    capabilities: Capabilities,
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
            .field("capabilities", &self.capabilities)
            .field("dir", &self.dir.as_ref().map(TempDir::path))
            .finish()
    }
}

/// A server the kit could provide, in the order it is tried.
enum Plan {
    External(String),
    Mongod(PathBuf),
    Nx,
    /// `fallible`: when no Python 3.13+ exists, note the reason and try the next plan
    /// (automatic choice) instead of failing (mongoeco asked for by name).
    MongoEco {
        fallible: bool,
    },
}

fn external_uri_from_env() -> Option<String> {
    std::env::var(ENV_TEST_URI)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn mongod_on_path() -> Option<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    python::find_on_path("mongod", &path_var)
}

/// The servers to try, in order (see [`TestServer::start_with`]), and a prefix for skip
/// reasons when a kind was forced.
fn plans(opts: &ServerOptions) -> Result<(Vec<Plan>, Option<String>), TestKitError> {
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

    match opts.kind {
        Some(ServerKind::External) => return Ok((vec![external()?], None)),
        Some(ServerKind::Mongod) => return Ok((vec![mongod()?], None)),
        Some(ServerKind::Nx27017) => return Ok((vec![Plan::Nx], None)),
        Some(ServerKind::MongoEco) => return Ok((vec![Plan::MongoEco { fallible: false }], None)),
        None => {}
    }
    if let Some(uri) = &opts.external_uri {
        return Ok((vec![Plan::External(uri.clone())], None));
    }
    let forced = std::env::var(ENV_TEST_SERVER).unwrap_or_default();
    let forced_note = || Some(format!("{ENV_TEST_SERVER}={} chooses it", forced.trim()));
    match forced.trim().to_ascii_lowercase().as_str() {
        "nx" | "nx-27017" | "nx27017" => return Ok((vec![Plan::Nx], forced_note())),
        "mongoeco" => return Ok((vec![Plan::MongoEco { fallible: false }], forced_note())),
        "mongod" => return Ok((vec![mongod()?], forced_note())),
        "external" if !opts.managed => return Ok((vec![external()?], forced_note())),
        "external" | "" | "auto" => {}
        _ => {
            return Err(TestKitError::BadEnv {
                name: ENV_TEST_SERVER,
                value: forced,
                hint: "use nx, mongoeco, mongod, external or auto",
            })
        }
    }
    let mut plans = Vec::new();
    if !opts.managed {
        if let Some(uri) = external_uri_from_env() {
            plans.push(Plan::External(uri));
        }
    }
    if let Some(path) = mongod_on_path() {
        plans.push(Plan::Mongod(path));
    }
    plans.push(Plan::Nx);
    if !opts.needs.is_empty() {
        plans.push(Plan::MongoEco { fallible: true });
    }
    Ok((plans, None))
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
    /// 2. env `POLYMONGO_TEST_SERVER` = `nx` | `mongoeco` | `mongod` | `external` forces a
    ///    kind (`auto` or unset: continue);
    /// 3. env `POLYMONGO_TEST_URI` → [`ServerKind::External`] (unless
    ///    [`ServerOptions::managed`]);
    /// 4. `mongod` on PATH → [`ServerKind::Mongod`], a single-node replica set
    ///    on a free 127.0.0.1 port with a temporary dbpath;
    /// 5. [`ServerKind::Nx27017`], installed on first use into a cached
    ///    virtual environment (about 6 s, once per cache) and started on a
    ///    free 127.0.0.1 port (ready in well under a second);
    /// 6. when capabilities are required ([`ServerOptions::require`]): [`ServerKind::MongoEco`],
    ///    installed likewise (about 16 s once, needs Python 3.13+; ready in about 1.5 s).
    ///
    /// With required capabilities, the first of these that has them all is used (an external
    /// server is asked what it is first); when none has them, this fails with
    /// [`TestKitError::Unavailable`] saying why each one does not do. A forced kind that lacks
    /// them gives `Unavailable` too.
    pub async fn start_with(opts: ServerOptions) -> Result<TestServer, TestKitError> {
        let mut opts = opts;
        let needs = opts.needs;
        if needs.has(Capability::RestartKeepsData) {
            opts.managed = true;
            opts.persistent = true;
        }
        let (plans, forced) = plans(&opts)?;
        let mut reasons: Vec<String> = Vec::new();
        for plan in plans {
            let static_kind = match &plan {
                Plan::External(_) => None,
                Plan::Mongod(_) => Some(ServerKind::Mongod),
                Plan::Nx => Some(ServerKind::Nx27017),
                Plan::MongoEco { .. } => Some(ServerKind::MongoEco),
            };
            if let Some(kind) = static_kind {
                let missing = capability::of_kind(kind).missing(needs);
                if !missing.is_empty() {
                    reasons.push(format!("{kind} lacks {missing}"));
                    continue;
                }
            }
            let server = match plan {
                Plan::External(uri) => Self::external(uri).await?,
                Plan::Mongod(path) => mongod::start(&opts, path).await?,
                Plan::Nx => nx::start(&opts).await?,
                Plan::MongoEco { fallible } => match mongoeco::start(&opts).await {
                    Ok(server) => server,
                    Err(TestKitError::NoMongoEcoPython { detail }) if fallible => {
                        reasons.push(format!(
                            "mongoeco needs Python 3.13 or newer and none was found ({detail})"
                        ));
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let missing = server.capabilities.missing(needs);
            if missing.is_empty() {
                report::record_start(server.kind, needs);
                return Ok(server);
            }
            reasons.push(format!("the {} server lacks {missing}", server.kind));
        }
        let mut reason = reasons.join("; ");
        if let Some(forced) = forced {
            reason = format!("{forced}, and {reason}");
        }
        Err(TestKitError::Unavailable {
            needs: needs.to_string(),
            reason,
        })
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
        let hello: Document = match hello {
            Ok(hello) => hello,
            Err(e) => {
                client.shutdown().await;
                return Err(e.into());
            }
        };
        let replica_set = hello.get_str("setName").is_ok();
        let mongos = matches!(hello.get_str("msg"), Ok("isdbgrid"));
        // What implementation it is: the emulators say so in serverStatus.
        let status = admin.run_command(doc! { "serverStatus": 1 }).await.ok();
        let implementation = match &status {
            Some(s) if s.get_str("process") == Ok("nx_27017") => Implementation::Nx27017,
            Some(s) if s.contains_key("mongoeco") => Implementation::MongoEco,
            _ => Implementation::MongoDb,
        };
        // Fail points need test commands; asking changes nothing (turning a fail point off to
        // see would disturb other tests sharing the server).
        let fail_points = implementation == Implementation::MongoDb
            && admin
                .run_command(doc! { "getParameter": 1, "enableTestCommands": 1 })
                .await
                .ok()
                .and_then(|r| r.get("enableTestCommands").cloned())
                .is_some_and(|v| {
                    matches!(v, Bson::Boolean(true) | Bson::Int32(1) | Bson::Int64(1))
                });
        client.shutdown().await;
        Ok(TestServer {
            kind: ServerKind::External,
            uri,
            port: None,
            replica_set,
            replica_set_or_mongos: implementation == Implementation::MongoDb
                && (replica_set || mongos),
            capabilities: capability::implementation_capabilities(
                implementation,
                replica_set || mongos,
                fail_points,
            ),
            start_timeout: Duration::ZERO,
            process: None,
            dir: None,
        })
    }

    /// Wraps a started, ready process.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn managed(
        kind: ServerKind,
        uri: String,
        port: u16,
        replica_set: bool,
        persistent: bool,
        start_timeout: Duration,
        process: ServerProcess,
        dir: TempDir,
    ) -> TestServer {
        let mut capabilities = capability::of_kind(kind);
        if !persistent && kind != ServerKind::Mongod {
            // An in-memory emulator comes back empty after a restart.
            capabilities = capabilities.without(Capability::RestartKeepsData);
        }
        TestServer {
            kind,
            uri,
            port: Some(port),
            replica_set,
            replica_set_or_mongos: replica_set,
            capabilities,
            start_timeout,
            process: Some(process),
            dir: Some(dir),
        }
    }

    /// The connection string, e.g.
    /// `mongodb://127.0.0.1:PORT/?directConnection=true` for nx-27017 and mongoeco,
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

    /// What this server can do (see [`Capability`]).
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// Whether this server has `capability`.
    pub fn has(&self, capability: Capability) -> bool {
        self.capabilities.has(capability)
    }

    /// Whether this is a real MongoDB replica set or mongos, where transactions have MongoDB's
    /// semantics in full (isolation, cross-database, `WriteConflict`, lifetime limits): true
    /// for the kit's mongod and an external replica set or mongos.
    ///
    /// False for the emulators. nx-27017 commits and aborts transactions within ONE database,
    /// without isolation, and refuses transactions spanning databases. mongoeco isolates them
    /// and lets them span databases, but produces no write conflicts and keeps a session in a
    /// transaction whose commit failed. Ask for the capability a test needs instead
    /// ([`ServerOptions::require`], [`Capability::TransactionIsolation`]).
    pub fn supports_transactions(&self) -> bool {
        self.replica_set_or_mongos
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
    /// An in-memory nx-27017 or mongoeco server comes back EMPTY; use
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
