//! What pools tell the layers above them: connection transitions and errors, sent on a
//! channel so that a pool never knows who listens (the hook dispatcher does).

use std::time::SystemTime;

use tokio::sync::mpsc;

use crate::pool::cluster::PoolKind;

/// Something a pool (or an operation on it) reports upward.
#[derive(Debug)]
pub(crate) enum PoolSignal {
    /// The pool's first usable server was seen (`connected`), or its last one was lost or the
    /// pool was closed.
    Transition {
        /// The pool's id ([`ClusterPool::id`](crate::pool::cluster::ClusterPool::id)).
        pool: u64,
        /// The cluster, password redacted.
        cluster: String,
        /// Shared or dedicated.
        kind: PoolKind,
        /// Which way it went.
        connected: bool,
        /// When it was seen.
        at: SystemTime,
    },
    /// An error on the pool's cluster, or on an operation of one of its databases.
    Error {
        /// The cluster, password redacted.
        cluster: String,
        /// The database concerned, when there is one.
        database: Option<String>,
        /// What happened (never contains a password).
        message: String,
        /// When it was seen.
        at: SystemTime,
    },
}

/// The sending side, cloned into every pool.
pub(crate) type Signals = mpsc::UnboundedSender<PoolSignal>;
