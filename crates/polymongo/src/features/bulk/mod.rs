//! Whole-database bulk tasks: export, import, copy, drop ([`PolyMongo::bulk`](crate::PolyMongo::bulk)).
//!
//! Dumps are newline-delimited JSON with documents in canonical Extended JSON v2, so every
//! BSON type survives a round trip exactly (see `docs/dump-format.md`). Exports and imports
//! stream with bounded memory whatever the database size: cursor batches in, batched
//! unordered writes out, each awaited before the next is read (back-pressure).

mod copy;
mod export;
pub(crate) mod format;
mod import;
mod spec;
mod verify;

use std::fmt;
use std::io::BufRead;
use std::sync::Arc;

use mongodb::bson::{DateTime, Document};
use serde::Serialize;

use crate::floor::error::{Error, Result};
use crate::registry::Registry;

pub use crate::floor::bulk_report::{
    CollectionReport, DumpProblem, ExportReport, Failure, ImportReport, Stage, FORMAT_VERSION,
    MAX_LINE_BYTES,
};
pub(crate) use copy::drop_on;
pub use copy::{CopyPath, CopyReport};
pub(crate) use export::export_on;
use format::{CollectionSpec, Header, Record, Sequence};
pub(crate) use import::import_on;
pub use spec::ALLOWED_COLLECTION_OPTIONS;
pub use verify::{verify_stream, DumpCollection, DumpSummary};

/// Default documents per write batch of an import or copy.
pub const DEFAULT_BATCH_SIZE: usize = 1000;

/// Bulk tasks on the manager's databases: [`PolyMongo::bulk`](crate::PolyMongo::bulk).
#[derive(Debug, Clone, Copy)]
pub struct Bulk<'p> {
    registry: &'p Registry,
}

impl<'p> Bulk<'p> {
    pub(crate) fn new(registry: &'p Registry) -> Self {
        Self { registry }
    }
}

/// A whole database in memory: [`Bulk::export`], [`Bulk::import`].
///
/// Meant for small databases (fixtures, tests, tenants of a few thousand documents); use
/// [`Bulk::export_stream`] and [`Bulk::import_stream`] for anything large.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Dump {
    /// The database it was taken from.
    pub database: String,
    /// When it was taken.
    pub created: DateTime,
    /// Its collections, views last.
    pub collections: Vec<CollectionDump>,
}

/// One collection of a [`Dump`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CollectionDump {
    /// The collection's name.
    pub name: String,
    /// `collection`, `view` or `timeseries`.
    pub kind: String,
    /// Its creation options (validator, capped, collation, a view's pipeline…).
    pub options: Document,
    /// Its indexes, the `_id` index excepted, as `listIndexes` gives them.
    pub indexes: Vec<Document>,
    /// Its documents.
    pub documents: Vec<Document>,
}

impl Dump {
    /// A dump of `database` made now, with `collections`.
    pub fn new(database: impl Into<String>, collections: Vec<CollectionDump>) -> Self {
        Self {
            database: database.into(),
            created: DateTime::now(),
            collections,
        }
    }

    /// Writes the dump in the dump format (the same bytes [`Bulk::export_stream`] writes).
    ///
    /// # Errors
    /// The writer's error.
    pub fn write_to(&self, mut out: impl std::io::Write) -> std::io::Result<()> {
        let mut buf = Vec::new();
        format::encode(
            &Record::Header(Header {
                version: FORMAT_VERSION,
                database: self.database.clone(),
                created: self.created,
                producer: producer(),
            }),
            &mut buf,
        );
        let mut documents = 0u64;
        for c in &self.collections {
            format::encode(&Record::Collection(c.spec()), &mut buf);
            for d in &c.documents {
                format::encode_document(d.clone(), &mut buf);
                documents += 1;
                if buf.len() >= WRITE_CHUNK {
                    out.write_all(&buf)?;
                    buf.clear();
                }
            }
        }
        format::encode(
            &Record::End {
                collections: self.collections.len() as u64,
                documents,
            },
            &mut buf,
        );
        out.write_all(&buf)?;
        out.flush()
    }

    /// Reads a dump in the dump format (uncompressed).
    ///
    /// # Errors
    /// [`Error::Dump`] naming the line and what is wrong with it; an I/O error as
    /// [`Error::Io`].
    pub fn read_from(mut input: impl BufRead) -> Result<Dump> {
        let mut dump: Option<Dump> = None;
        let mut sequence = Sequence::default();
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            number += 1;
            let fail = |problem| Error::Dump {
                line: number,
                problem,
            };
            match read_line_sync(&mut input, &mut line).map_err(|e| Error::Io {
                during: "reading a dump",
                source: Arc::new(e),
            })? {
                Line::Eof => break,
                Line::TooLong => return Err(fail(DumpProblem::LineTooLong)),
                Line::NoNewline => return Err(fail(DumpProblem::TruncatedLine)),
                Line::Complete => {}
            }
            let record = format::decode(&line).map_err(fail)?;
            sequence.accept(&record).map_err(fail)?;
            match record {
                Record::Header(h) => {
                    dump = Some(Dump {
                        database: h.database,
                        created: h.created,
                        collections: Vec::new(),
                    })
                }
                Record::Collection(spec) => {
                    if let Some(d) = dump.as_mut() {
                        d.collections.push(CollectionDump {
                            name: spec.name,
                            kind: spec.kind,
                            options: spec.options,
                            indexes: spec.indexes,
                            documents: Vec::new(),
                        });
                    }
                }
                Record::Document(doc) => {
                    if let Some(c) = dump.as_mut().and_then(|d| d.collections.last_mut()) {
                        c.documents.push(doc);
                    }
                }
                Record::End { .. } => {}
            }
        }
        sequence.finish().map_err(|problem| Error::Dump {
            line: number,
            problem,
        })?;
        dump.ok_or(Error::Dump {
            line: 1,
            problem: DumpProblem::NotADump,
        })
    }

    /// The dump as bytes of the dump format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing to a `Vec` cannot fail.
        let _ = self.write_to(&mut out);
        out
    }
}

impl CollectionDump {
    /// A plain collection holding `documents`, with no options and no secondary indexes.
    pub fn new(name: impl Into<String>, documents: Vec<Document>) -> Self {
        Self {
            name: name.into(),
            kind: "collection".into(),
            options: Document::new(),
            indexes: Vec::new(),
            documents,
        }
    }

    /// With creation options (validator, capped, collation…).
    pub fn with_options(mut self, options: Document) -> Self {
        self.options = options;
        self
    }

    /// With secondary index specifications (`{key: {...}, name: "..."}` each).
    pub fn with_indexes(mut self, indexes: Vec<Document>) -> Self {
        self.indexes = indexes;
        self
    }

    fn spec(&self) -> CollectionSpec {
        CollectionSpec {
            name: self.name.clone(),
            kind: self.kind.clone(),
            options: self.options.clone(),
            indexes: self.indexes.clone(),
        }
    }
}

/// The server's code for "a collection of that name exists".
const NAMESPACE_EXISTS: i32 = 48;

/// Creates the collection or view `spec` in `database` with its options; one that exists
/// already is kept as it is.
pub(crate) async fn create_collection(
    database: &mongodb::Database,
    spec: &CollectionSpec,
) -> std::result::Result<(), CreateError> {
    // The specification is untrusted (a dump): only known options, checked, under our name.
    let create = spec::create_command(spec).map_err(CreateError::Refused)?;
    match database.run_command(create).await {
        Err(e) if !matches!(&*e.kind, mongodb::error::ErrorKind::Command(c) if c.code == NAMESPACE_EXISTS) => {
            Err(CreateError::Driver(e))
        }
        _ => Ok(()),
    }
}

/// Why a collection could not be created.
#[derive(Debug)]
pub(crate) enum CreateError {
    /// Its specification was refused before anything was sent.
    Refused(String),
    /// The server or the driver failed.
    Driver(mongodb::error::Error),
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::Refused(m) => write!(f, "invalid collection specification: {m}"),
            CreateError::Driver(e) => e.fmt(f),
        }
    }
}

/// Creates the secondary indexes of `spec` (nothing is sent when it has none); returns how
/// many.
pub(crate) async fn create_indexes(
    database: &mongodb::Database,
    spec: &CollectionSpec,
) -> mongodb::error::Result<u64> {
    if spec.indexes.is_empty() {
        return Ok(0);
    }
    let indexes: Vec<mongodb::bson::Bson> = spec
        .indexes
        .iter()
        .cloned()
        .map(mongodb::bson::Bson::Document)
        .collect();
    database
        .run_command(
            mongodb::bson::doc! { "createIndexes": spec.name.as_str(), "indexes": indexes },
        )
        .await?;
    Ok(spec.indexes.len() as u64)
}

/// Bytes gathered before a write to the output.
pub(crate) const WRITE_CHUNK: usize = 256 * 1024;

fn producer() -> String {
    format!("polymongo {}", env!("CARGO_PKG_VERSION"))
}

enum Line {
    Complete,
    Eof,
    TooLong,
    NoNewline,
}

/// Reads one line into `buf` (without its newline), at most [`MAX_LINE_BYTES`].
fn read_line_sync(input: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Line> {
    use std::io::Read;
    buf.clear();
    let n = input
        .by_ref()
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', buf)?;
    Ok(classify_line(n, buf))
}

fn classify_line(n: usize, buf: &mut Vec<u8>) -> Line {
    if n == 0 {
        return Line::Eof;
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        return Line::Complete;
    }
    if buf.len() > MAX_LINE_BYTES {
        Line::TooLong
    } else {
        Line::NoNewline
    }
}

/// Progress of an export, import or copy, reported to [`ExportOptions::progress`] and
/// [`ImportOptions::progress`] after each batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Progress {
    /// Documents exported, or written by the import.
    pub documents: u64,
    /// Bytes of the dump written or read so far, uncompressed (0 for a copy, which has no
    /// dump).
    pub bytes: u64,
}

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// How [`Bulk::export_stream`] writes.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ExportOptions {
    /// Compress the dump with gzip. Default off.
    pub gzip: bool,
    /// Documents per cursor batch. Default: the server's.
    pub batch_size: Option<u32>,
    /// Called after each chunk written.
    pub progress: Option<ProgressFn>,
}

impl fmt::Debug for ExportOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportOptions")
            .field("gzip", &self.gzip)
            .field("batch_size", &self.batch_size)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl ExportOptions {
    /// Gzip the output.
    pub fn gzip(mut self, on: bool) -> Self {
        self.gzip = on;
        self
    }

    /// Documents per cursor batch.
    pub fn batch_size(mut self, n: u32) -> Self {
        self.batch_size = Some(n);
        self
    }

    /// A progress callback.
    pub fn progress(mut self, f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }
}

/// What an import does with a record it cannot read or a document the server refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Stop at the first failure (after writing what came before it). The default.
    #[default]
    Stop,
    /// Skip it, list it in the report, and go on.
    Continue,
}

/// How an import writes documents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// `insert`: a document whose `_id` exists already fails (duplicate key). The default.
    #[default]
    Insert,
    /// Replace the document with the same `_id`, or insert it.
    Upsert,
}

/// How [`Bulk::import_stream`] and [`Bulk::import`] write.
#[derive(Clone)]
#[non_exhaustive]
pub struct ImportOptions {
    /// Documents per write batch. Default [`DEFAULT_BATCH_SIZE`].
    pub batch_size: usize,
    /// Stop at the first failure or continue and report. Default stop.
    pub on_error: OnError,
    /// Insert or upsert by `_id`. Default insert.
    pub mode: WriteMode,
    /// Drop the target database before importing. Default off.
    pub drop_target_first: bool,
    /// Called after each batch written.
    pub progress: Option<ProgressFn>,
    /// Failures kept in [`ImportReport::failures`]; later ones are only counted
    /// ([`ImportReport::failures_dropped`]) and handed to [`on_failure`](Self::on_failure),
    /// so an import of any size in continue mode holds bounded memory. Default
    /// [`DEFAULT_MAX_FAILURES`].
    pub max_failures: usize,
    /// Called with every failure as it happens (kept in the report or not): a place to
    /// stream a full failure report to.
    pub on_failure: Option<FailureFn>,
}

/// Default number of failures an import or copy keeps in its report.
pub const DEFAULT_MAX_FAILURES: usize = 1000;

/// Most bytes of documents in one write batch (the server takes commands of at most
/// 16 MiB and 16 KiB; the rest is room for the command itself).
pub(crate) const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// The largest document MongoDB stores.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// A callback receiving each [`Failure`] of an import or copy.
pub type FailureFn = Arc<dyn Fn(&Failure) + Send + Sync>;

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            batch_size: DEFAULT_BATCH_SIZE,
            on_error: OnError::Stop,
            mode: WriteMode::Insert,
            drop_target_first: false,
            progress: None,
            max_failures: DEFAULT_MAX_FAILURES,
            on_failure: None,
        }
    }
}

/// Records `failure` in `report`: kept while fewer than `options.max_failures` are, else
/// counted; handed to `options.on_failure` either way.
pub(crate) fn record_failure(report: &mut ImportReport, options: &ImportOptions, failure: Failure) {
    if let Some(f) = &options.on_failure {
        f(&failure);
    }
    if report.failures.len() < options.max_failures {
        report.failures.push(failure);
    } else {
        report.failures_dropped += 1;
    }
}

impl fmt::Debug for ImportOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportOptions")
            .field("batch_size", &self.batch_size)
            .field("on_error", &self.on_error)
            .field("mode", &self.mode)
            .field("drop_target_first", &self.drop_target_first)
            .field("progress", &self.progress.is_some())
            .field("max_failures", &self.max_failures)
            .field("on_failure", &self.on_failure.is_some())
            .finish()
    }
}

impl ImportOptions {
    /// Documents per write batch (at least 1).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// Stop at the first failure or continue and report.
    pub fn on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// Insert or upsert by `_id`.
    pub fn mode(mut self, mode: WriteMode) -> Self {
        self.mode = mode;
        self
    }

    /// Drop the target database first.
    pub fn drop_target_first(mut self, on: bool) -> Self {
        self.drop_target_first = on;
        self
    }

    /// A progress callback.
    pub fn progress(mut self, f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    /// Failures kept in the report (later ones are counted and handed to
    /// [`on_failure`](Self::on_failure)).
    pub fn max_failures(mut self, n: usize) -> Self {
        self.max_failures = n;
        self
    }

    /// A callback receiving every failure as it happens.
    pub fn on_failure(mut self, f: impl Fn(&Failure) + Send + Sync + 'static) -> Self {
        self.on_failure = Some(Arc::new(f));
        self
    }
}
