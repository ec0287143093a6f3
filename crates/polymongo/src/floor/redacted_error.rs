//! An [`Error`] as the library's own log events print it: without the values the server
//! echoes from documents.
//!
//! A server's error message can quote the data it refused: a duplicate key names the key's
//! values (`dup key: { token: "…" }`), a failed validation carries the document's fields in
//! its details, a failed decode quotes the value it could not read. The caller gets them in
//! the [`Error`] it is handed; a log line at `debug` or `warn`, kept and shipped elsewhere
//! for weeks, is no place for an e-mail address or a token under a unique index. Driver
//! errors are printed from an allow-list: kinds about the network, the pool, the session or
//! the deployment keep their text; every other kind is named with its server code and code
//! name only.

use std::fmt;

use mongodb::error::{ErrorKind as DriverKind, WriteFailure};

use crate::floor::bulk_report::{DumpProblem, ImportReport};
use crate::floor::error::Error;
use crate::floor::migration_error::MigrationError;

/// [`Error`] printed without document values: see [`Error::redacted`].
#[derive(Debug, Clone, Copy)]
pub struct RedactedError<'a>(pub(crate) &'a Error);

impl fmt::Display for RedactedError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Error::Connection {
                cluster,
                source,
                outcome_unknown,
            } => {
                write!(f, "cannot reach cluster {cluster}: {}", Driver(source))?;
                if *outcome_unknown {
                    f.write_str(" (a write was under way: it may have been applied)")?;
                }
                Ok(())
            }
            Error::Authentication { cluster, source } => {
                write!(f, "authentication to {cluster} failed: {}", Driver(source))
            }
            Error::WriteInterrupted { cluster, source } => write!(
                f,
                "a write on cluster {cluster} was interrupted and may have been applied: {}",
                Driver(source)
            ),
            Error::Driver(source) => Driver(source).fmt(f),
            Error::Dump {
                line,
                problem: DumpProblem::InvalidJson(_),
            } => write!(f, "dump line {line}: invalid JSON"),
            Error::Dump {
                line,
                problem: DumpProblem::InvalidRecord(_),
            } => write!(f, "dump line {line}: invalid record"),
            Error::Import(report) => write!(f, "import stopped: {}", Report(report)),
            Error::Migration(m) => match &**m {
                MigrationError::Failed {
                    database,
                    version,
                    name,
                    step,
                    ..
                } => write!(
                    f,
                    "database {database:?}: migration {version} ({name}) failed at step {step}"
                ),
                other => other.fmt(f),
            },
            // Names, options, bounds, tenant ids: nothing read from a document.
            other => other.fmt(f),
        }
    }
}

/// A driver error from the allow-list: its text where it describes the network, the pool,
/// the session or the deployment, else its kind and server code.
struct Driver<'a>(&'a mongodb::error::Error);

impl fmt::Display for Driver<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0.kind {
            DriverKind::Io(_)
            | DriverKind::ServerSelection { .. }
            | DriverKind::ConnectionPoolCleared { .. }
            | DriverKind::DnsResolve { .. }
            | DriverKind::Shutdown
            | DriverKind::SessionsNotSupported
            | DriverKind::IncompatibleServer { .. }
            | DriverKind::Transaction { .. } => self.0.fmt(f),
            // The driver's text can name the user; the mechanism's reply is in the source.
            DriverKind::Authentication { .. } => f.write_str("credentials refused"),
            DriverKind::Command(c) => coded(f, "server error", c.code, &c.code_name),
            DriverKind::Write(WriteFailure::WriteError(w)) => coded(
                f,
                "write error",
                w.code,
                w.code_name.as_deref().unwrap_or_default(),
            ),
            DriverKind::Write(WriteFailure::WriteConcernError(w)) => {
                coded(f, "write concern error", w.code, &w.code_name)
            }
            DriverKind::InsertMany(m) => {
                let errors = m.write_errors.as_deref().unwrap_or_default();
                write!(f, "insert error: {} documents refused", errors.len())?;
                if let Some(first) = errors.first() {
                    write!(f, ", the first with code {}", first.code)?;
                    if let Some(name) = first.code_name.as_deref() {
                        write!(f, " ({name})")?;
                    }
                }
                if let Some(w) = &m.write_concern_error {
                    f.write_str("; ")?;
                    coded(f, "write concern error", w.code, &w.code_name)?;
                }
                Ok(())
            }
            _ => f.write_str("driver error (its text may quote document values: withheld)"),
        }
    }
}

fn coded(f: &mut fmt::Formatter<'_>, what: &str, code: i32, name: &str) -> fmt::Result {
    if name.is_empty() {
        write!(f, "{what} {code}")
    } else {
        write!(f, "{what} {code} ({name})")
    }
}

/// A driver error met outside an [`Error`], printed as [`Error::redacted`] prints one.
pub(crate) fn driver(e: &mongodb::error::Error) -> impl fmt::Display + '_ {
    Driver(e)
}

/// An import's report printed without the stop's message (it can quote a server's).
pub(crate) fn import_report(report: &ImportReport) -> impl fmt::Display + '_ {
    Report(report)
}

struct Report<'a>(&'a ImportReport);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.write_summary(f)
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{self, doc, Bson};
    use mongodb::error::{CommandError, ErrorKind, WriteError, WriteFailure};

    use super::*;

    const VALUE: &str = "tok-Secr3t";

    fn write_error() -> mongodb::error::Error {
        let w: WriteError = bson::from_document(doc! {
            "code": 11000,
            "codeName": "DuplicateKey",
            "errmsg": format!("E11000 duplicate key error collection: a.b index: token_1 dup key: {{ token: \"{VALUE}\" }}"),
            "errInfo": { "keyValue": { "token": VALUE } },
        })
        .unwrap();
        ErrorKind::Write(WriteFailure::WriteError(w)).into()
    }

    #[test]
    fn a_duplicate_key_is_named_by_its_code_without_its_values() {
        let e = Error::Driver(write_error());
        assert!(e.to_string().contains(VALUE), "the premise: {e}");
        assert_eq!(e.redacted().to_string(), "write error 11000 (DuplicateKey)");
    }

    #[test]
    fn the_librarys_frame_is_kept_around_a_withheld_driver_text() {
        let e = Error::Connection {
            cluster: "mongodb://u:***@h:1/".into(),
            source: write_error(),
            outcome_unknown: true,
        };
        assert_eq!(
            e.redacted().to_string(),
            "cannot reach cluster mongodb://u:***@h:1/: write error 11000 (DuplicateKey) (a \
             write was under way: it may have been applied)"
        );
        let e = Error::WriteInterrupted {
            cluster: "c".into(),
            source: write_error(),
        };
        assert!(!e.redacted().to_string().contains(VALUE));
    }

    #[test]
    fn command_and_decoding_errors_keep_only_their_code() {
        let c: CommandError = bson::from_document(doc! {
            "code": 2, "codeName": "BadValue", "errmsg": format!("bad value {VALUE}"),
        })
        .unwrap();
        let e = Error::Driver(ErrorKind::Command(c).into());
        assert_eq!(e.redacted().to_string(), "server error 2 (BadValue)");

        let decode = bson::from_bson::<u32>(Bson::String(VALUE.into())).unwrap_err();
        let e = Error::Driver(decode.into());
        assert!(e.to_string().contains(VALUE), "the premise: {e}");
        let shown = e.redacted().to_string();
        assert!(!shown.contains(VALUE), "{shown}");
        assert!(shown.starts_with("driver error"), "{shown}");
    }

    #[test]
    fn network_errors_keep_their_text() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let e = Error::Driver(ErrorKind::Io(std::sync::Arc::new(io)).into());
        assert!(e.redacted().to_string().contains("reset by peer"));
    }

    #[test]
    fn a_dump_problem_that_quotes_the_file_is_named_only() {
        let bad: serde_json::Error =
            serde_json::from_str::<u32>(&format!("\"{VALUE}\"")).unwrap_err();
        let e = Error::Dump {
            line: 7,
            problem: DumpProblem::InvalidJson(bad.to_string()),
        };
        assert!(e.to_string().contains(VALUE), "the premise: {e}");
        assert_eq!(e.redacted().to_string(), "dump line 7: invalid JSON");
    }
}
