//! Import: the dump format into a database, streamed, with every failure reported.

use async_compression::tokio::bufread::GzipDecoder;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::ErrorKind as DriverKind;
use mongodb::{Collection, Database};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use super::export::io;
use super::format::{self, CollectionSpec, Record, Sequence};
use super::DumpProblem;
use super::{
    classify_line, create_collection, create_indexes, Bulk, CollectionReport, Dump, Failure,
    ImportOptions, ImportReport, Line, OnError, Progress, Stage, WriteMode, MAX_BATCH_BYTES,
    MAX_DOCUMENT_BYTES, MAX_LINE_BYTES,
};
use crate::floor::error::{Error, Result};
use crate::registry::entry::DbEntry;
use crate::registry::DbLease;

/// Why an import stopped early; the report says what was written before.
struct Stopped;

impl Bulk<'_> {
    /// Imports an in-memory [`Dump`] into database `db` (which need not be the database it
    /// was taken from).
    ///
    /// # Errors
    /// As [`import_stream`](Self::import_stream).
    pub async fn import(
        &self,
        db: &str,
        dump: &Dump,
        options: ImportOptions,
    ) -> Result<ImportReport> {
        let bytes = dump.to_bytes();
        self.import_stream(db, &bytes[..], options).await
    }

    /// Reads a dump from `input` (plain or gzip, told by its first bytes) into database `db`,
    /// with bounded memory: one line and one write batch at a time, each batch awaited before
    /// more is read.
    ///
    /// Collections are created with their options (an existing one is kept) and indexes
    /// before their documents; views are created last. Documents go in unordered batches of
    /// `batch_size`, inserted or upserted by `_id`.
    ///
    /// Every record that is not written is accounted for: with [`OnError::Continue`] a bad
    /// record or a refused document is skipped and listed in [`ImportReport::failures`] with
    /// its line; with [`OnError::Stop`] the import ends at the first one, after writing what
    /// came before it. A file that cannot be read on (not a dump, a format version from the
    /// future, cut short) always stops.
    ///
    /// # Errors
    /// [`Error::Import`] with the report when the import stopped early (it says which
    /// records were written), [`Error::Config`] for a `batch_size` of 0,
    /// [`Error::InvalidName`], [`Error::Closed`], [`Error::Io`] when `input` fails.
    pub async fn import_stream<R>(
        &self,
        db: &str,
        input: R,
        options: ImportOptions,
    ) -> Result<ImportReport>
    where
        R: AsyncRead + Unpin,
    {
        let lease = self.registry.lease(db)?;
        import_on(&lease, db, input, options).await
    }
}

/// [`Bulk::import_stream`] into a database already leased (on the cluster its owner chose).
pub(crate) async fn import_on<R>(
    lease: &DbLease,
    db: &str,
    input: R,
    options: ImportOptions,
) -> Result<ImportReport>
where
    R: AsyncRead + Unpin,
{
    if options.batch_size == 0 {
        return Err(Error::Config {
            field: "batch_size",
            message: "must be at least 1".into(),
        });
    }
    let mut input = BufReader::with_capacity(64 * 1024, input);
    let head = input.fill_buf().await.map_err(io("reading the dump"))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        let mut gz = GzipDecoder::new(input);
        gz.multiple_members(true);
        import_from(lease, db, BufReader::with_capacity(64 * 1024, gz), options).await
    } else {
        import_from(lease, db, input, options).await
    }
}

async fn import_from<R>(
    lease: &DbLease,
    db: &str,
    mut input: R,
    options: ImportOptions,
) -> Result<ImportReport>
where
    R: AsyncBufRead + Unpin,
{
    let mut run = Importer {
        entry: &lease.entry,
        database: lease.entry.database.clone(),
        options: &options,
        report: ImportReport {
            database: db.to_owned(),
            ..ImportReport::default()
        },
        collection: None,
        batch: Vec::new(),
        batch_lines: Vec::new(),
        batch_bytes: 0,
        views: Vec::new(),
        bytes: 0,
        unread: Unread::default(),
    };
    let outcome = run.read_all(&mut input).await;
    let report = run.report;
    match outcome {
        Ok(()) => {
            tracing::info!(
                database = db,
                documents = report.documents,
                failures = report.failures.len() as u64 + report.failures_dropped,
                "dump imported"
            );
            Ok(report)
        }
        Err(Stopped) => {
            tracing::warn!(database = db, report = %crate::floor::redacted_error::import_report(&report), "import stopped");
            Err(Error::Import(Box::new(report)))
        }
    }
}

/// The collection documents are going to now.
struct Current {
    index: usize,
    collection: Option<Collection<Document>>,
}

struct Importer<'o> {
    /// The target's registry entry, renewed after a drop.
    entry: &'o DbEntry,
    database: Database,
    options: &'o ImportOptions,
    report: ImportReport,
    collection: Option<Current>,
    batch: Vec<Document>,
    batch_lines: Vec<u64>,
    /// BSON bytes of the documents in `batch`.
    batch_bytes: usize,
    views: Vec<(u64, CollectionSpec)>,
    bytes: u64,
    /// Records skipped because they could not be read (not counted by the sequence).
    unread: Unread,
}

/// Records skipped before the sequence counted them, by the kind they seem to be.
#[derive(Debug, Default)]
struct Unread {
    collections: u64,
    documents: u64,
    /// Lines whose kind cannot be told (not JSON, no record key).
    unknown: u64,
}

impl Unread {
    /// Whether these skipped records account exactly for the difference between the `end`
    /// record's counts and the records read: each kind's deficit is covered by skipped
    /// records of that kind (or of no known kind), with no overflow whatever the counts.
    fn explain(&self, expected: (u64, u64), found: (u64, u64)) -> bool {
        let (Some(missing_c), Some(missing_d)) = (
            expected.0.checked_sub(found.0),
            expected.1.checked_sub(found.1),
        ) else {
            return false;
        };
        let (Some(open_c), Some(open_d)) = (
            missing_c.checked_sub(self.collections),
            missing_d.checked_sub(self.documents),
        ) else {
            return false;
        };
        open_c.checked_add(open_d) == Some(self.unknown)
    }

    fn count(&mut self, kind: Option<RecordKind>) {
        match kind {
            Some(RecordKind::Collection) => self.collections += 1,
            Some(RecordKind::Document) => self.documents += 1,
            Some(RecordKind::Other) => {}
            None => self.unknown += 1,
        }
    }
}

/// The kind of a record the sequence did not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordKind {
    Collection,
    Document,
    /// A header, an end or an unknown kind: not in the `end` counts.
    Other,
}

/// The kind a line that could not be decoded claims to be, from its first key.
fn sniff(line: &[u8]) -> Option<RecordKind> {
    let head = &line[..line.len().min(64)];
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).ok()?,
    };
    let rest = text.trim_start().strip_prefix('{')?.trim_start();
    if rest.starts_with("\"document\"") {
        Some(RecordKind::Document)
    } else if rest.starts_with("\"collection\"") {
        Some(RecordKind::Collection)
    } else {
        None
    }
}

fn kind_of(record: &Record) -> RecordKind {
    match record {
        Record::Collection(_) => RecordKind::Collection,
        Record::Document(_) => RecordKind::Document,
        _ => RecordKind::Other,
    }
}

impl Importer<'_> {
    async fn read_all<R: AsyncBufRead + Unpin>(&mut self, input: &mut R) -> Result<(), Stopped> {
        let mut sequence = Sequence::default();
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            number += 1;
            line.clear();
            let read = (&mut *input)
                .take(MAX_LINE_BYTES as u64 + 1)
                .read_until(b'\n', &mut line)
                .await;
            let n = match read {
                Ok(n) => n,
                Err(e) => {
                    self.flush().await?;
                    return self.stop(
                        None,
                        Stage::Read,
                        format!("reading the dump: {e}"),
                        Some(number),
                    );
                }
            };
            self.bytes += n as u64;
            match classify_line(n, &mut line) {
                Line::Eof => break,
                Line::TooLong => return self.fatal(number, DumpProblem::LineTooLong).await,
                Line::NoNewline => return self.fatal(number, DumpProblem::TruncatedLine).await,
                Line::Complete => {}
            }
            self.report.lines = number;
            let record = match format::decode(&line) {
                Ok(record) => record,
                Err(problem) => {
                    let kind = sniff(&line);
                    self.bad_record(number, problem).await?;
                    self.unread.count(kind);
                    continue;
                }
            };
            match sequence.accept(&record) {
                Ok(()) => {}
                // The records skipped on the way account for the difference, kind by kind:
                // the file is whole, and every skipped record is already listed.
                Err(DumpProblem::CountMismatch { expected, found })
                    if self.unread.explain(expected, found) => {}
                Err(problem) => {
                    self.bad_record(number, problem).await?;
                    self.unread.count(Some(kind_of(&record)));
                    continue;
                }
            }
            match record {
                Record::Header(_) => {
                    if self.options.drop_target_first {
                        // Whatever the outcome, the database may be gone, also when this
                        // future is dropped before the answer: the models' indexes are
                        // ensured again on their next use.
                        let renew = self.entry.renew_models_after();
                        let dropped = self.database.drop().await;
                        drop(renew);
                        if let Err(e) = dropped {
                            return self.stop(
                                None,
                                Stage::Create,
                                self.message(&e, "dropping the target database"),
                                Some(number),
                            );
                        }
                    }
                }
                Record::Collection(spec) => {
                    self.flush().await?;
                    self.start_collection(number, spec).await?;
                }
                Record::Document(document) => {
                    if self
                        .collection
                        .as_ref()
                        .is_some_and(|c| c.collection.is_none())
                    {
                        // Counted by the sequence: listed, not an unread record.
                        self.skip_counted(
                            number,
                            DumpProblem::InvalidRecord(
                                "a document in a view or a collection that could not be created"
                                    .into(),
                            ),
                        )
                        .await?;
                        continue;
                    }
                    // Checked alone before batching: a document the client or the server
                    // would refuse for itself (a key or regex with NUL, over 16 MiB) is
                    // refused with its line, and the batch around it is not lost.
                    let size = match document_size(&document) {
                        Ok(size) => size,
                        Err(message) => {
                            self.refuse_document(number, message).await?;
                            continue;
                        }
                    };
                    if !self.batch.is_empty() && self.batch_bytes + size > MAX_BATCH_BYTES {
                        self.flush().await?;
                    }
                    self.batch.push(document);
                    self.batch_lines.push(number);
                    self.batch_bytes += size;
                    if self.batch.len() >= self.options.batch_size
                        || self.batch_bytes >= MAX_BATCH_BYTES
                    {
                        self.flush().await?;
                    }
                }
                Record::End { .. } => {}
            }
        }
        self.flush().await?;
        self.create_views().await?;
        if let Err(problem) = sequence.finish() {
            let line = if sequence.started() { number } else { 1 };
            return self.stop(
                self.current_name(),
                Stage::Read,
                problem.to_string(),
                Some(line),
            );
        }
        Ok(())
    }

    fn current_name(&self) -> Option<String> {
        self.collection
            .as_ref()
            .map(|c| self.report.collections[c.index].name.clone())
    }

    /// A record that cannot be used: skipped and listed, or the end of the import.
    async fn bad_record(&mut self, line: u64, problem: DumpProblem) -> Result<(), Stopped> {
        if !problem.is_record_local() || self.options.on_error == OnError::Stop {
            return self.fatal(line, problem).await;
        }
        self.fail(
            self.current_name(),
            Stage::Read,
            problem.to_string(),
            Some(line),
        );
        self.report.skipped += 1;
        Ok(())
    }

    /// A record the sequence counted but that cannot be written: skipped and listed, or
    /// the end of the import.
    async fn skip_counted(&mut self, line: u64, problem: DumpProblem) -> Result<(), Stopped> {
        self.bad_record(line, problem).await
    }

    /// A document refused before it is sent (nothing of it was written): a failure of its
    /// line; in stop mode the import stops after writing what came before.
    async fn refuse_document(&mut self, line: u64, message: String) -> Result<(), Stopped> {
        let name = self.current_name();
        if self.options.on_error == OnError::Stop {
            self.flush().await?;
            return self.stop(name, Stage::Write, message, Some(line));
        }
        self.fail(name, Stage::Write, message, Some(line));
        self.report.skipped += 1;
        Ok(())
    }

    /// Writes what is pending, then stops at `line`.
    async fn fatal(&mut self, line: u64, problem: DumpProblem) -> Result<(), Stopped> {
        self.flush().await?;
        self.stop(
            self.current_name(),
            Stage::Read,
            problem.to_string(),
            Some(line),
        )
    }

    fn fail(
        &mut self,
        collection: Option<String>,
        stage: Stage,
        message: String,
        line: Option<u64>,
    ) {
        if let Some(c) = &self.collection {
            if collection.as_deref() == Some(self.report.collections[c.index].name.as_str()) {
                self.report.collections[c.index].failures += 1;
            }
        }
        super::record_failure(
            &mut self.report,
            self.options,
            Failure {
                collection,
                stage,
                message,
                line,
                lines: None,
            },
        );
    }

    fn stop(
        &mut self,
        collection: Option<String>,
        stage: Stage,
        message: String,
        line: Option<u64>,
    ) -> Result<(), Stopped> {
        self.fail(collection.clone(), stage, message.clone(), line);
        self.report.stopped = Some(Failure {
            collection,
            stage,
            message,
            line,
            lines: None,
        });
        Err(Stopped)
    }

    fn message(&self, e: &mongodb::error::Error, during: &str) -> String {
        // Driver errors of running commands carry no credentials (only URI parsing could).
        format!("{during}: {e}")
    }

    async fn start_collection(&mut self, line: u64, spec: CollectionSpec) -> Result<(), Stopped> {
        self.report.collections.push(CollectionReport {
            name: spec.name.clone(),
            ..CollectionReport::default()
        });
        let index = self.report.collections.len() - 1;
        self.collection = Some(Current {
            index,
            collection: None,
        });
        // Untrusted: a name the server would take, only known options, checked, before
        // anything is sent; views are checked here too, though created at the end.
        if let Err(m) = super::spec::create_command(&spec) {
            return self.failed_step(
                line,
                Stage::Create,
                format!("invalid collection specification: {m}"),
                Some(spec.name),
            );
        }
        if spec.kind == "view" {
            self.views.push((line, spec));
            return Ok(());
        }
        if let Err(e) = create_collection(&self.database, &spec).await {
            let message = format!("creating the collection: {e}");
            return self.failed_step(line, Stage::Create, message, Some(spec.name));
        }
        if let Some(c) = self.collection.as_mut() {
            c.collection = Some(self.database.collection(&spec.name));
        }
        match create_indexes(&self.database, &spec).await {
            Ok(n) => self.report.collections[index].indexes = n,
            Err(e) => {
                let message = self.message(&e, "creating indexes");
                self.failed_step(line, Stage::Indexes, message, Some(spec.name))?;
            }
        }
        Ok(())
    }

    /// A failed creation step: listed (its documents are then skipped), or the end.
    fn failed_step(
        &mut self,
        line: u64,
        stage: Stage,
        message: String,
        collection: Option<String>,
    ) -> Result<(), Stopped> {
        if self.options.on_error == OnError::Stop {
            return self.stop(collection, stage, message, Some(line));
        }
        self.fail(collection, stage, message, Some(line));
        Ok(())
    }

    async fn create_views(&mut self) -> Result<(), Stopped> {
        for (line, spec) in std::mem::take(&mut self.views) {
            if let Err(e) = create_collection(&self.database, &spec).await {
                let message = format!("creating the view: {e}");
                self.failed_step(line, Stage::Create, message, Some(spec.name))?;
            }
        }
        Ok(())
    }

    /// Writes the pending batch. A document the server refuses is a failure of its line;
    /// a batch whose outcome is unknown (the connection broke) stops the import and names
    /// its lines.
    async fn flush(&mut self) -> Result<(), Stopped> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let documents = std::mem::take(&mut self.batch);
        let lines = std::mem::take(&mut self.batch_lines);
        self.batch_bytes = 0;
        let Some(current) = &self.collection else {
            return Ok(());
        };
        let (index, Some(collection)) = (current.index, current.collection.clone()) else {
            return Ok(());
        };
        let name = self.report.collections[index].name.clone();
        let refused = match self.options.mode {
            WriteMode::Insert => self.insert(&collection, &documents).await,
            WriteMode::Upsert => self.upsert(&name, &documents).await,
        };
        let refused = match refused {
            Ok(refused) => refused,
            Err(e) => {
                let failure = Failure {
                    collection: Some(name),
                    stage: Stage::Write,
                    message: e.message(),
                    line: None,
                    lines: Some((lines[0], lines[lines.len() - 1])),
                };
                self.report.collections[index].failures += 1;
                super::record_failure(&mut self.report, self.options, failure.clone());
                self.report.stopped = Some(failure);
                return Err(Stopped);
            }
        };
        let written = (documents.len() - refused.len()) as u64;
        self.report.collections[index].documents += written;
        self.report.documents += written;
        let stop = !refused.is_empty() && self.options.on_error == OnError::Stop;
        let mut stopped = None;
        for (i, message) in refused {
            let line = lines.get(i).copied();
            if stop && stopped.is_none() {
                stopped = Some(Failure {
                    collection: Some(name.clone()),
                    stage: Stage::Write,
                    message: message.clone(),
                    line,
                    lines: None,
                });
            }
            self.fail(Some(name.clone()), Stage::Write, message, line);
            self.report.skipped += 1;
        }
        if let Some(p) = &self.options.progress {
            p(Progress {
                documents: self.report.documents,
                bytes: self.bytes,
            });
        }
        if stop {
            self.report.stopped = stopped;
            return Err(Stopped);
        }
        Ok(())
    }

    /// Inserts unordered; returns the refused documents (batch index, message).
    async fn insert(
        &self,
        collection: &Collection<Document>,
        documents: &[Document],
    ) -> Result<Vec<(usize, String)>, BatchError> {
        match collection.insert_many(documents).ordered(false).await {
            Ok(_) => Ok(Vec::new()),
            Err(e) => match &*e.kind {
                DriverKind::InsertMany(failure) if failure.write_concern_error.is_none() => {
                    Ok(failure
                        .write_errors
                        .iter()
                        .flatten()
                        .map(|w| {
                            (
                                w.index,
                                format!("refused by the server ({}): {}", w.code, w.message),
                            )
                        })
                        .collect())
                }
                _ => Err(BatchError::from_driver(e)),
            },
        }
    }

    /// Replaces by `_id` or inserts, in one unordered `update` command.
    async fn upsert(
        &self,
        name: &str,
        documents: &[Document],
    ) -> Result<Vec<(usize, String)>, BatchError> {
        let mut refused = Vec::new();
        let mut updates = Vec::with_capacity(documents.len());
        let mut positions = Vec::with_capacity(documents.len());
        for (i, d) in documents.iter().enumerate() {
            match d.get("_id") {
                Some(id) => {
                    updates.push(Bson::Document(
                        doc! { "q": { "_id": id.clone() }, "u": d.clone(), "upsert": true },
                    ));
                    positions.push(i);
                }
                None => refused.push((i, "a document without `_id` cannot be upserted".to_owned())),
            }
        }
        if updates.is_empty() {
            return Ok(refused);
        }
        let mut command = doc! { "update": name, "updates": updates, "ordered": false };
        // `run_command` sends no write concern of its own: the database's (its URI's or its
        // `DbConfig`'s), as `insert_many` would use.
        if let Some(wc) = self.database.write_concern() {
            if let Ok(wc) = mongodb::bson::to_bson(wc) {
                command.insert("writeConcern", wc);
            }
        }
        let reply = self
            .database
            .run_command(command)
            .await
            .map_err(BatchError::from_driver)?;
        // Applied, but not as durably as asked: not counted as written.
        if let Ok(wce) = reply.get_document("writeConcernError") {
            return Err(BatchError::WriteConcern(format!(
                "({}): {}",
                wce.get_i32("code").unwrap_or(0),
                wce.get_str("errmsg").unwrap_or("")
            )));
        }
        if let Ok(errors) = reply.get_array("writeErrors") {
            for e in errors.iter().filter_map(Bson::as_document) {
                let index = e
                    .get_i32("index")
                    .ok()
                    .and_then(|i| usize::try_from(i).ok())
                    .unwrap_or(0);
                let code = e.get_i32("code").unwrap_or(0);
                let message = e.get_str("errmsg").unwrap_or("");
                refused.push((
                    positions.get(index).copied().unwrap_or(index),
                    format!("refused by the server ({code}): {message}"),
                ));
            }
        }
        refused.sort_unstable();
        Ok(refused)
    }
}

/// The size of `document` as BSON, or why neither the client nor the server would take it.
fn document_size(document: &Document) -> Result<usize, String> {
    let mut bytes = Vec::new();
    if let Err(e) = document.to_writer(&mut bytes) {
        return Err(format!(
            "refused before sending (not valid BSON: {e}); nothing of it was written"
        ));
    }
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "refused before sending: {} bytes, over the {MAX_DOCUMENT_BYTES} bytes a document may have; nothing of it was written",
            bytes.len()
        ));
    }
    Ok(bytes.len())
}

/// A write batch that failed as a whole.
enum BatchError {
    /// Refused by the client before anything was sent.
    NotSent(mongodb::error::Error),
    /// The server applied the writes but reported a write-concern error.
    WriteConcern(String),
    /// The connection broke or the server failed: some documents may have been written.
    Unknown(mongodb::error::Error),
}

impl BatchError {
    fn from_driver(e: mongodb::error::Error) -> Self {
        match &*e.kind {
            DriverKind::InvalidArgument { .. }
            | DriverKind::BsonSerialization(_)
            | DriverKind::ServerSelection { .. } => BatchError::NotSent(e),
            DriverKind::InsertMany(f) if f.write_concern_error.is_some() => {
                BatchError::WriteConcern(format!("{e}"))
            }
            _ => BatchError::Unknown(e),
        }
    }

    fn message(&self) -> String {
        match self {
            BatchError::NotSent(e) => {
                format!("writing a batch: refused before sending, nothing of it was written: {e}")
            }
            BatchError::WriteConcern(m) => format!(
                "writing a batch: the server applied it but reported a write-concern error {m}; its documents may not be durable"
            ),
            BatchError::Unknown(e) => {
                format!("writing a batch; some of its documents may have been written: {e}")
            }
        }
    }
}
