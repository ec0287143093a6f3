//! Counted operations: [`DbHandle::run`] runs one driver operation with its accounting —
//! in flight for a graceful close, the pool's connection slot (the wait queue and its bound),
//! usage analytics and a tracing span — all released by guards, so a dropped operation leaves
//! every figure at rest.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Instant;

use mongodb::Collection;
use tracing::Instrument;

use crate::floor::error::{Error, OpKind, Result};
use crate::handle::model::DbHandle;
use crate::handle::trace;
use crate::registry::usage::{self, DbUsage, Usage, UsageAnalytics};

impl<T: Send + Sync> DbHandle<T> {
    /// Runs one driver operation on this handle's collection, counted in the database's
    /// [usage analytics](crate::Stats::usage) and traced in a `polymongo.op` span (see
    /// [Tracing](#tracing)).
    ///
    /// `op` builds the operation with every option the driver offers; `run` awaits it. The
    /// operation's kind (`find`, `insert`, `update`, `delete`, `aggregate`, `count`, else
    /// `other`) is read from the driver's action type, so a closure returning an `async` block
    /// of several calls counts once, as `other`. Its latency is what the caller waits,
    /// pool checkout included. An operation dropped before it finishes (a cancelled request)
    /// still leaves `in_flight`, and is counted as finished, not failed.
    ///
    /// Calling the operation on the handle directly (`handle.find_one(f).await`) works the
    /// same but is not counted, unless the manager counts every command
    /// ([`UsageAnalytics::Commands`]); with that source `run` does not count again.
    ///
    /// ```no_run
    /// # use mongodb::bson::doc;
    /// # #[derive(serde::Deserialize)] struct User { name: String }
    /// # impl polymongo::Model for User { const COLLECTION: &'static str = "users"; }
    /// # async fn f(users: polymongo::ModelHandle<User>) -> polymongo::Result<()> {
    /// let alice: Option<User> = users
    ///     .db("tenant_1")?
    ///     .run(|c| c.find_one(doc! { "name": "alice" }).projection(doc! { "name": 1 }))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// With the `wait_queue_timeout` option, the operation first waits at most that long for
    /// one of its pool's connections to be free.
    ///
    /// Safe to drop at any await: the in-flight count, the usage figures, the pool's wait
    /// queue and the connection slot are all released by guards.
    ///
    /// When a close stops waiting (its deadline passed, or
    /// [`force_close_all`](crate::PolyMongo::force_close_all)), an operation still running
    /// through `run` is cut and returns [`Error::Closed`](crate::Error::Closed), which is not
    /// retryable: a write cut this way may or may not have been applied. Operations called
    /// directly on the collection are not cut; on a network that stopped answering they wait
    /// for the driver.
    ///
    /// An operation running through `run` counts as work in flight:
    /// [`close_all`](crate::PolyMongo::close_all) lets it finish (up to its deadline), and a
    /// `run` started after the close began is refused with [`Error::Closed`](crate::Error::Closed).
    ///
    /// # Tracing
    /// Each call opens one `polymongo.op` span at debug level (target
    /// `polymongo::handle::run`) around the wait for a connection and the driver call. Its
    /// fields follow OpenTelemetry's semantic conventions for MongoDB client spans, so a
    /// `tracing-opentelemetry` layer exports a `CLIENT` span named `find users` with the
    /// attributes a tracing backend looks for (`examples/opentelemetry.rs`):
    ///
    /// | field | value |
    /// |---|---|
    /// | `otel.name` | the span's name: `{db.operation.name} {db.collection.name}` (`find users`), the collection alone when the operation is not known |
    /// | `otel.kind` | `client` |
    /// | `otel.status_code` | `ERROR` when the call failed; absent otherwise |
    /// | `db.system.name` | `mongodb` |
    /// | `db.namespace` | the database's name |
    /// | `db.collection.name` | the collection's name |
    /// | `db.operation.name` | the MongoDB command the driver action sends: `find` (also `find_one`), `insert` (one or many), `update` (also `replace_one`), `delete`, `findAndModify`, `aggregate` (also `watch`), `count` (`estimated_document_count`), `countDocuments` (sent as an `aggregate`), `distinct`, `createIndexes`, `dropIndexes`, `listIndexes`, `drop`; absent when the closure returns anything else (an `async` block of several calls) |
    /// | `server.address` | the first host of the pool's connection string (never the user or the password) |
    /// | `server.port` | its port, an integer: 27017 when the string names none; absent for `mongodb+srv://` |
    /// | `error.type` | on failure: the server's error code when it gave one (`11000`), else the driver's error kind (`ServerSelection`, `Io`, `Authentication`, …) or the library's ([`ErrorKind`](crate::ErrorKind): `PoolExhausted`, `Closed`, …) |
    /// | `db.response.status_code` | the server's error code as a string (`11000`), when it gave one |
    /// | `polymongo.cluster` | the pool's label: its connection string with the password hidden, followed by `(database …)` for a dedicated pool |
    ///
    /// A failure is also logged as a debug event inside the span. With nobody listening at
    /// debug level the span costs a cached check; the fields that need parsing or formatting
    /// are filled only for a span someone listens to.
    ///
    /// # Errors
    /// The operation's driver error as [`Error::Driver`](crate::Error::Driver) (retryable
    /// labels kept, credentials removed), [`Error::PoolExhausted`](crate::Error::PoolExhausted)
    /// when the pool stayed busy for `wait_queue_timeout`. A broken connection is
    /// [`Error::Connection`](crate::Error::Connection): retryable for a `find` or a count, but
    /// for any other operation (which may write) only when the driver labelled it
    /// `RetryableWriteError`; otherwise its outcome is unknown and it is not retryable. A
    /// write the server ended with a retryable code but without that label is
    /// [`Error::WriteInterrupted`](crate::Error::WriteInterrupted): outcome unknown too.
    pub async fn run<'a, A, R>(&'a self, op: impl FnOnce(&'a Collection<T>) -> A) -> Result<R>
    where
        A: IntoFuture<Output = mongodb::error::Result<R>>,
    {
        let entry = &self.lease.entry;
        // Counted in flight, so a graceful close lets it finish (and refused once a close
        // has begun).
        let _in_flight = entry.pool.begin_operation()?;
        let command = usage::command_index::<A>();
        // OpenTelemetry's database conventions (see `handle::trace`); what needs parsing or
        // formatting is recorded only when someone listens.
        let span = tracing::debug_span!(
            "polymongo.op",
            otel.name = tracing::field::Empty,
            otel.kind = trace::CLIENT,
            otel.status_code = tracing::field::Empty,
            db.system.name = trace::DB_SYSTEM,
            db.namespace = entry.name(),
            db.collection.name = self.collection.name(),
            db.operation.name = tracing::field::Empty,
            server.address = tracing::field::Empty,
            server.port = tracing::field::Empty,
            polymongo.cluster = entry.pool.label(),
            error.type = tracing::field::Empty,
            db.response.status_code = tracing::field::Empty,
        );
        if !span.is_disabled() {
            let operation = trace::operation_name::<A>();
            if let Some(op) = operation {
                span.record("db.operation.name", op);
            }
            let name = trace::span_name(operation, self.collection.name());
            span.record("otel.name", name.as_str());
            trace::record_server(&span, entry.pool.label());
        }
        let mut counted = match entry.usage() {
            Some((sink, db)) if sink.source() == UsageAnalytics::Operations => {
                sink.started(db, command);
                Some(Counted {
                    sink,
                    db,
                    started: Instant::now(),
                    failed: false,
                })
            }
            _ => None,
        };
        // Held for the operation: the pool's wait queue counts this call while it waits, and
        // with `wait_queue_timeout` a busy pool makes it wait at most that long (the driver's
        // own queue has no bound). A handle holding a reserved slot uses that one.
        let _connection = match &self.slot {
            Some(_) => None,
            None => match entry.pool.connection_slot().await {
                Ok(permit) => Some(permit),
                Err(e) => {
                    if let Some(c) = &mut counted {
                        c.failed = true;
                    }
                    trace::record_error(&span, &e);
                    return Err(e);
                }
            },
        };
        let operation = op(&self.collection).into_future().instrument(span.clone());
        // A close that stops waiting cuts the operation: dropping it drops its connection.
        let result = tokio::select! {
            biased;
            result = operation => result,
            () = entry.pool.cut() => {
                if let Some(c) = &mut counted {
                    c.failed = true;
                }
                tracing::debug!(parent: &span, "operation cut by the close; its outcome is unknown");
                trace::record_error(&span, &Error::Closed);
                return Err(Error::Closed);
            }
        };
        if let Some(c) = &mut counted {
            c.failed = result.is_err();
        }
        drop(counted);
        result.map_err(|e| {
            // Only finds and counts are known to read; any other kind may have written.
            let kind = match usage::command_name(command) {
                "find" | "count" => OpKind::Read,
                _ => OpKind::Write,
            };
            let e = Error::from_driver_op(e, entry.pool.label(), kind);
            trace::record_error(&span, &e);
            tracing::debug!(parent: &span, error = %e.redacted(), "operation failed");
            e
        })
    }
}

/// One operation in flight, reported when it finishes or is dropped.
struct Counted<'a> {
    sink: &'a Arc<Usage>,
    db: &'a Arc<DbUsage>,
    started: Instant,
    failed: bool,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.sink
            .finished(self.db, self.started.elapsed(), self.failed);
    }
}
