//! The floor: what every other layer stands on and that stands on nothing — the error type
//! (and the data it carries), database and collection names, URI redaction, the options, and
//! a striped counter. No I/O, no state beyond each thread's stripe number.

pub(crate) mod bulk_report;
pub(crate) mod config;
pub(crate) mod db_config;
pub(crate) mod digest;
pub(crate) mod error;
pub(crate) mod migration_error;
pub(crate) mod name;
pub(crate) mod redact;
pub(crate) mod redacted_error;
pub(crate) mod striped;
pub(crate) mod tenant_config;
pub(crate) mod tenant_error;
