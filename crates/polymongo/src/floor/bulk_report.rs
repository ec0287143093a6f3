//! What bulk tasks report, and what is wrong with a dump: plain data carried by
//! [`Error::Dump`](crate::Error::Dump) and [`Error::Import`](crate::Error::Import), so it sits
//! in the floor beside the error type. Re-exported from [`bulk`](crate::bulk).

use std::fmt;

use serde::Serialize;

/// The format's name, the key of the header record.
pub const FORMAT_NAME: &str = "polymongo_dump";

/// The format version this library writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// Longest record line accepted, in bytes: a 16 MiB BSON document grows in Extended JSON
/// (base64 binaries, `$numberLong` wrappers), and anything longer is not a record.
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// What is wrong with a dump, at one line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DumpProblem {
    /// The line is not valid JSON.
    InvalidJson(String),
    /// A JSON value that is not valid Extended JSON (`{"$numberLong": "x"}`), or a record
    /// whose fields are missing or of the wrong type.
    InvalidRecord(String),
    /// A record kind this version does not know.
    UnknownRecord(String),
    /// The first record is not a polymongo dump header.
    NotADump,
    /// The dump was written by a newer format version.
    FutureVersion {
        /// The file's version.
        found: u64,
        /// The newest version this library reads.
        supported: u32,
    },
    /// A document came before any collection record.
    DocumentBeforeCollection,
    /// A second header.
    DuplicateHeader,
    /// A record after the `end` record.
    DataAfterEnd,
    /// The last line has no newline: the file was cut in the middle of a record.
    TruncatedLine,
    /// The file ends without its `end` record.
    MissingEnd,
    /// The `end` record's counts differ from the records read.
    CountMismatch {
        /// What the `end` record says, collections and documents.
        expected: (u64, u64),
        /// What was read.
        found: (u64, u64),
    },
    /// The line is longer than [`MAX_LINE_BYTES`].
    LineTooLong,
    /// The gzip stream is damaged (found by [`verify_stream`](crate::bulk::verify_stream)).
    BadCompression(String),
}

impl DumpProblem {
    /// Whether the rest of the file can still be read after skipping this record (a bad
    /// document), as opposed to a file that cannot be trusted any further.
    pub fn is_record_local(&self) -> bool {
        matches!(
            self,
            DumpProblem::InvalidJson(_)
                | DumpProblem::InvalidRecord(_)
                | DumpProblem::UnknownRecord(_)
                | DumpProblem::DocumentBeforeCollection
        )
    }
}

impl fmt::Display for DumpProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DumpProblem::InvalidJson(e) => write!(f, "invalid JSON: {e}"),
            DumpProblem::InvalidRecord(e) => write!(f, "invalid record: {e}"),
            DumpProblem::UnknownRecord(kind) => write!(f, "unknown record type {kind:?}"),
            DumpProblem::NotADump => write!(
                f,
                "not a polymongo dump: the first record must be a {FORMAT_NAME:?} header"
            ),
            DumpProblem::FutureVersion { found, supported } => write!(
                f,
                "format version {found} is newer than this library reads (up to {supported})"
            ),
            DumpProblem::DocumentBeforeCollection => {
                write!(f, "a document before any collection record")
            }
            DumpProblem::DuplicateHeader => write!(f, "a second header record"),
            DumpProblem::DataAfterEnd => write!(f, "a record after the end record"),
            DumpProblem::TruncatedLine => {
                write!(f, "truncated: the last record has no end of line")
            }
            DumpProblem::MissingEnd => write!(f, "truncated: the file ends without its end record"),
            DumpProblem::CountMismatch { expected, found } => write!(
                f,
                "the end record counts {} collections and {} documents, the file has {} and {}",
                expected.0, expected.1, found.0, found.1
            ),
            DumpProblem::LineTooLong => {
                write!(f, "a line longer than {MAX_LINE_BYTES} bytes")
            }
            DumpProblem::BadCompression(e) => write!(f, "damaged gzip stream: {e}"),
        }
    }
}

/// Where a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Stage {
    /// Reading or decoding a record of the dump.
    Read,
    /// Creating a collection or view.
    Create,
    /// Creating indexes.
    Indexes,
    /// Writing documents.
    Write,
}

/// One thing that went wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Failure {
    /// The collection concerned, when known.
    pub collection: Option<String>,
    /// What was being done.
    pub stage: Stage,
    /// What went wrong (no credentials).
    pub message: String,
    /// The line of the dump (1-based), when one record is concerned.
    pub line: Option<u64>,
    /// For a write batch whose outcome is unknown (the connection broke), the first and last
    /// line of the batch: some of its documents may have been written.
    pub lines: Option<(u64, u64)>,
}

/// What happened to one collection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CollectionReport {
    /// The collection.
    pub name: String,
    /// Documents exported, or written (acknowledged by the server).
    pub documents: u64,
    /// Indexes exported, or created.
    pub indexes: u64,
    /// Failures concerning it.
    pub failures: u64,
}

/// The result of an export.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ExportReport {
    /// The database.
    pub database: String,
    /// Per collection.
    pub collections: Vec<CollectionReport>,
    /// Documents in all.
    pub documents: u64,
    /// Bytes of the dump, uncompressed.
    pub bytes: u64,
}

/// The result of an import: what was written and what was not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ImportReport {
    /// The target database.
    pub database: String,
    /// Per collection, in the order of the dump.
    pub collections: Vec<CollectionReport>,
    /// Documents written in all.
    pub documents: u64,
    /// The first failures, in order (with [`OnError::Continue`](crate::bulk::OnError::Continue),
    /// the skipped records), up to [`ImportOptions::max_failures`](crate::bulk::ImportOptions::max_failures).
    pub failures: Vec<Failure>,
    /// Failures past that bound: counted, not kept.
    pub failures_dropped: u64,
    /// Records skipped (read failures and refused documents).
    pub skipped: u64,
    /// The last line read.
    pub lines: u64,
    /// The failure that stopped the import, if it stopped early.
    pub stopped: Option<Failure>,
}

impl ImportReport {
    /// Whether the whole dump was imported without a single failure.
    pub fn is_clean(&self) -> bool {
        self.failures.is_empty() && self.failures_dropped == 0 && self.stopped.is_none()
    }
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_summary(f)?;
        if let Some(message) = self.stopped.as_ref().map(|s| &s.message) {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

impl ImportReport {
    /// The counts, and where the import stopped if it did, without the stop's message (it
    /// can quote a server's).
    pub(crate) fn write_summary(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} documents written to {:?} in {} collections, {} failures",
            self.documents,
            self.database,
            self.collections.len(),
            self.failures.len() as u64 + self.failures_dropped
        )?;
        if let Some(s) = &self.stopped {
            write!(f, "; stopped")?;
            if let Some(line) = s.line {
                write!(f, " at line {line}")?;
            }
        }
        Ok(())
    }
}
