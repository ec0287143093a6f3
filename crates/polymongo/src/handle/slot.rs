//! A connection slot held across several operations: a place taken in a pool's wait queue
//! before any work is sent, so that a caller who must answer "come back later" can do so while
//! nothing has been sent (a web request refused before its handler runs).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use crate::floor::error::{Error, Result};
use crate::registry::DbLease;

/// One of a pool's `max_pool_size` connection slots, held until the last clone is dropped.
///
/// Taken with [`PolyMongo::reserve_connection`](crate::PolyMongo::reserve_connection), which
/// waits at most its bound in the same wait queue as [`DbHandle::run`](crate::DbHandle::run)
/// (and so shows in the pool's `wait_queue` figure). A handle given the slot with
/// [`DbHandle::with_connection_slot`](crate::DbHandle::with_connection_slot) runs its `run`
/// operations in it rather than queueing again, so work holding a slot never waits behind
/// itself. While held, the slot also keeps its database's entry in use, like a handle.
///
/// The slot is polymongo's count of the pool's connections, not a driver connection: driver
/// calls made directly on a handle (through `Deref`) do not take slots, and a slot does not
/// pin a connection to the caller.
#[derive(Clone)]
pub struct ConnectionSlot {
    lease: DbLease,
    _permit: Arc<OwnedSemaphorePermit>,
}

impl fmt::Debug for ConnectionSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionSlot")
            .field("database", &self.lease.entry.name())
            .field("cluster", &self.lease.entry.pool.label())
            .finish()
    }
}

impl ConnectionSlot {
    /// Takes a slot of the pool `lease`'s database is routed to, waiting at most `wait`.
    pub(crate) async fn reserve(lease: DbLease, wait: Duration) -> Result<Self> {
        let pool = Arc::clone(&lease.entry.pool);
        // A closing pool hands out no new work: refused before queueing.
        if pool.is_closing() {
            return Err(Error::Closed);
        }
        let permit = pool.connection_slot_within(Some(wait)).await?;
        Ok(Self {
            lease,
            _permit: Arc::new(permit),
        })
    }

    /// Whether this slot belongs to the pool `lease`'s database is served by now.
    pub(crate) fn is_of(&self, lease: &DbLease) -> bool {
        Arc::ptr_eq(&self.lease.entry.pool, &lease.entry.pool)
    }

    /// The database the slot was taken for.
    pub fn database_name(&self) -> &str {
        self.lease.entry.name()
    }
}
