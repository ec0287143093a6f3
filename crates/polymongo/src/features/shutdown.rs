//! Opt-in graceful shutdown on process signals (SIGINT, SIGTERM, SIGUSR2, the signals the npm
//! package handles).
//!
//! The library never installs signal handlers by itself.
//! [`PolyMongo::close_on_signals`](crate::PolyMongo::close_on_signals)
//! starts a task that waits for the first of those signals, closes the manager within a
//! deadline, and then hands control back: its [`JoinHandle`] completes with the signal and
//! the [`CloseReport`]. The application decides what follows — typically finishing its own
//! work and exiting with [`ShutdownSignal::exit_code`] (128 + the signal's number, the shell's
//! convention for "ended by a signal").

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;

use crate::features::closing::CloseReport;
use crate::floor::error::{Error, Result};

/// The signal that started a shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum ShutdownSignal {
    /// SIGINT (Ctrl-C).
    Sigint,
    /// SIGTERM (what process managers and containers send).
    Sigterm,
    /// SIGUSR2 (what `nodemon` sends on restart).
    Sigusr2,
}

impl ShutdownSignal {
    /// The signal's number on Linux and macOS.
    pub fn number(self) -> i32 {
        match self {
            ShutdownSignal::Sigint => 2,
            ShutdownSignal::Sigterm => 15,
            ShutdownSignal::Sigusr2 => {
                if cfg!(target_os = "linux") {
                    12
                } else {
                    31
                }
            }
        }
    }

    /// The exit status a process ended by this signal conventionally reports: 128 + its
    /// number (130 for SIGINT, 143 for SIGTERM).
    pub fn exit_code(self) -> i32 {
        128 + self.number()
    }
}

impl fmt::Display for ShutdownSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShutdownSignal::Sigint => "SIGINT",
            ShutdownSignal::Sigterm => "SIGTERM",
            ShutdownSignal::Sigusr2 => "SIGUSR2",
        })
    }
}

/// What [`PolyMongo::close_on_signals`](crate::PolyMongo::close_on_signals) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SignalShutdown {
    /// The signal received.
    pub signal: ShutdownSignal,
    /// What the close did.
    pub report: CloseReport,
}

/// Installs handlers for SIGINT, SIGTERM and SIGUSR2 now, and spawns the task that waits for
/// the first of them, then runs `close` and completes with the signal and its report:
/// [`PolyMongo::close_on_signals`](crate::PolyMongo::close_on_signals).
pub(crate) fn on_signals<F, Fut>(
    runtime: &tokio::runtime::Handle,
    deadline: Duration,
    close: F,
) -> Result<JoinHandle<SignalShutdown>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = CloseReport> + Send + 'static,
{
    let install = |kind| {
        signal(kind).map_err(|e| Error::Io {
            during: "installing a signal handler",
            source: std::sync::Arc::new(e),
        })
    };
    let mut int = install(SignalKind::interrupt())?;
    let mut term = install(SignalKind::terminate())?;
    let mut usr2 = install(SignalKind::user_defined2())?;
    Ok(runtime.spawn(async move {
        let signal = tokio::select! {
            _ = int.recv() => ShutdownSignal::Sigint,
            _ = term.recv() => ShutdownSignal::Sigterm,
            _ = usr2.recv() => ShutdownSignal::Sigusr2,
        };
        tracing::info!(%signal, ?deadline, "signal received: closing polymongo");
        let report = close().await;
        SignalShutdown { signal, report }
    }))
}
