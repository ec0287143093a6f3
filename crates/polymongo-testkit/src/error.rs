//! The error type of the test kit.
//!
//! Every message says what went wrong *and* what to do about it, because the
//! person reading it is usually looking at a failed test run, not at this crate.

use std::path::PathBuf;
use std::time::Duration;

use crate::server::ServerKind;

/// Everything that can go wrong while providing a test server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestKitError {
    /// No usable Python interpreter was found, so an emulated server cannot be installed.
    #[error(
        "no usable Python 3 interpreter ({detail}); the test kit runs its emulated servers from \
         PyPI and needs Python with the `venv` module (nx-27017: 3.11-3.14, mongoeco: 3.13+): \
         install python3 (and python3-venv), point ServerOptions::python / POLYMONGO_TEST_PYTHON \
         at one, put `mongod` on PATH, or set POLYMONGO_TEST_URI=mongodb://host:port to test \
         against an existing server"
    )]
    NoPython {
        /// What was tried and why it failed.
        detail: String,
    },

    /// The Python interpreter is outside the range the server's pinned packages support.
    #[error(
        "Python {version} at {python} cannot run {server} (needs Python {needs}); install a \
         supported Python and point ServerOptions::python at it (or POLYMONGO_TEST_PYTHON for \
         nx-27017, POLYMONGO_MONGOECO_PYTHON for mongoeco)"
    )]
    PythonUnsupported {
        /// The server the interpreter was for.
        server: ServerKind,
        /// The versions that server supports.
        needs: &'static str,
        /// The interpreter that was asked.
        python: PathBuf,
        /// The version it reported.
        version: String,
    },

    /// No Python 3.13 or newer was found for mongoeco.
    #[error(
        "mongoeco needs Python 3.13 or newer and none was found ({detail}); install one (e.g. \
         `pyenv install 3.13`) or point POLYMONGO_MONGOECO_PYTHON at one"
    )]
    NoMongoEcoPython {
        /// Every interpreter that was tried and why it did not do.
        detail: String,
    },

    /// `python3 -m venv` failed.
    #[error(
        "creating the Python virtual environment at {path} failed (on Debian/Ubuntu install the \
         `python3-venv` package); python said:\n{stderr_tail}"
    )]
    VenvFailed {
        /// Where the environment was being created.
        path: PathBuf,
        /// The last lines python wrote to stderr.
        stderr_tail: String,
    },

    /// `pip install` of the server's pinned packages failed.
    #[error(
        "pip could not install the pinned {server} packages (is a package index reachable? a \
         proxy or PIP_INDEX_URL may be needed; delete {cache} to retry from scratch); pip \
         said:\n{stderr_tail}"
    )]
    PipFailed {
        /// The server being installed.
        server: ServerKind,
        /// The cache directory of the failed installation.
        cache: PathBuf,
        /// The last lines pip wrote to stderr.
        stderr_tail: String,
    },

    /// The launcher's patches of the server no longer apply, or its self-test failed.
    #[error(
        "the test kit's {server} launcher could not patch or verify {server} (was the pinned \
         version changed? update src/{launcher}); it said:\n{output_tail}"
    )]
    PatchFailed {
        /// The server being patched.
        server: ServerKind,
        /// The launcher script's file name.
        launcher: &'static str,
        /// The launcher's output.
        output_tail: String,
    },

    /// The port the server must use is taken by another process.
    #[error(
        "port {port} on 127.0.0.1 is already in use by another process; a restart must keep its \
         port, so stop whatever listens there (or start a new TestServer)"
    )]
    PortInUse {
        /// The port.
        port: u16,
    },

    /// The server did not answer in time.
    #[error(
        "the {kind} test server did not become ready within {waited:?} (raise \
         ServerOptions::start_timeout on a slow machine); last log lines:\n{log_tail}"
    )]
    StartTimeout {
        /// Which server.
        kind: ServerKind,
        /// How long the kit waited.
        waited: Duration,
        /// The last lines of the server's log.
        log_tail: String,
    },

    /// The server process ended while the kit waited for it.
    #[error(
        "the {kind} test server exited ({status}) before it was ready; last log lines:\n{log_tail}"
    )]
    ServerExited {
        /// Which server.
        kind: ServerKind,
        /// The exit status.
        status: String,
        /// The last lines of the server's log.
        log_tail: String,
    },

    /// `mongod` was required (by `ServerOptions::kind` or `POLYMONGO_TEST_SERVER`) but is not on PATH.
    #[error(
        "a mongod test server was requested but no `mongod` executable is on PATH; install \
         MongoDB, or drop the request (ServerOptions::kind / POLYMONGO_TEST_SERVER=mongod) to \
         fall back to nx-27017"
    )]
    NoMongod,

    /// No server the kit can provide here has every capability a test asked for
    /// ([`ServerOptions::require`](crate::ServerOptions::require)): the test should be
    /// reported as skipped with this reason ([`crate::server_for`] does that).
    #[error("no test server here has {needs}: {reason}")]
    Unavailable {
        /// The capabilities asked for, in words.
        needs: String,
        /// Why each candidate server does not do.
        reason: String,
    },

    /// An external server was required but `POLYMONGO_TEST_URI` is not set.
    #[error(
        "an external test server was requested but POLYMONGO_TEST_URI is not set (and no \
         ServerOptions::external_uri was given); set it to a mongodb:// URI"
    )]
    NoExternalUri,

    /// The operation does not apply to this kind of server.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// An environment variable the kit reads has a value it cannot use.
    #[error("environment variable {name} has an unusable value {value:?}: {hint}")]
    BadEnv {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What values are accepted.
        hint: &'static str,
    },

    /// A URI the kit must parse itself (for the raw connection probe) is not usable.
    #[error("cannot probe {uri_redacted:?}: {reason}")]
    BadUri {
        /// The URI with any credentials removed.
        uri_redacted: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The server answered a command with `ok: 0`.
    #[error("the server refused `{command}`: {message}")]
    Command {
        /// The command name.
        command: String,
        /// The server's `errmsg` (and `code` when present).
        message: String,
    },

    /// The server's reply did not follow the wire protocol the kit expects.
    #[error("unexpected reply from the server: {0}")]
    Protocol(String),

    /// An operating-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the kit was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The MongoDB driver failed (used for external servers).
    #[error("MongoDB driver error: {0}")]
    Driver(#[from] mongodb::error::Error),
}

impl TestKitError {
    /// Whether this error means "no server here can run this test" (a skip), rather than a
    /// failure to start a server that should have started.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, TestKitError::Unavailable { .. })
    }

    /// Wraps an I/O error with what the kit was doing.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        TestKitError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The last `max_lines` lines of `text` (for error messages).
pub(crate) fn tail(text: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(max_lines);
    let joined = lines[start..].join("\n");
    if joined.trim().is_empty() {
        "(empty)".to_owned()
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn error_and_server_are_send_and_sync() {
        assert_send_sync::<TestKitError>();
        assert_send_sync::<crate::TestServer>();
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("  \n", 2), "(empty)");
    }
}
