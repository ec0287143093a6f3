//! Work done on a database before its first ready handle is handed out (lazy migrations),
//! once per registry entry however many callers race.
//!
//! The work itself belongs to a higher layer; the registry keeps only the "done" mark, with
//! the entry, so it goes when the entry goes (dropped, re-routed, forgotten for idleness)
//! and the next first use checks again.

use futures_util::future::BoxFuture;
use tokio::sync::OnceCell;

use super::DbLease;
use crate::floor::error::Result;

/// What to do before a database's first ready handle.
pub(crate) trait FirstUse: Send + Sync {
    /// Prepares the leased database; an error is handed to the caller, and the next first
    /// use tries again.
    fn prepare<'a>(&'a self, lease: &'a DbLease) -> BoxFuture<'a, Result<()>>;
}

/// The entry's mark: set once the preparation succeeded.
pub(crate) struct Prepared(OnceCell<()>);

impl Prepared {
    pub(crate) fn new() -> Self {
        Self(OnceCell::new())
    }

    /// Runs `first_use` unless it already succeeded on this entry; concurrent callers wait
    /// for one run. Cancel-safe: a cut run leaves the mark unset for the next caller.
    pub(crate) async fn ensure(&self, first_use: &dyn FirstUse, lease: &DbLease) -> Result<()> {
        self.0
            .get_or_try_init(|| first_use.prepare(lease))
            .await
            .map(|_| ())
    }
}
