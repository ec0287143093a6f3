//! The features layer: what the library does with the layers below — transactions, change
//! streams, bulk tasks, migrations, statistics, metrics, run-time configuration (scale), hooks, closing
//! and signal handling. Features use the registry, handles and pools; nothing below imports
//! a feature.

pub mod bulk;
pub(crate) mod closing;
pub(crate) mod figures;
pub mod hooks;
#[cfg(feature = "logging")]
pub mod logging;
#[cfg(feature = "metrics")]
pub(crate) mod metrics;
pub mod migrate;
pub(crate) mod ping;
pub(crate) mod scale;
#[cfg(unix)]
pub(crate) mod shutdown;
pub(crate) mod stats;
pub mod tenants;
pub(crate) mod txn;
pub(crate) mod watch;
