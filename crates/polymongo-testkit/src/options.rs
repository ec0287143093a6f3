//! [`ServerOptions`]: what kind of server to start and how.

use std::path::PathBuf;
use std::time::Duration;

use crate::capability::{Capabilities, Capability};
use crate::server::ServerKind;

/// Options for [`TestServer::start_with`](crate::TestServer::start_with).
///
/// ```
/// use polymongo_testkit::{ServerKind, ServerOptions};
/// let opts = ServerOptions::new().persistent(true).kind(ServerKind::Nx27017);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    pub(crate) persistent: bool,
    pub(crate) kind: Option<ServerKind>,
    pub(crate) managed: bool,
    pub(crate) external_uri: Option<String>,
    pub(crate) python: Option<PathBuf>,
    pub(crate) cache_dir: Option<PathBuf>,
    pub(crate) start_timeout: Option<Duration>,
    pub(crate) needs: Capabilities,
}

impl ServerOptions {
    /// Defaults: in-memory nx-27017 (or a mongod / external server, see
    /// [`TestServer::start`](crate::TestServer::start)), no capability required, 20 s start
    /// timeout for nx-27017 and mongoeco, 60 s for mongod.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keep data across [`restart`](crate::TestServer::restart) (and `kill`):
    /// nx-27017 then stores one SQLite file per database in the instance's
    /// temporary directory (`--data-dir <dir>`) instead of in memory, and mongoeco
    /// uses its SQLite engine (one file) instead of its memory engine. A
    /// mongod's dbpath is always persistent. The data is deleted when the
    /// [`TestServer`](crate::TestServer) is dropped.
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// Require this kind of server instead of choosing one. `Mongod` fails
    /// with [`NoMongod`](crate::TestKitError::NoMongod) when no `mongod` is on
    /// PATH; `MongoEco` with [`NoMongoEcoPython`](crate::TestKitError::NoMongoEcoPython)
    /// when no Python 3.13+ is found; `External` needs [`external_uri`](Self::external_uri) or
    /// `POLYMONGO_TEST_URI`.
    pub fn kind(mut self, kind: ServerKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Never use an external server (ignore `POLYMONGO_TEST_URI`): for tests
    /// that must stop, kill or restart the server, which needs a process the
    /// kit owns. Picks mongod when on PATH, else an emulator.
    pub fn managed(mut self, managed: bool) -> Self {
        self.managed = managed;
        self
    }

    /// Use this already running server (kind `External`) instead of reading
    /// `POLYMONGO_TEST_URI`.
    pub fn external_uri(mut self, uri: impl Into<String>) -> Self {
        self.external_uri = Some(uri.into());
        self
    }

    /// Only a server with `capability` will do: the kit picks one that has it (an external
    /// server or `mongod` first when there is one, then nx-27017, then mongoeco), and
    /// [`TestServer::start_with`](crate::TestServer::start_with) fails with
    /// [`TestKitError::Unavailable`](crate::TestKitError::Unavailable) (a skip, with the
    /// reason) when none here has it. May be called several times; every capability asked
    /// for is needed. [`Capability::RestartKeepsData`] implies [`managed`](Self::managed) and
    /// [`persistent`](Self::persistent).
    pub fn require(mut self, capability: Capability) -> Self {
        self.needs = self.needs.with(capability);
        if capability == Capability::RestartKeepsData {
            self.managed = true;
            self.persistent = true;
        }
        self
    }

    /// [`require`](Self::require) for each of `capabilities`.
    pub fn require_all(self, capabilities: &[Capability]) -> Self {
        capabilities.iter().fold(self, |opts, &c| opts.require(c))
    }

    /// The capabilities asked for with [`require`](Self::require).
    pub fn needs(&self) -> Capabilities {
        self.needs
    }

    /// The base Python interpreter for the emulated server's virtual environment. For
    /// nx-27017 (default: env `POLYMONGO_TEST_PYTHON`, else `python3`, else `python` on PATH)
    /// it must be Python 3.11 to 3.14; for mongoeco (default: env `POLYMONGO_MONGOECO_PYTHON`,
    /// else a Python 3.13+ found on PATH or among pyenv's versions) 3.13 or newer. Needs the
    /// `venv` module.
    pub fn python(mut self, path: impl Into<PathBuf>) -> Self {
        self.python = Some(path.into());
        self
    }

    /// Where cached virtual environments live (default: env
    /// `POLYMONGO_TESTKIT_CACHE`, else `<cargo target dir>/polymongo-testkit`).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// How long to wait for the server to answer after spawning it (per
    /// attempt, also used by `restart`). The install of an emulator, when needed,
    /// is not counted.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = Some(timeout);
        self
    }
}
