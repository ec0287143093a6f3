//! The one error type of the crate.
//!
//! Every variant names what went wrong and where (the option field, the database name, the
//! cluster with its password redacted). Driver errors are kept whole as the `source()` so their
//! labels and kinds stay available, and [`Error::is_retryable`] answers the question a caller
//! usually has.

use std::time::Duration;

use mongodb::error::{
    ErrorKind as DriverKind, RETRYABLE_ERROR, RETRYABLE_WRITE_ERROR, TRANSIENT_TRANSACTION_ERROR,
    UNKNOWN_TRANSACTION_COMMIT_RESULT,
};

use crate::floor::name::NameRule;

/// `Result` with [`Error`] as its error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in polymongo.
///
/// `Display` prints the whole error, the driver's and the server's text included, which can
/// quote document values (a duplicate key names the key's values). To log an error where
/// those must not go, print [`Error::redacted`]: the library's own log events do.
///
/// # Retrying
///
/// [`Error::is_retryable`] says `true` only when doing the same thing again is safe: nothing was
/// applied, or applying it again changes nothing. A write whose outcome is unknown (the
/// connection broke after it was sent, a deadline passed during a commit, a close cut it) is
/// never retryable, whatever the error kind: the caller has to look at the data first. Per
/// variant:
///
/// | variant | retryable |
/// |---|---|
/// | [`Error::Connection`] | a read, a failure before anything was sent (no server selected), or a write the driver labelled `RetryableWriteError` or `TransientTransactionError`: yes. Any other write (`outcome_unknown`, see [`Error::is_outcome_unknown`]): no |
/// | [`Error::Timeout`] | a bound of the library hit before anything was sent: yes. A transaction past its deadline (`outcome_unknown`): no, the deadline may have fallen during the commit |
/// | [`Error::Saturated`], [`Error::PoolExhausted`] | yes: nothing was sent |
/// | [`Error::Io`] | yes: a local stream failed, nothing about the server is unknown |
/// | [`Error::Driver`] | as the driver labels it: `RetryableWriteError`, `TransientTransactionError`, `RetryableError`, or, for a read, a server error code of the retryable list; never when labelled `UnknownTransactionCommitResult` |
/// | [`Error::WriteInterrupted`] | no: a write ended by a retryable code without the `RetryableWriteError` label may have been applied |
/// | [`Error::Closed`] | no: a cut write may or may not have been applied |
/// | [`Error::Migration`] | only a held migration lock: nothing was applied |
/// | every other variant | no: the same input fails the same way |
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An option is invalid. Raised by [`PolyMongoBuilder::build`](crate::PolyMongoBuilder::build)
    /// before anything connects.
    #[error("invalid option `{field}`: {message}")]
    Config {
        /// The option's name, as in the builder and the configuration file (`uri`, `max_pool_size`…).
        field: &'static str,
        /// What is wrong with it. Never contains a password.
        message: String,
    },

    /// The configuration of one database is invalid or conflicts with another.
    #[error("invalid configuration of database {database:?}: `{field}` {message}")]
    DbConfig {
        /// The database the configuration is for.
        database: String,
        /// The [`DbConfig`](crate::DbConfig) field (`uri`, `max_connections`, `ttl`…).
        field: &'static str,
        /// What is wrong with it. Never contains a password.
        message: String,
    },

    /// A database or collection name that MongoDB would refuse.
    #[error("invalid {what} name {name:?}: {rule}")]
    InvalidName {
        /// `"database"` or `"collection"`.
        what: &'static str,
        /// The name as given.
        name: String,
        /// The rule it breaks.
        rule: NameRule,
    },

    /// The cluster could not be reached (server selection failed, the network broke).
    ///
    /// Retryable when nothing can have been applied: a read, or a write the driver itself
    /// labelled `RetryableWriteError`. A write that broke without that label
    /// (`update_many`, a `$out` aggregation, a write outside retryable writes) has an unknown
    /// outcome and is not retryable.
    #[error("cannot reach cluster {cluster}: {source}{}", if *outcome_unknown { " (a write was under way: it may have been applied)" } else { "" })]
    Connection {
        /// The cluster's URI with its password redacted.
        cluster: String,
        /// The driver's error.
        #[source]
        source: mongodb::error::Error,
        /// `true` when a write was under way and the driver did not label it retryable: it
        /// may or may not have been applied.
        outcome_unknown: bool,
    },

    /// An operation of the library did not finish in time.
    ///
    /// Retryable unless `outcome_unknown`: a transaction past its deadline may have been
    /// committing, so whether it was applied is unknown.
    #[error("timed out after {after:?} while {during}{}", if *outcome_unknown { " (its outcome is unknown: it may have been applied)" } else { "" })]
    Timeout {
        /// What was being done.
        during: &'static str,
        /// The bound that was exceeded.
        after: Duration,
        /// `true` when work that writes may have been applied before the bound was hit (a
        /// transaction whose deadline may have fallen during its commit).
        outcome_unknown: bool,
    },

    /// A database with `max_concurrent_ops` had no free slot: none was free now (`db`) or
    /// none came free within its `queue_timeout` (`acquire`).
    #[error("database {database:?} is at its limit of {limit} concurrent operations (waited {waited:?})")]
    Saturated {
        /// The database.
        database: String,
        /// Its `max_concurrent_ops`.
        limit: u32,
        /// How long the call waited.
        waited: Duration,
    },

    /// Every connection of a pool stayed busy for the whole `wait_queue_timeout`.
    #[error(
        "pool of {cluster} exhausted: all {max_pool_size} connections stayed busy for {waited:?}"
    )]
    PoolExhausted {
        /// The pool's cluster, password redacted.
        cluster: String,
        /// Its size.
        max_pool_size: u32,
        /// How long the operation waited.
        waited: Duration,
    },

    /// The cluster refused the credentials.
    #[error("authentication to {cluster} failed: {source}")]
    Authentication {
        /// The cluster's URI with its password redacted.
        cluster: String,
        /// The driver's error.
        #[source]
        source: mongodb::error::Error,
    },

    /// The manager was closed by [`PolyMongo::close_all`](crate::PolyMongo::close_all); it hands
    /// out no new work.
    #[error("polymongo is closed: no new operations are accepted")]
    Closed,

    /// A transaction named databases served by different pools (other clusters, or a dedicated
    /// pool and another): one session cannot span them. Raised before anything is sent.
    #[error("databases {first:?} ({first_pool}) and {second:?} ({second_pool}) are served by different pools: one transaction cannot span them")]
    CrossPool {
        /// The transaction's first database.
        first: String,
        /// Its pool: kind and cluster (password redacted).
        first_pool: String,
        /// A database served by another pool.
        second: String,
        /// That pool.
        second_pool: String,
    },

    /// The deployment cannot run transactions (a standalone server: MongoDB runs them on
    /// replica sets and sharded clusters only).
    #[error("cluster {cluster} does not support transactions: {reason}")]
    TransactionsUnsupported {
        /// The cluster's URI with its password redacted.
        cluster: String,
        /// What the driver or the server said.
        reason: String,
    },

    /// A dump (the format of [`bulk`](crate::bulk)) cannot be read at `line`.
    #[error("dump line {line}: {problem}")]
    Dump {
        /// The line, from 1.
        line: u64,
        /// What is wrong there.
        problem: crate::floor::bulk_report::DumpProblem,
    },

    /// An import or copy stopped before the end. The report says what was written, what
    /// failed, and where it stopped.
    #[error("import stopped: {0}")]
    Import(Box<crate::floor::bulk_report::ImportReport>),

    /// Reading or writing a stream failed (a dump file, a pipe).
    #[error("I/O error while {during}: {source}")]
    Io {
        /// What was being done.
        during: &'static str,
        /// The error.
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },

    /// No tokio runtime was running where one was needed (building the manager).
    #[error("polymongo needs a tokio runtime: build it from async code running on tokio")]
    NoRuntime,

    /// The server ended a write with an error that interrupts work in progress (shutdown,
    /// step-down, interruption, a node recovering: the retryable codes) without labelling it
    /// `RetryableWriteError`. The label, not the code, says whether a write may be sent again
    /// (servers from 4.4 on add it when the write is protected by retryable writes), so part
    /// or all of this write may have been applied: its outcome is unknown and it is not
    /// retryable. A read refused with the same codes stays an [`Error::Driver`] and retryable.
    #[error("a write on cluster {cluster} was interrupted and may have been applied: {source}")]
    WriteInterrupted {
        /// The cluster's URI with its password redacted.
        cluster: String,
        /// The server's error, as the driver reported it.
        #[source]
        source: mongodb::error::Error,
    },

    /// A migration set is invalid, or a database's ledger or lock refused a migration run
    /// (see [`migrate`](crate::migrate)). Nothing was applied.
    #[error("{0}")]
    Migration(Box<crate::floor::migration_error::MigrationError>),

    /// The tenant directory refused: an unknown or suspended tenant, a full fleet, an
    /// invalid id or directory entry (see [`tenants`](crate::tenants)).
    #[error("{0}")]
    Tenant(Box<crate::floor::tenant_error::TenantError>),

    /// Any other error from the driver or the server.
    #[error(transparent)]
    Driver(#[from] mongodb::error::Error),
}

/// The kind of an [`Error`], for matching without destructuring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::Config`] and [`Error::DbConfig`].
    Config,
    /// See [`Error::InvalidName`].
    InvalidName,
    /// See [`Error::Connection`].
    Connection,
    /// See [`Error::Timeout`].
    Timeout,
    /// See [`Error::Saturated`].
    Saturated,
    /// See [`Error::PoolExhausted`].
    PoolExhausted,
    /// See [`Error::Authentication`].
    Authentication,
    /// See [`Error::Closed`].
    Closed,
    /// See [`Error::CrossPool`] and [`Error::TransactionsUnsupported`].
    Transaction,
    /// See [`Error::Dump`] and [`Error::Import`].
    Bulk,
    /// See [`Error::Io`].
    Io,
    /// See [`Error::NoRuntime`].
    NoRuntime,
    /// See [`Error::Migration`].
    Migration,
    /// See [`Error::Tenant`].
    Tenant,
    /// See [`Error::Driver`].
    Driver,
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config { .. } | Error::DbConfig { .. } => ErrorKind::Config,
            Error::InvalidName { .. } => ErrorKind::InvalidName,
            Error::Connection { .. } => ErrorKind::Connection,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Saturated { .. } => ErrorKind::Saturated,
            Error::PoolExhausted { .. } => ErrorKind::PoolExhausted,
            Error::Authentication { .. } => ErrorKind::Authentication,
            Error::Closed => ErrorKind::Closed,
            Error::CrossPool { .. } | Error::TransactionsUnsupported { .. } => {
                ErrorKind::Transaction
            }
            Error::Dump { .. } | Error::Import(_) => ErrorKind::Bulk,
            Error::Io { .. } => ErrorKind::Io,
            Error::NoRuntime => ErrorKind::NoRuntime,
            Error::Migration(_) => ErrorKind::Migration,
            Error::Tenant(_) => ErrorKind::Tenant,
            Error::Driver(_) | Error::WriteInterrupted { .. } => ErrorKind::Driver,
        }
    }

    /// Whether doing the same thing again is safe and may succeed: the network or the cluster
    /// failed before anything could be applied, a bound was hit before anything was sent, or
    /// the driver labelled the error retryable or transient. A write whose outcome is unknown
    /// is never retryable (see [`Error`] for what each kind means).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connection {
                outcome_unknown, ..
            }
            | Error::Timeout {
                outcome_unknown, ..
            } => !outcome_unknown,
            Error::Saturated { .. } => true,
            Error::Io { .. } | Error::PoolExhausted { .. } => true,
            Error::Driver(e) => driver_is_retryable(e),
            Error::Config { .. }
            | Error::DbConfig { .. }
            | Error::InvalidName { .. }
            | Error::Closed
            | Error::Authentication { .. }
            | Error::CrossPool { .. }
            | Error::TransactionsUnsupported { .. }
            | Error::Dump { .. }
            | Error::Import(_)
            | Error::WriteInterrupted { .. }
            | Error::Tenant(_)
            | Error::NoRuntime => false,
            // A held lock is free again once its holder finishes or its expiry passes.
            Error::Migration(m) => matches!(
                **m,
                crate::floor::migration_error::MigrationError::LockHeld { .. }
            ),
        }
    }

    /// Whether doing it again is safe even if the operation that failed wrote: for an error
    /// whose operation the library did not see (a driver error from a call made directly on a
    /// handle, through `Deref`, turned into [`Error::Driver`] by `?`), only a failure before
    /// anything was sent or one the driver labelled `RetryableWriteError` or
    /// `TransientTransactionError` qualifies; a broken connection or a retryable code alone
    /// does not, since the call may have been a write. For every other error, as
    /// [`is_retryable`](Self::is_retryable).
    pub fn is_retryable_as_write(&self) -> bool {
        match self {
            Error::Driver(e) => {
                !e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
                    && (sent_nothing(e)
                        || e.contains_label(RETRYABLE_WRITE_ERROR)
                        || e.contains_label(TRANSIENT_TRANSACTION_ERROR))
            }
            other => other.is_retryable(),
        }
    }

    /// Whether a write may or may not have been applied: the connection broke during a write
    /// the driver did not retry, a transaction's deadline may have fallen during its commit,
    /// or the driver reported `UnknownTransactionCommitResult`. Such an error is never
    /// [retryable](Self::is_retryable): look at the data before doing it again.
    pub fn is_outcome_unknown(&self) -> bool {
        match self {
            Error::Connection {
                outcome_unknown, ..
            }
            | Error::Timeout {
                outcome_unknown, ..
            } => *outcome_unknown,
            Error::Driver(e) => e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT),
            Error::WriteInterrupted { .. } => true,
            _ => false,
        }
    }

    /// This error as the library's own log events print it: without the values a server
    /// quotes from documents (a duplicate key's values, a failed validation's fields, a value
    /// that could not be decoded), which [`Display`](std::fmt::Display) keeps for the caller.
    /// Driver errors about the network, the pool, the session or the deployment keep their
    /// text; any other is named by its server code and code name only.
    ///
    /// ```
    /// let e = polymongo::Error::Closed;
    /// assert_eq!(e.redacted().to_string(), e.to_string());
    /// ```
    pub fn redacted(&self) -> crate::floor::redacted_error::RedactedError<'_> {
        crate::floor::redacted_error::RedactedError(self)
    }

    /// The driver's error, when this error came from the driver.
    pub fn driver_error(&self) -> Option<&mongodb::error::Error> {
        match self {
            Error::Connection { source, .. }
            | Error::Authentication { source, .. }
            | Error::WriteInterrupted { source, .. } => Some(source),
            Error::Driver(e) => Some(e),
            _ => None,
        }
    }

    /// Classifies a driver error met while talking to `cluster` (already redacted) by an
    /// operation that only reads (or that sent nothing: a connection, a session).
    pub(crate) fn from_driver(source: mongodb::error::Error, cluster: &str) -> Self {
        Self::from_driver_op(source, cluster, OpKind::Read)
    }

    /// Classifies a driver error of an operation of kind `op`: a write that broke without the
    /// driver's `RetryableWriteError` label has an unknown outcome.
    pub(crate) fn from_driver_op(source: mongodb::error::Error, cluster: &str, op: OpKind) -> Self {
        if matches!(*source.kind, DriverKind::Authentication { .. }) {
            return Error::Authentication {
                cluster: cluster.to_owned(),
                source,
            };
        }
        if driver_is_unreachable(&source) {
            // A write the driver labelled retryable (retryable writes: the server applies it
            // once however often it is sent) or transient (its transaction was aborted) is
            // safe to send again; any other broken write may have been applied.
            let outcome_unknown = source.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
                || (op == OpKind::Write
                    && !source.contains_label(RETRYABLE_WRITE_ERROR)
                    && !source.contains_label(TRANSIENT_TRANSACTION_ERROR)
                    && !sent_nothing(&source));
            Error::Connection {
                cluster: cluster.to_owned(),
                source,
                outcome_unknown,
            }
        } else if op == OpKind::Write && interrupted_without_label(&source) {
            Error::WriteInterrupted {
                cluster: cluster.to_owned(),
                source,
            }
        } else {
            Error::Driver(source)
        }
    }
}

/// Lets `?` turn a polymongo error into the driver's inside a transaction's closure
/// ([`Transaction::run`](crate::Transaction::run)). Driver errors come back as they were, labels
/// included, so the driver's retry rules still see them; any other error travels as a custom
/// driver error and `run` returns it unchanged.
impl From<Error> for mongodb::error::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Driver(source)
            | Error::Connection { source, .. }
            | Error::Authentication { source, .. }
            | Error::WriteInterrupted { source, .. } => source,
            other => mongodb::error::Error::custom(Carried::new(other)),
        }
    }
}

/// A polymongo error returned with `?` from a transaction's closure, carried through the
/// driver's error type and taken back out by [`Carried::take_from`].
#[derive(Debug)]
pub(crate) struct Carried(std::sync::Mutex<Option<Error>>);

impl Carried {
    pub(crate) fn new(error: Error) -> Self {
        Self(std::sync::Mutex::new(Some(error)))
    }

    /// The polymongo error `e` carries, if it carries one (taken out: a second call finds
    /// nothing).
    pub(crate) fn take_from(e: &mongodb::error::Error) -> Option<Error> {
        e.get_custom::<Carried>()?
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// Whether a failed operation could have changed data, for [`Error::from_driver_op`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// Reads only (or sends nothing that changes data).
    Read,
    /// May write: inserts, updates, deletes, aggregations (`$out`, `$merge`), and any
    /// operation whose kind is not known.
    Write,
}

/// The operation failed before anything was sent: no server could be selected, or the pool
/// was cleared while it waited for a connection.
fn sent_nothing(e: &mongodb::error::Error) -> bool {
    matches!(
        *e.kind,
        DriverKind::ServerSelection { .. } | DriverKind::ConnectionPoolCleared { .. }
    )
}

fn driver_is_unreachable(e: &mongodb::error::Error) -> bool {
    matches!(
        *e.kind,
        DriverKind::ServerSelection { .. }
            | DriverKind::Io(_)
            | DriverKind::ConnectionPoolCleared { .. }
    )
}

/// Server error codes after which the same command may succeed (the retryable-reads
/// specification's list: primary stepped down, node recovering or shutting down, host
/// unreachable, network timeout, exceeded time limit…).
const RETRYABLE_CODES: [i32; 13] = [
    11600, 11602, 10107, 13435, 13436, 189, 91, 7, 6, 89, 9001, 134, 262,
];

/// A command error of the retryable list that no label makes safe to send again: for a write,
/// the retryable-writes specification goes by the `RetryableWriteError` label (4.4+), and a
/// transaction's `TransientTransactionError` means the whole transaction was aborted.
fn interrupted_without_label(e: &mongodb::error::Error) -> bool {
    matches!(&*e.kind, DriverKind::Command(c) if RETRYABLE_CODES.contains(&c.code))
        && !e.contains_label(RETRYABLE_WRITE_ERROR)
        && !e.contains_label(TRANSIENT_TRANSACTION_ERROR)
        && !e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
}

fn driver_is_retryable(e: &mongodb::error::Error) -> bool {
    // The commit may have been applied: the driver already retried it as far as it could.
    if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) {
        return false;
    }
    if driver_is_unreachable(e)
        || e.contains_label(RETRYABLE_WRITE_ERROR)
        || e.contains_label(TRANSIENT_TRANSACTION_ERROR)
        || e.contains_label(RETRYABLE_ERROR)
    {
        return true;
    }
    matches!(&*e.kind, DriverKind::Command(c) if RETRYABLE_CODES.contains(&c.code))
}

impl From<crate::floor::tenant_error::TenantError> for Error {
    fn from(e: crate::floor::tenant_error::TenantError) -> Self {
        Error::Tenant(Box::new(e))
    }
}

impl From<crate::floor::migration_error::MigrationError> for Error {
    fn from(e: crate::floor::migration_error::MigrationError) -> Self {
        Error::Migration(Box::new(e))
    }
}

/// Whether the server refused a write for a duplicate key (code 11000).
pub(crate) fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => c.code == 11000,
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => {
            w.code == 11000
        }
        _ => e.to_string().contains("E11000"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broken() -> mongodb::error::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset").into()
    }

    #[test]
    fn a_broken_write_without_the_drivers_label_is_not_retryable() {
        let e = Error::from_driver_op(broken(), "c", OpKind::Write);
        assert!(matches!(
            e,
            Error::Connection {
                outcome_unknown: true,
                ..
            }
        ));
        assert!(!e.is_retryable());
        assert!(e.is_outcome_unknown());
        assert!(e.to_string().contains("may have been applied"), "{e}");
    }

    fn refused(code: i32) -> mongodb::error::Error {
        let command: mongodb::error::CommandError = mongodb::bson::from_document(
            mongodb::bson::doc! { "code": code, "codeName": "X", "errmsg": "refused" },
        )
        .expect("a command error document");
        DriverKind::Command(command).into()
    }

    #[test]
    fn a_write_interrupted_without_the_label_has_an_unknown_outcome() {
        let write = Error::from_driver_op(refused(91), "c", OpKind::Write);
        assert!(matches!(write, Error::WriteInterrupted { .. }), "{write:?}");
        assert!(!write.is_retryable());
        assert!(write.is_outcome_unknown());
        assert_eq!(write.kind(), ErrorKind::Driver);
        assert!(write.driver_error().is_some());
        assert!(
            write.to_string().contains("may have been applied"),
            "{write}"
        );

        let read = Error::from_driver_op(refused(91), "c", OpKind::Read);
        assert!(matches!(read, Error::Driver(_)), "{read:?}");
        assert!(read.is_retryable());
        assert!(!read.is_outcome_unknown());

        // Unseen (through `?` from a direct driver call): a write is possible, so neither a
        // retryable code nor a broken connection makes it safe to send again.
        assert!(Error::from(refused(91)).is_retryable());
        assert!(!Error::from(refused(91)).is_retryable_as_write());
        assert!(!Error::from(broken()).is_retryable_as_write());
        assert!(!read.is_retryable_as_write() && !write.is_retryable_as_write());

        // A code outside the list is the same refusal for both, and not retryable.
        let bad_value = Error::from_driver_op(refused(2), "c", OpKind::Write);
        assert!(matches!(bad_value, Error::Driver(_)), "{bad_value:?}");
        assert!(!bad_value.is_retryable());
    }

    #[test]
    fn a_broken_read_is_retryable() {
        let e = Error::from_driver_op(broken(), "c", OpKind::Read);
        assert!(e.is_retryable());
        assert!(Error::from_driver(broken(), "c").is_retryable());
    }

    #[test]
    fn a_timeout_with_an_unknown_outcome_is_not_retryable() {
        let during_commit = Error::Timeout {
            during: "running a transaction",
            after: Duration::from_secs(1),
            outcome_unknown: true,
        };
        assert!(!during_commit.is_retryable());
        let before_sending = Error::Timeout {
            during: "waiting",
            after: Duration::from_secs(1),
            outcome_unknown: false,
        };
        assert!(before_sending.is_retryable());
        assert!(!Error::Closed.is_retryable());
    }
}
