//! A library or driver error returned by a handler, and how each kind is answered.

use std::fmt;

use axum::response::{IntoResponse, Response};
use polymongo::mongodb::error::{ErrorKind as DriverKind, WriteFailure};

use crate::answer::Answer;

/// A library or driver error returned by a handler, answered without its text.
///
/// `?` on a [`polymongo::Error`] or a driver error inside a handler returning
/// `Result<_, DbError>` answers through the one table of [`Answer`]:
///
/// | error | answer |
/// |---|---|
/// | duplicate key | 409 `conflict` |
/// | a database name the server (or the library) refuses | 400 `invalid_tenant` |
/// | [`Closed`](polymongo::Error::Closed): a close cut the request while it ran | 500 `outcome_unknown` |
/// | the driver's `Shutdown` (it refused to send: the client is shut down) | 503 `shutting_down` |
/// | any error whose write outcome is unknown, and under a driver call made through `Deref` (the library cannot tell a read from a write there) a broken connection or a retryable server code that the driver did not label `RetryableWriteError` | 500 `outcome_unknown` |
/// | credentials refused | 503 `unavailable` |
/// | pool exhausted, database at its concurrency limit | 503 `busy` |
/// | other retryable errors (nothing was applied) | 503 `unavailable` |
/// | anything else | 500 `database_error` |
///
/// The answer is about the operation that failed. A handler that applied a write and then met
/// a retryable error in a later operation must not pass that error on with `?`: the client
/// would be told to retry a request that was half applied.
///
/// The error itself is logged at `warn` as [`Error::redacted`](polymongo::Error::redacted)
/// prints it: without passwords, and without the values a server quotes from documents (a
/// duplicate key's).
#[derive(Debug)]
pub struct DbError(pub polymongo::Error);

impl From<polymongo::Error> for DbError {
    fn from(e: polymongo::Error) -> Self {
        DbError(e)
    }
}

impl From<polymongo::mongodb::error::Error> for DbError {
    fn from(e: polymongo::mongodb::error::Error) -> Self {
        DbError(polymongo::Error::Driver(e))
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl DbError {
    /// The entry of the one answer table this error is answered with.
    pub fn answer(&self) -> Answer {
        use polymongo::ErrorKind as K;
        let e = &self.0;
        if is_duplicate_key(e) {
            return Answer::Conflict;
        }
        if server_refused_name(e) || e.kind() == K::InvalidName {
            return Answer::InvalidTenant;
        }
        match e.kind() {
            // Within a handler a close can only have cut work in flight, or refused work that
            // followed work already done: either way the request's outcome is unknown.
            K::Closed => Answer::OutcomeUnknown,
            _ if is_shutdown(e) => Answer::ShuttingDown,
            _ if e.is_outcome_unknown() || broke_unseen(e) => Answer::OutcomeUnknown,
            _ if is_authentication(e) => Answer::Unavailable,
            K::Saturated | K::PoolExhausted => Answer::Busy,
            _ if e.is_retryable() => Answer::Unavailable,
            _ => Answer::DatabaseError,
        }
    }
}

impl IntoResponse for DbError {
    fn into_response(self) -> Response {
        let answer = self.answer();
        tracing::warn!(error = %self.0.redacted(), status = answer.status().as_u16(), "database error answered");
        answer.respond(answer.message().to_owned())
    }
}

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;
/// MongoDB's `InvalidNamespace`: the server refuses a database or collection name.
const INVALID_NAMESPACE: i32 = 73;

/// The driver error inside `e` carries server code `code`, as a command error or as a write
/// error (one of an insert's included).
fn has_code(e: &polymongo::Error, code: i32) -> bool {
    let Some(driver) = e.driver_error() else {
        return false;
    };
    match &*driver.kind {
        DriverKind::Write(WriteFailure::WriteError(w)) => w.code == code,
        DriverKind::Command(c) => c.code == code,
        DriverKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .is_some_and(|errs| errs.iter().any(|w| w.code == code)),
        _ => false,
    }
}

fn is_duplicate_key(e: &polymongo::Error) -> bool {
    has_code(e, DUPLICATE_KEY)
}

/// The server refused the database name (possible only with lax names: the strict rule is
/// narrower than any server's). MongoDB says so with code 73; nx-27017 sends no code and
/// `Invalid database name: …`, which the driver reports as an invalid reply.
pub(crate) fn server_refused_name(e: &polymongo::Error) -> bool {
    has_code(e, INVALID_NAMESPACE)
        || e.driver_error()
            .and_then(|d| d.server_response())
            .and_then(|reply| reply.get_str("errmsg").ok())
            .is_some_and(|m| m.starts_with("Invalid database name"))
}

/// Credentials refused, whether the library classified the error (through `run`) or the
/// driver's error came straight from a call made through `Deref`.
fn is_authentication(e: &polymongo::Error) -> bool {
    e.kind() == polymongo::ErrorKind::Authentication
        || e.driver_error()
            .is_some_and(|d| matches!(*d.kind, DriverKind::Authentication { .. }))
}

/// A driver error that would be retryable for a read but not for a write — a broken
/// connection, or a retryable server code without the `RetryableWriteError` label — under a
/// call the library did not see (made through `Deref`): it may have been a write, so its
/// outcome is unknown. (Calls through `run` arrive classified: `Error::Connection`,
/// `Error::WriteInterrupted`.)
fn broke_unseen(e: &polymongo::Error) -> bool {
    matches!(e, polymongo::Error::Driver(_)) && e.is_retryable() && !e.is_retryable_as_write()
}

/// The driver refused to send because its client is shut down (after `close_all`).
pub(crate) fn is_shutdown(e: &polymongo::Error) -> bool {
    e.driver_error()
        .is_some_and(|d| matches!(*d.kind, DriverKind::Shutdown))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_unknown_write_outcome_is_never_answered_try_again() {
        let unknown = DbError(polymongo::Error::Timeout {
            during: "running a transaction",
            after: Duration::from_secs(1),
            outcome_unknown: true,
        });
        assert_eq!(unknown.answer(), Answer::OutcomeUnknown);
        assert!(!unknown.answer().may_retry());
        // A close that cut the handler: its write may have been applied.
        assert_eq!(
            DbError(polymongo::Error::Closed).answer(),
            Answer::OutcomeUnknown
        );
        let known = DbError(polymongo::Error::Timeout {
            during: "waiting",
            after: Duration::from_secs(1),
            outcome_unknown: false,
        });
        assert_eq!(known.answer(), Answer::Unavailable);
    }

    #[test]
    fn a_connection_broken_under_a_direct_driver_call_is_an_unknown_outcome() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let e = DbError::from(polymongo::mongodb::error::Error::from(io));
        assert_eq!(e.answer(), Answer::OutcomeUnknown);
    }

    #[test]
    fn a_retryable_code_without_the_write_label_under_a_direct_call_is_an_unknown_outcome() {
        let command: polymongo::mongodb::error::CommandError =
            polymongo::mongodb::bson::from_document(
                polymongo::mongodb::bson::doc! { "code": 91, "codeName": "ShutdownInProgress", "errmsg": "x" },
            )
            .unwrap();
        let e = DbError::from(polymongo::mongodb::error::Error::from(DriverKind::Command(
            command,
        )));
        assert_eq!(e.answer(), Answer::OutcomeUnknown);
        assert!(!e.answer().may_retry());
    }

    #[test]
    fn a_shut_down_client_refused_before_sending() {
        let e = DbError::from(polymongo::mongodb::error::Error::from(DriverKind::Shutdown));
        assert_eq!(e.answer(), Answer::ShuttingDown);
        assert!(e.answer().may_retry());
    }

    #[test]
    fn a_duplicate_key_is_logged_without_the_values_it_quotes() {
        use std::sync::{Arc, Mutex};
        const VALUE: &str = "tok-Secr3t";
        let write: polymongo::mongodb::error::WriteError = polymongo::mongodb::bson::from_document(
            polymongo::mongodb::bson::doc! {
                "code": 11000,
                "codeName": "DuplicateKey",
                "errmsg": format!("E11000 duplicate key error collection: a.b index: token_1 dup key: {{ token: \"{VALUE}\" }}"),
            },
        )
        .unwrap();
        let e = DbError::from(polymongo::mongodb::error::Error::from(DriverKind::Write(
            WriteFailure::WriteError(write),
        )));
        assert!(e.to_string().contains(VALUE), "the premise: {e}");

        let logged: Arc<Mutex<Vec<u8>>> = Arc::default();
        let sink = Arc::clone(&logged);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Sink(Arc::clone(&sink)))
            .with_ansi(false)
            .finish();
        let response = tracing::subscriber::with_default(subscriber, || e.into_response());
        assert_eq!(response.status(), axum::http::StatusCode::CONFLICT);
        let logged = String::from_utf8(logged.lock().unwrap().clone()).unwrap();
        assert!(logged.contains("database error answered"), "{logged}");
        assert!(
            logged.contains("write error 11000 (DuplicateKey)"),
            "{logged}"
        );
        assert!(!logged.contains(VALUE), "{logged}");
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
