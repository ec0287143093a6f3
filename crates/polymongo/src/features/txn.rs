//! Transactions over the databases of one pool.
//!
//! [`PolyMongo::transaction`] checks, before anything is sent, that every database it names is
//! served by one pool (a session belongs to one driver `Client`), then runs the caller's
//! closure in the driver's convenient transaction (`start_transaction().and_run2`), which
//! applies the retry rules of the drivers' specification: the whole closure again on a
//! `TransientTransactionError`, the commit again on an `UnknownTransactionCommitResult`. On top
//! of it this module adds the routing check, a deadline of the caller's choice, an abort when
//! the closure panics (the panic then continues), and typed errors.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use mongodb::error::{ErrorKind as DriverKind, Result as DriverResult};
use mongodb::options::{
    ReadConcern, ReadPreference, SelectionCriteria, TransactionOptions, WriteConcern,
};
use mongodb::ClientSession;
use tracing::Instrument;

use crate::floor::error::{Carried, Error, OpKind, Result};
use crate::handle::trace;
use crate::pool::cluster::ClusterPool;
use crate::registry::{self, DbLease, Registry};

/// The default bound on a whole transaction, retries included: the 120 s of the drivers'
/// convenient-transaction specification.
pub const DEFAULT_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(120);

/// The server's code for "Transaction numbers are only allowed on a replica set member or
/// mongos" (`IllegalOperation`), what a standalone `mongod` answers to a transaction.
const ILLEGAL_OPERATION: i32 = 20;

/// A transaction to run: [`PolyMongo::transaction`](crate::PolyMongo::transaction).
///
/// ```no_run
/// # use mongodb::bson::{doc, Document};
/// # async fn f(poly: polymongo::PolyMongo) -> polymongo::Result<()> {
/// let orders = poly.model::<Order>();
/// let ledger = poly.model::<Entry>();
/// let id = poly
///     .transaction(["shop", "accounting"])
///     .run(async |session| {
///         let order = orders.db("shop")?;
///         let id = order
///             .insert_one(Order { total: 40 })
///             .session(&mut *session)
///             .await?
///             .inserted_id;
///         ledger
///             .db("accounting")?
///             .insert_one(Entry { credit: 40 })
///             .session(&mut *session)
///             .await?;
///         Ok(id)
///     })
///     .await?;
/// # Ok(()) }
/// # #[derive(serde::Serialize)] struct Order { total: i64 }
/// # impl polymongo::Model for Order { const COLLECTION: &'static str = "orders"; }
/// # #[derive(serde::Serialize)] struct Entry { credit: i64 }
/// # impl polymongo::Model for Entry { const COLLECTION: &'static str = "entries"; }
/// ```
#[must_use = "a transaction does nothing until `run` is awaited"]
pub struct Transaction<'p> {
    registry: &'p Registry,
    default_db: &'p str,
    databases: Vec<String>,
    options: TransactionOptions,
    timeout: Duration,
}

impl fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("databases", &self.databases)
            .field("options", &self.options)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<'p> Transaction<'p> {
    pub(crate) fn new(registry: &'p Registry, default_db: &'p str, databases: Vec<String>) -> Self {
        Transaction {
            registry,
            default_db,
            databases,
            options: TransactionOptions::default(),
            timeout: DEFAULT_TRANSACTION_TIMEOUT,
        }
    }
}

impl Transaction<'_> {
    /// The transaction's read concern (default: the pool's).
    pub fn read_concern(mut self, read_concern: ReadConcern) -> Self {
        self.options.read_concern = Some(read_concern);
        self
    }

    /// The transaction's write concern (default: the pool's).
    pub fn write_concern(mut self, write_concern: WriteConcern) -> Self {
        self.options.write_concern = Some(write_concern);
        self
    }

    /// The transaction's read preference. MongoDB runs transactions on the primary only; the
    /// driver refuses any other read preference when the first operation is sent.
    pub fn read_preference(mut self, read_preference: ReadPreference) -> Self {
        self.options.selection_criteria = Some(SelectionCriteria::ReadPreference(read_preference));
        self
    }

    /// Most time the server may spend on the commit (`maxTimeMS` of `commitTransaction`).
    pub fn max_commit_time(mut self, max_commit_time: Duration) -> Self {
        self.options.max_commit_time = Some(max_commit_time);
        self
    }

    /// Bound on the whole transaction, retries included (default
    /// [`DEFAULT_TRANSACTION_TIMEOUT`], 120 s). Past it the transaction is abandoned: the
    /// driver aborts it on the server when the session is dropped, and `run` returns
    /// [`Error::Timeout`]. The driver's own retry loop also stops at 120 s, so a longer bound
    /// does not lengthen retries.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs `f` in a transaction and commits it.
    ///
    /// `f` receives the session; pass it to every operation of the transaction
    /// (`users.db("a")?.insert_one(doc).session(&mut *session).await?`). Operations sent
    /// without it run outside the transaction.
    ///
    /// - `Ok` commits; the commit is retried on `UnknownTransactionCommitResult`.
    /// - `Err` aborts and returns the error — unless it is labelled
    ///   `TransientTransactionError` (a write conflict, a primary stepping down), in which case
    ///   `f` runs again from the start, so it must be safe to repeat, and must return the
    ///   errors of its operations rather than swallow them. Inside `f`, `?` works on both the
    ///   driver's errors and polymongo's; an application's own reason to abort can be returned
    ///   as `mongodb::error::Error::custom(reason)` and is found again with
    ///   [`Error::driver_error`] and `get_custom`.
    /// - A panic aborts the transaction, then continues unwinding from `run`.
    ///
    /// The future is `Send` (for `tokio::spawn` and web handlers) when the closure owns what
    /// it captures: write `async move |session| { … }` and move clones of model handles in
    /// (they are cheap). A closure that borrows from its surroundings works where `Send` is not
    /// needed, but rustc cannot prove its future `Send` (rust-lang/rust#96865; the driver's
    /// `and_run2` documents the same limitation).
    ///
    /// # Tracing
    /// The whole transaction, retries included, runs in one `polymongo.transaction` span at
    /// debug level with the fields of [`DbHandle::run`](crate::DbHandle::run)'s span (its
    /// Tracing section) that apply: `otel.name = "transaction"`, `otel.kind`,
    /// `db.system.name`, `db.namespace` (when the transaction names one database),
    /// `server.address`, `server.port`, `polymongo.cluster`, and on failure
    /// `otel.status_code`, `error.type` (`panic` when the closure panicked) and
    /// `db.response.status_code`; `polymongo.databases` lists the databases named.
    /// Operations run through `DbHandle::run` inside the closure are its children.
    ///
    /// # Errors
    /// - [`Error::CrossPool`] before anything is sent, naming two of the databases that are
    ///   served by different pools; [`Error::InvalidName`], [`Error::Closed`].
    /// - [`Error::TransactionsUnsupported`] when the deployment cannot run transactions (a
    ///   standalone server).
    /// - [`Error::Timeout`] past [`timeout`](Self::timeout) or the driver's 120 s. It is not
    ///   retryable (`outcome_unknown`): the deadline may have fallen during the commit, which
    ///   the driver runs after the closure returns, so the transaction may have been applied.
    /// - An error of polymongo's that `f` returned with `?`, as it was.
    /// - Any other error as [`Error::Driver`] or [`Error::Connection`].
    pub async fn run<R, F>(self, f: F) -> Result<R>
    where
        F: for<'s> AsyncFnMut(&'s mut ClientSession) -> DriverResult<R>,
    {
        let leases = self.route()?;
        let first = &leases[0].entry;
        // Work in flight: a graceful close lets the transaction finish (up to its deadline).
        let _in_flight = first.pool.begin_operation()?;
        let cluster = first.pool.label().to_owned();
        // OpenTelemetry's database conventions, as for `DbHandle::run` (see `handle::trace`).
        let span = tracing::debug_span!(
            "polymongo.transaction",
            otel.name = "transaction",
            otel.kind = trace::CLIENT,
            otel.status_code = tracing::field::Empty,
            db.system.name = trace::DB_SYSTEM,
            db.namespace = tracing::field::Empty,
            server.address = tracing::field::Empty,
            server.port = tracing::field::Empty,
            polymongo.cluster = %cluster,
            polymongo.databases = ?self.databases,
            error.type = tracing::field::Empty,
            db.response.status_code = tracing::field::Empty,
        );
        if !span.is_disabled() {
            if let [only] = &leases[..] {
                span.record("db.namespace", only.entry.name());
            }
            trace::record_server(&span, &cluster);
        }
        let client = first.database.client().clone();
        let mut session = client.start_session().await.map_err(|e| {
            let e = Error::from_driver(e, &cluster);
            trace::record_error(&span, &e);
            e
        })?;
        // The closure goes to the driver as it is (wrapping it in another closure would hide
        // from the compiler that its future is `Send`); a panic is caught around the whole
        // run, and the transaction it left open is aborted before the panic continues.
        let attempt = AssertUnwindSafe(
            session
                .start_transaction()
                .with_options(self.options.clone())
                .and_run2(f),
        )
        .catch_unwind()
        .instrument(span.clone());
        // A close that stops waiting cuts the transaction (the driver aborts it when the
        // session is dropped); its outcome is then unknown.
        let cut = first.pool.cut();
        let guarded = async {
            tokio::select! {
                biased;
                result = attempt => Some(result),
                () = cut => None,
            }
        };
        let outcome = match tokio::time::timeout(self.timeout, guarded).await {
            Ok(None) => {
                tracing::warn!(parent: &span, "transaction cut by the close; its outcome is unknown");
                trace::record_error(&span, &Error::Closed);
                return Err(Error::Closed);
            }
            Ok(Some(Ok(result))) => Ok(result),
            Ok(Some(Err(panic))) => {
                tracing::warn!(parent: &span, "transaction aborted: its closure panicked");
                span.record("otel.status_code", "ERROR");
                span.record("error.type", "panic");
                // Refused harmlessly when the panic came after the transaction ended.
                let _ = session.abort_transaction().await;
                std::panic::resume_unwind(panic);
            }
            Err(elapsed) => Err(elapsed),
        };
        match outcome {
            Ok(Ok(value)) => {
                tracing::debug!(parent: &span, "transaction committed");
                Ok(value)
            }
            Ok(Err(e)) => {
                let e = classify(e, &cluster);
                trace::record_error(&span, &e);
                tracing::debug!(parent: &span, error = %e.redacted(), "transaction aborted");
                Err(e)
            }
            Err(_) => {
                tracing::warn!(parent: &span, timeout = ?self.timeout, "transaction abandoned at its deadline");
                // The deadline may have fallen during the commit (the driver commits after
                // the closure returns, out of sight): whether it was applied is unknown.
                let e = Error::Timeout {
                    during: "running a transaction",
                    after: self.timeout,
                    outcome_unknown: true,
                };
                trace::record_error(&span, &e);
                Err(e)
            }
        }
    }

    /// A lease on every database, once every one is known to be served by the first one's
    /// pool. Held for the whole transaction: none of them is forgotten or has its pool closed
    /// for idleness meanwhile.
    fn route(&self) -> Result<Vec<DbLease>> {
        let default = [self.default_db.to_owned()];
        let names = if self.databases.is_empty() {
            &default[..]
        } else {
            &self.databases[..]
        };
        let registry = self.registry;
        // Routes only: no pool is opened, nothing is sent, until every database is known to
        // share the first one's pool.
        let first_pool = registry::pool_of(registry, &names[0])?;
        for name in &names[1..] {
            let pool = registry::pool_of(registry, name)?;
            if !Arc::ptr_eq(&first_pool, &pool) {
                return Err(Error::CrossPool {
                    first: names[0].clone(),
                    first_pool: describe(&first_pool),
                    second: name.clone(),
                    second_pool: describe(&pool),
                });
            }
        }
        names.iter().map(|n| registry.lease(n)).collect()
    }
}

fn describe(pool: &ClusterPool) -> String {
    let kind = match pool.kind() {
        crate::pool::cluster::PoolKind::Shared => "shared",
        crate::pool::cluster::PoolKind::Dedicated => "dedicated",
    };
    format!("{kind} pool of {}", pool.label())
}

fn classify(e: mongodb::error::Error, cluster: &str) -> Error {
    if let Some(inner) = Carried::take_from(&e) {
        return inner;
    }
    match &*e.kind {
        DriverKind::Transaction { message, .. } if message.contains("not supported") => {
            Error::TransactionsUnsupported {
                cluster: cluster.to_owned(),
                reason: message.clone(),
            }
        }
        DriverKind::Transaction { message, .. } if message.contains("exceeded maximum time") => {
            Error::Timeout {
                during: "retrying a transaction",
                after: DEFAULT_TRANSACTION_TIMEOUT,
                outcome_unknown: true,
            }
        }
        DriverKind::Command(c)
            if c.code == ILLEGAL_OPERATION && c.message.contains("Transaction") =>
        {
            Error::TransactionsUnsupported {
                cluster: cluster.to_owned(),
                reason: c.message.clone(),
            }
        }
        _ => Error::from_driver_op(e, cluster, OpKind::Write),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command_error(code: i32, message: &str) -> mongodb::error::Error {
        let c: mongodb::error::CommandError = mongodb::bson::from_document(mongodb::bson::doc! {
            "code": code, "codeName": "IllegalOperation", "errmsg": message,
        })
        .unwrap();
        mongodb::error::Error::from(DriverKind::Command(c))
    }

    #[test]
    fn a_standalone_refusal_is_typed() {
        let e = classify(
            command_error(
                20,
                "Transaction numbers are only allowed on a replica set member or mongos",
            ),
            "mongodb://h",
        );
        assert!(
            matches!(&e, Error::TransactionsUnsupported { cluster, reason } if cluster == "mongodb://h" && reason.contains("replica set")),
            "{e:?}"
        );
        let other = classify(command_error(20, "something else"), "mongodb://h");
        assert!(matches!(other, Error::Driver(_)), "{other:?}");
    }

    #[test]
    fn a_carried_polymongo_error_comes_back_whole() {
        let e: mongodb::error::Error = Error::Closed.into();
        assert!(matches!(classify(e, "c"), Error::Closed));
    }
}
