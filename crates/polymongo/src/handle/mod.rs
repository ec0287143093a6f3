//! The handles layer: typed models on any database ([`model`]), the counted operation
//! ([`run`]), and connection slots held across operations ([`slot`]). Handles hold a registry lease; they know the registry and the pools below it,
//! nothing above.

pub(crate) mod model;
pub(crate) mod run;
pub(crate) mod slot;
pub(crate) mod tenant_route;
pub(crate) mod trace;
