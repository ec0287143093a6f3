//! The pools layer: one driver `Client` (one connection pool) per cluster or dedicated
//! database, its figures, and its closing. Knows nothing of databases beyond a count of those
//! it serves; reports upward through [`events`].

pub(crate) mod cluster;
pub(crate) mod cmap;
pub(crate) mod events;
pub(crate) mod histogram;
pub(crate) mod retiring;
