//! The handles layer: typed models on any database ([`model`]), and the counted operation
//! ([`run`]). Handles hold a registry lease; they know the registry and the pools below it,
//! nothing above.

pub(crate) mod model;
pub(crate) mod run;
