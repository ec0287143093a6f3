//! Database name → pool: the lookup every `.db(name)` goes through on a cache miss.
//!
//! A [`DbSlot`] is what the manager knows about one database: its name, the pool it is routed
//! to and a driver `Database` handle on that pool. Slots are made once per database (after the
//! name is validated) and live in a concurrent map. A slot remembers the epoch of the client it
//! was made from; once its pool closes (and the epoch moves on) the slot is stale, which tells
//! every cache holding it to resolve again — whatever order a close and a lookup race in.

use std::fmt;
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use mongodb::Database;

use crate::error::Result;
use crate::name::validate_database_name;
use crate::pool::ClusterPool;

/// What the manager knows about one database in use.
pub(crate) struct DbSlot {
    pub(crate) database: Database,
    pub(crate) pool: Arc<ClusterPool>,
    epoch: u64,
}

impl DbSlot {
    /// `false` once the slot's pool was closed; holders must resolve the name again.
    #[inline]
    pub(crate) fn is_live(&self) -> bool {
        self.pool.is_current(self.epoch)
    }

    pub(crate) fn name(&self) -> &str {
        self.database.name()
    }
}

impl fmt::Debug for DbSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbSlot")
            .field("database", &self.name())
            .field("cluster", &self.pool.label())
            .field("live", &self.is_live())
            .finish()
    }
}

/// Routes database names to pools.
#[derive(Debug)]
pub(crate) struct Router {
    main: Arc<ClusterPool>,
    slots: DashMap<Box<str>, Arc<DbSlot>>,
}

impl Router {
    pub(crate) fn new(main: Arc<ClusterPool>) -> Self {
        Self {
            main,
            slots: DashMap::new(),
        }
    }

    /// The pool of the main cluster (the `uri` option).
    pub(crate) fn main_pool(&self) -> &Arc<ClusterPool> {
        &self.main
    }

    /// Every pool the router knows.
    pub(crate) fn pools(&self) -> impl Iterator<Item = &Arc<ClusterPool>> {
        std::iter::once(&self.main)
    }

    /// The slot of `name`, made on first use. Validates the name only then: a name found in
    /// the map was valid when it was put there.
    pub(crate) fn resolve(&self, name: &str) -> Result<Arc<DbSlot>> {
        if let Some(slot) = self.slots.get(name) {
            if slot.is_live() {
                return Ok(Arc::clone(&slot));
            }
        }
        validate_database_name(name)?;
        // Every database shares the main cluster's pool until per-database pools exist.
        let pool = &self.main;
        let (client, epoch) = pool.client()?;
        match self.slots.entry(name.into()) {
            Entry::Occupied(mut e) if !e.get().is_live() => {
                let slot = new_slot(&client, epoch, name, pool);
                e.insert(Arc::clone(&slot));
                Ok(slot)
            }
            Entry::Occupied(e) => Ok(Arc::clone(e.get())),
            Entry::Vacant(e) => {
                tracing::debug!(database = name, cluster = %pool.label(), "database routed");
                Ok(Arc::clone(
                    e.insert(new_slot(&client, epoch, name, pool)).value(),
                ))
            }
        }
    }

    /// Number of databases resolved and still routed.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Forgets every slot (their pools are closing, so they are already stale).
    pub(crate) fn clear(&self) {
        self.slots.clear();
    }
}

fn new_slot(
    client: &mongodb::Client,
    epoch: u64,
    name: &str,
    pool: &Arc<ClusterPool>,
) -> Arc<DbSlot> {
    Arc::new(DbSlot {
        database: client.database(name),
        pool: Arc::clone(pool),
        epoch,
    })
}
