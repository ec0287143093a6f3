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
    ImportOptions, ImportReport, Line, OnError, Progress, Stage, WriteMode, MAX_LINE_BYTES,
};
use crate::floor::error::{Error, Result};
use crate::floor::name::validate_collection_name;
use crate::registry::entry::DbEntry;

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
            self.import_from(db, BufReader::with_capacity(64 * 1024, gz), options)
                .await
        } else {
            self.import_from(db, input, options).await
        }
    }

    async fn import_from<R>(
        &self,
        db: &str,
        mut input: R,
        options: ImportOptions,
    ) -> Result<ImportReport>
    where
        R: AsyncBufRead + Unpin,
    {
        let lease = self.registry.lease(db)?;
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
            views: Vec::new(),
            bytes: 0,
            read_skips: 0,
        };
        let outcome = run.read_all(&mut input).await;
        let report = run.report;
        match outcome {
            Ok(()) => {
                tracing::info!(
                    database = db,
                    documents = report.documents,
                    failures = report.failures.len(),
                    "dump imported"
                );
                Ok(report)
            }
            Err(Stopped) => {
                tracing::warn!(database = db, %report, "import stopped");
                Err(Error::Import(Box::new(report)))
            }
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
    views: Vec<(u64, CollectionSpec)>,
    bytes: u64,
    /// Records skipped because they could not be read (not counted by the sequence).
    read_skips: u64,
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
                    self.bad_record(number, problem).await?;
                    continue;
                }
            };
            match sequence.accept(&record) {
                Ok(()) => {}
                // The records skipped on the way account for the difference: the file is
                // whole, and every skipped record is already listed.
                Err(DumpProblem::CountMismatch { expected, found })
                    if expected.0 >= found.0
                        && expected.1 >= found.1
                        && (expected.0 - found.0) + (expected.1 - found.1) == self.read_skips => {}
                Err(problem) => {
                    self.bad_record(number, problem).await?;
                    continue;
                }
            }
            match record {
                Record::Header(_) => {
                    if self.options.drop_target_first {
                        let dropped = self.database.drop().await;
                        // Whatever the outcome, the database may be gone: the models'
                        // indexes are ensured again on their next use.
                        self.entry.renew_models();
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
                        self.bad_record(
                            number,
                            DumpProblem::InvalidRecord(
                                "a document in a view or a collection that could not be created"
                                    .into(),
                            ),
                        )
                        .await?;
                        continue;
                    }
                    self.batch.push(document);
                    self.batch_lines.push(number);
                    if self.batch.len() >= self.options.batch_size {
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
        self.read_skips += 1;
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
        self.report.failures.push(Failure {
            collection,
            stage,
            message,
            line,
            lines: None,
        });
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
        if let Err(e) = validate_collection_name(&spec.name) {
            return self.failed_step(line, Stage::Create, e.to_string(), Some(spec.name));
        }
        if spec.kind == "view" {
            self.views.push((line, spec));
            return Ok(());
        }
        if let Err(e) = create_collection(&self.database, &spec).await {
            let message = self.message(&e, "creating the collection");
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
                let message = self.message(&e, "creating the view");
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
                let message = self.message(
                    &e,
                    "writing a batch; some of its documents may have been written",
                );
                let failure = Failure {
                    collection: Some(name),
                    stage: Stage::Write,
                    message,
                    line: None,
                    lines: Some((lines[0], lines[lines.len() - 1])),
                };
                self.report.collections[index].failures += 1;
                self.report.failures.push(failure.clone());
                self.report.stopped = Some(failure);
                return Err(Stopped);
            }
        };
        let written = (documents.len() - refused.len()) as u64;
        self.report.collections[index].documents += written;
        self.report.documents += written;
        let stop = !refused.is_empty() && self.options.on_error == OnError::Stop;
        for (i, message) in refused {
            let line = lines.get(i).copied();
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
            self.report.stopped = self
                .report
                .failures
                .iter()
                .rev()
                .find(|f| f.stage == Stage::Write)
                .cloned();
            return Err(Stopped);
        }
        Ok(())
    }

    /// Inserts unordered; returns the refused documents (batch index, message).
    async fn insert(
        &self,
        collection: &Collection<Document>,
        documents: &[Document],
    ) -> mongodb::error::Result<Vec<(usize, String)>> {
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
                _ => Err(e),
            },
        }
    }

    /// Replaces by `_id` or inserts, in one unordered `update` command.
    async fn upsert(
        &self,
        name: &str,
        documents: &[Document],
    ) -> mongodb::error::Result<Vec<(usize, String)>> {
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
        let reply = self
            .database
            .run_command(doc! { "update": name, "updates": updates, "ordered": false })
            .await?;
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
