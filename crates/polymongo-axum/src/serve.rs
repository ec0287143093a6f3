//! Graceful shutdown wired to axum's own: stop accepting, let requests in flight finish, then
//! close the pools.

use std::future::{Future, IntoFuture};
use std::io;
use std::time::Duration;

use axum::Router;
use polymongo::{CloseReport, PolyMongo};
use serde::Serialize;
use tokio::net::TcpListener;

/// How long each phase of a shutdown may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownDeadlines {
    /// After the signal, how long requests in flight may take to finish before the pools are
    /// closed under them. A request cut then may have written, so it is answered 500
    /// `outcome_unknown` — never 503 with `Retry-After` (see [`DbError`](crate::DbError)).
    /// Keep it above the tenancy's request timeout ([`RequestLimits`](crate::RequestLimits)):
    /// every request then meets its own deadline before the pools close. Default 30 s.
    pub drain: Duration,
    /// The deadline given to [`PolyMongo::close_all`] for cursors and sessions. Default 10 s.
    pub close: Duration,
}

impl Default for ShutdownDeadlines {
    fn default() -> Self {
        ShutdownDeadlines {
            drain: Duration::from_secs(30),
            close: Duration::from_secs(10),
        }
    }
}

/// What [`serve`] did once the signal came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ServeReport {
    /// Every request in flight finished within the drain deadline.
    pub drained: bool,
    /// What closing the pools did.
    pub close: CloseReport,
}

/// Serves `app` on `listener` until `signal` completes, then shuts down in order: axum stops
/// accepting connections and lets the requests in flight finish (up to
/// [`drain`](ShutdownDeadlines::drain)), then [`PolyMongo::close_all`] closes the pools (up to
/// [`close`](ShutdownDeadlines::close)).
///
/// ```no_run
/// # async fn f(app: axum::Router, poly: polymongo::PolyMongo) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// let report = polymongo_axum::serve(
///     listener,
///     app,
///     poly,
///     polymongo_axum::shutdown_signal(),
///     Default::default(),
/// )
/// .await?;
/// println!("drained: {}", report.drained);
/// # Ok(()) }
/// ```
///
/// # Errors
/// The server's I/O error; the pools are closed in that case too.
pub async fn serve<F>(
    listener: TcpListener,
    app: Router,
    poly: PolyMongo,
    signal: F,
    deadlines: ShutdownDeadlines,
) -> io::Result<ServeReport>
where
    F: Future<Output = ()> + Send + 'static,
{
    let (fired_tx, fired_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        signal.await;
        tracing::info!("shutdown: no new connections; finishing requests in flight");
        let _ = fired_tx.send(());
    };
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .into_future();
    tokio::pin!(server);

    let mut drained = true;
    let mut finished = false;
    let mut result = Ok(());
    tokio::select! {
        r = &mut server => {
            result = r;
            finished = true;
        }
        // `Err` (the signal future dropped) only happens once the server has ended, which the
        // other branch sees.
        Ok(()) = fired_rx => {
            match tokio::time::timeout(deadlines.drain, &mut server).await {
                Ok(r) => {
                    result = r;
                    finished = true;
                }
                Err(_) => {
                    tracing::warn!(drain = ?deadlines.drain, "requests still in flight at the drain deadline; closing the pools under them");
                    drained = false;
                }
            }
        }
    }
    let close = poly.close_all(deadlines.close).await;
    if !finished {
        // The handlers still running now fail fast (the manager refuses new work), so the
        // server ends soon; it is not waited for beyond the close deadline.
        if let Ok(r) = tokio::time::timeout(deadlines.close, &mut server).await {
            result = r;
        }
    }
    tracing::info!(drained, ?close, "shutdown complete");
    result.map(|()| ServeReport { drained, close })
}

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM: the usual signal for [`serve`].
/// If a handler cannot be installed, that signal is never seen (logged), and the other still
/// works.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
