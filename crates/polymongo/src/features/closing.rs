//! Closing the manager: [`PolyMongo::close_all`] and [`PolyMongo::force_close_all`].
//!
//! The close is carried out by a task the manager owns, started by the first call; every
//! caller (the first included) only waits for that task's one outcome. Dropping a caller's
//! future therefore changes nothing: the close goes on, and a later call sees it finish. The
//! task never waits on the network past the deadline: pools still busy then are left to a
//! background shutdown, and `force_close_all` cuts every wait at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::pool::cluster::Shutdown;
use crate::registry::Registry;

/// What [`PolyMongo::close_all`](crate::PolyMongo::close_all) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CloseReport {
    /// Pools that had a client and were shut down by the close.
    pub pools_closed: usize,
    /// Of those, pools still busy (operations, cursors or sessions) at the deadline, or cut by
    /// [`force_close_all`](crate::PolyMongo::force_close_all): their clients are shut down in
    /// the background without waiting.
    pub pools_forced: usize,
    /// Clients of pools closed earlier for idleness, still finishing their cursors and
    /// sessions, whose grace the close cut.
    pub idle_clients_cut: usize,
    /// Managed change streams the close ended.
    pub change_streams_closed: usize,
    /// This call did not start the close: it waited for (or found) the one started by an
    /// earlier call, and reports that close's figures.
    pub already_closed: bool,
}

enum State {
    Open,
    Closing(watch::Receiver<Option<CloseReport>>),
    Closed(CloseReport),
}

/// The manager's close: started once, awaited by everyone.
pub(crate) struct Closer {
    state: Mutex<State>,
    /// Set by `force_close_all`: every graceful wait of the close ends now.
    force: watch::Sender<bool>,
}

impl Closer {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State::Open),
            force: watch::channel(false).0,
        }
    }

    /// Cuts every graceful wait of the close (now, or as soon as it starts).
    pub(crate) fn force(&self) {
        self.force.send_replace(true);
    }

    /// Starts the close unless it was started, then waits for its outcome. The report says
    /// `already_closed` unless this call started it.
    pub(crate) async fn close(
        self: &Arc<Self>,
        registry: &Arc<Registry>,
        runtime: &Handle,
        stop_housekeeper: &watch::Sender<bool>,
        deadline: Duration,
    ) -> CloseReport {
        let (mut outcome, started_here) = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            match &*state {
                State::Closed(report) => {
                    return CloseReport {
                        already_closed: true,
                        ..*report
                    }
                }
                State::Closing(rx) => (rx.clone(), false),
                State::Open => {
                    let (tx, rx) = watch::channel(None);
                    *state = State::Closing(rx.clone());
                    // Refused at once from here on, even before the task runs.
                    registry.close();
                    stop_housekeeper.send_replace(true);
                    let this = Arc::clone(self);
                    let registry = Arc::clone(registry);
                    runtime.spawn(async move {
                        let report = this.run(&registry, deadline).await;
                        *this.state.lock().unwrap_or_else(|p| p.into_inner()) =
                            State::Closed(report);
                        tx.send_replace(Some(report));
                    });
                    (rx, true)
                }
            }
        };
        let report = match outcome.wait_for(Option::is_some).await {
            Ok(report) => report.unwrap_or_default(),
            // The task was dropped with its runtime: nothing is left to close.
            Err(_) => CloseReport::default(),
        };
        CloseReport {
            already_closed: !started_here,
            ..report
        }
    }

    async fn run(&self, registry: &Registry, deadline: Duration) -> CloseReport {
        // Every pool refuses new work (operations, streams) before anything waits; then the
        // streams end (their cursors no longer hold the pools open, and one opened meanwhile
        // sees the pool closing and ends itself), then the entries, all stale now, go.
        let pools = registry.routes().pools();
        let taken: Vec<_> = pools
            .iter()
            .map(|pool| (Arc::clone(pool), pool.begin_close()))
            .collect();
        let streams = registry.close_all_streams();
        registry.clear();
        // All pools wait at once, so the whole close takes at most `deadline`.
        let outcomes = futures_util::future::join_all(taken.into_iter().map(|(pool, client)| {
            let force = self.force.subscribe();
            async move { pool.finish_close(client, deadline, force).await }
        }))
        .await;
        let mut report = CloseReport {
            change_streams_closed: streams,
            ..CloseReport::default()
        };
        for outcome in outcomes {
            match outcome {
                Shutdown::NotOpen => {}
                Shutdown::Graceful => report.pools_closed += 1,
                Shutdown::Forced => {
                    report.pools_closed += 1;
                    report.pools_forced += 1;
                }
            }
        }
        report.idle_clients_cut = registry.routes().retiring().force_all();
        tracing::info!(?report, "polymongo closed");
        report
    }
}
