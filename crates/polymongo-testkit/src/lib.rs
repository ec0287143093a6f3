//! Ephemeral MongoDB-compatible servers for tests: the Rust counterpart of
//! `mongodb-memory-server`.
//!
//! [`TestServer::start`] gives every test its own server, and dropping the
//! [`TestServer`] stops it. Which server, first match wins:
//!
//! 1. env `POLYMONGO_TEST_SERVER=nx|mongoeco|mongod|external` forces a kind;
//! 2. env `POLYMONGO_TEST_URI` → an existing server ([`ServerKind::External`]);
//! 3. `mongod` on `PATH` → a single-node replica set on a free port with a
//!    temporary dbpath ([`ServerKind::Mongod`]; transactions and change streams
//!    work as in production);
//! 4. else `nx-27017` 0.8.1, a MongoDB
//!    wire-protocol server on SQLite ([`ServerKind::Nx27017`]), installed by
//!    the kit on first use into a cached Python virtual environment (needs
//!    `python3` 3.11+ with `venv`; about 6 s once; each server then starts in
//!    well under a second);
//! 5. for a test that needs what nx-27017 lacks, `mongoeco`
//!    4.11.0 ([`ServerKind::MongoEco`]), installed likewise (needs Python 3.13+, found on
//!    PATH or among pyenv's versions; about 16 s once; each server starts in about 1.5 s).
//!
//! [`ServerOptions`] can require a kind, or ask for a server the kit owns
//! ([`ServerOptions::managed`]).
//!
//! # Capabilities
//!
//! Tests say what they need rather than which server: [`server_for`] (or
//! [`ServerOptions::require`]) with [`Capability`] values such as exact BSON types, index
//! directions, transaction isolation, cross-database transactions, fail points, change streams,
//! or a restart that keeps data. The kit picks a server that has them — an external server or
//! `mongod` first when there is one — and when none here does, the test is reported as
//! skipped with the reason (stderr, and the run report of env `POLYMONGO_TEST_REPORT`, which
//! the crate's `testkit-report` program summarises).
//!
//! ```no_run
//! use polymongo_testkit::{server_for, Capability};
//!
//! # async fn example() {
//! let Some(server) = server_for(&[Capability::CrossDatabaseTransactions]).await else {
//!     return; // reported as skipped, with the reason
//! };
//! # let _ = server;
//! # }
//! ```
//!
//! nx-27017 and mongoeco are useful and they are not MongoDB: the crate's `QUIRKS.md` and the
//! project's design notes list what each does differently. Compare statistics with what the
//! server itself reports.
//!
//! # Example
//!
//! ```no_run
//! use mongodb::{bson::doc, Client};
//! use polymongo_testkit::{ServerOptions, TestServer};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let server = TestServer::start().await?;
//! let client = Client::with_uri_str(server.uri()).await?;
//! client.database("app").collection("users").insert_one(doc! { "name": "ada" }).await?;
//!
//! // Server-side connection count, not counting the probe itself.
//! let before = server.connection_count().await?;
//! client.shutdown().await;
//! # let _ = before;
//!
//! // Fault tests: a server whose data survives kill + restart on the same port.
//! let mut server = TestServer::start_with(ServerOptions::new().persistent(true).managed(true)).await?;
//! server.kill().await?;
//! server.restart().await?;
//! # Ok(()) }
//! ```
//!
//! # Network faults
//!
//! [`FaultProxy`] sits between a client and a server on its own 127.0.0.1
//! port and, on command, adds latency, black-holes traffic, drops every open
//! connection or refuses new ones: see its docs and the crate's README.
//!
//! # Processes
//!
//! Servers bind 127.0.0.1 only, each on its own free port with its own
//! temporary directory (data, pid file, logs), so any number can run at once,
//! in one test process or many. The kit's launchers also end the server
//! when the test process dies without dropping it. Unix only (Linux, macOS).

#![deny(missing_docs)]

mod capability;
mod emulator;
mod error;
mod mongod;
mod mongoeco;
mod nx;
mod options;
mod port;
mod probe;
mod process;
mod proxy;
mod python;
mod report;
mod server;
mod venv;

pub use capability::{Capabilities, Capability};
pub use error::TestKitError;
pub use options::ServerOptions;
pub use probe::connection_count;
pub use proxy::{Fault, FaultProxy, ProxyStats};
pub use report::{record_skip, server_for, server_for_with, RunReport, ENV_TEST_REPORT};
pub use server::{ServerKind, TestServer, ENV_TEST_SERVER, ENV_TEST_URI};

/// The Python interpreter of the kit's cached environment, which has pymongo (and so
/// `bson.json_util`) installed: for interoperability tests against another implementation of
/// MongoDB's formats. Installs the environment first if it is not there yet (about 6 s,
/// once), with the interpreter chosen as for nx-27017 (`POLYMONGO_TEST_PYTHON`, else
/// `python3`).
///
/// # Errors
/// As [`TestServer::start`] when the environment cannot be installed.
pub async fn pymongo_python() -> Result<std::path::PathBuf, TestKitError> {
    emulator::install(&venv::NX, &ServerOptions::new())
        .await
        .map(|install| install.python)
}

/// The cluster an example or tool should use: `MONGODB_URI` when it is set, else a local test
/// server started now (say so on stdout). Keep the returned server, if any, alive for as long
/// as the cluster is used: dropping it stops the server.
///
/// # Errors
/// As [`TestServer::start`].
pub async fn uri_from_env_or_start() -> Result<(String, Option<TestServer>), TestKitError> {
    uri_from_env_or_start_for(&[]).await
}

/// [`uri_from_env_or_start`] for an example that needs `needs` of its cluster: the local test
/// server started is one that has them (the cluster of `MONGODB_URI` is taken as it is).
///
/// # Errors
/// As [`TestServer::start_with`], and when no server kind this machine can start has
/// every capability of `needs`.
pub async fn uri_from_env_or_start_for(
    needs: &[Capability],
) -> Result<(String, Option<TestServer>), TestKitError> {
    match std::env::var("MONGODB_URI") {
        Ok(uri) if !uri.is_empty() => Ok((uri, None)),
        _ => {
            println!("MONGODB_URI is not set: starting a local test server…");
            let server = TestServer::start_with(ServerOptions::new().require_all(needs)).await?;
            Ok((server.uri().to_owned(), Some(server)))
        }
    }
}
