//! Copy and drop of whole databases.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::TryStreamExt;
use mongodb::bson::{doc, RawDocumentBuf};
use mongodb::error::ErrorKind as DriverKind;
use mongodb::Database;
use serde::Serialize;

use super::export::collection_specs;
use super::format::CollectionSpec;
use super::{
    create_collection, create_indexes, Bulk, CollectionReport, Failure, ImportOptions,
    ImportReport, OnError, Progress, Stage,
};
use crate::floor::error::{Error, OpKind, Result};
use crate::registry::DbLease;

/// How one collection was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CopyPath {
    /// By the server itself (`$out` into the target database): both databases are on one
    /// pool and the server accepted it.
    ServerSide,
    /// Read by a cursor and written in unordered batches by polymongo (across clusters, or
    /// where the server has no cross-database `$out`).
    Streamed,
}

/// The result of [`Bulk::copy_database`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CopyReport {
    /// The source database.
    pub source: String,
    /// What was written to the target (its `database` is the target's name).
    pub written: ImportReport,
    /// How each collection was copied.
    pub paths: BTreeMap<String, CopyPath>,
}

impl Bulk<'_> {
    /// Copies database `source` into `target` — collections with their options and indexes,
    /// documents, views — wherever routing puts each of them.
    ///
    /// On one pool the server copies each collection itself (`$out` into the target
    /// database, MongoDB 4.4 and later) after the target collection and its indexes are
    /// created, but only into a target collection that is empty; where that is refused, where
    /// the target already has documents, and across clusters, documents are streamed (cursor
    /// batches, unordered `insert_many` of `batch_size`). Both paths therefore give the same
    /// result: a copy merges into an existing target (a document whose `_id` is there already
    /// is refused and reported) and never replaces or removes target data, unless
    /// `drop_target_first` asks for the target database to be dropped first. (A document
    /// written to the target by someone else between the emptiness check and the end of
    /// `$out` would be replaced; do not write to a copy's target while it runs.) `options` also says whether to drop
    /// the target first, to stop or continue on refused documents, and where progress goes.
    /// Documents are inserted (a copy does not upsert).
    ///
    /// # Errors
    /// [`Error::Config`] when source and target are the same database, [`Error::Import`]
    /// with the report when the copy stopped early, [`Error::InvalidName`],
    /// [`Error::Closed`], and the driver's errors reading the source.
    pub async fn copy_database(
        &self,
        source: &str,
        target: &str,
        options: ImportOptions,
    ) -> Result<CopyReport> {
        if source == target {
            return Err(Error::Config {
                field: "target",
                message: format!("copying {source:?} onto itself"),
            });
        }
        if options.batch_size == 0 {
            return Err(Error::Config {
                field: "batch_size",
                message: "must be at least 1".into(),
            });
        }
        let from_lease = self.registry.lease(source)?;
        let to_lease = self.registry.lease(target)?;
        let (from, to) = (&from_lease.entry, &to_lease.entry);
        let same_pool = Arc::ptr_eq(&from.pool, &to.pool);
        let read_error = |e| Error::from_driver(e, from.pool.label());
        let write_error = |e| Error::from_driver_op(e, to.pool.label(), OpKind::Write);
        let specs = collection_specs(&from.database).await.map_err(read_error)?;
        // `$out` replaces target collections and a drop-first copy drops the database: the
        // models' indexes there are ensured again on their next use, also when this future is
        // dropped after the server did either.
        let renew = to.renew_models_after();
        if options.drop_target_first {
            to.database.drop().await.map_err(write_error)?;
        }
        let mut copy = Copier {
            from: &from.database,
            to: &to.database,
            options: &options,
            report: CopyReport {
                source: source.to_owned(),
                written: ImportReport {
                    database: target.to_owned(),
                    ..ImportReport::default()
                },
                paths: BTreeMap::new(),
            },
        };
        let outcome = copy.all(&specs, same_pool).await;
        let report = copy.report;
        drop(renew);
        match outcome {
            Ok(()) => {
                tracing::info!(
                    source,
                    target,
                    documents = report.written.documents,
                    "database copied"
                );
                Ok(report)
            }
            Err(Stop) => Err(Error::Import(Box::new(report.written))),
        }
    }

    /// Drops database `db` on the cluster it is routed to. Dropping a database that does not
    /// exist succeeds.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::Closed`], and the driver's errors.
    pub async fn drop_database(&self, db: &str) -> Result<()> {
        drop_on(&self.registry.lease(db)?).await
    }
}

/// [`Bulk::drop_database`] on a database already leased (on the cluster its owner chose).
pub(crate) async fn drop_on(lease: &DbLease) -> Result<()> {
    let slot = &lease.entry;
    // The models' indexes go with the database: ensured again on their next use, whatever
    // the outcome (a failed or cut drop may still have been carried out).
    let renew = slot.renew_models_after();
    let dropped = slot.database.drop().await;
    drop(renew);
    dropped.map_err(|e| Error::from_driver_op(e, slot.pool.label(), OpKind::Write))?;
    tracing::info!(database = %slot.database.name(), cluster = %slot.pool.label(), "database dropped");
    Ok(())
}

struct Stop;

struct Copier<'a> {
    from: &'a Database,
    to: &'a Database,
    options: &'a ImportOptions,
    report: CopyReport,
}

impl Copier<'_> {
    async fn all(&mut self, specs: &[CollectionSpec], same_pool: bool) -> Result<(), Stop> {
        for spec in specs {
            self.report.written.collections.push(CollectionReport {
                name: spec.name.clone(),
                ..CollectionReport::default()
            });
            if !self.create(spec).await? {
                continue;
            }
            if spec.kind == "view" {
                continue;
            }
            // `$out` replaces its target: it is used only where the target collection is
            // empty, so that it writes what the streamed path would (which merges into a
            // non-empty target, duplicates refused and reported).
            if same_pool
                && self.target_is_empty(&spec.name).await
                && self.server_side(&spec.name).await
            {
                self.report
                    .paths
                    .insert(spec.name.clone(), CopyPath::ServerSide);
            } else {
                self.report
                    .paths
                    .insert(spec.name.clone(), CopyPath::Streamed);
                self.streamed(&spec.name).await?;
            }
        }
        Ok(())
    }

    fn fail(&mut self, collection: &str, stage: Stage, message: String) -> Result<(), Stop> {
        let failure = Failure {
            collection: Some(collection.to_owned()),
            stage,
            message,
            line: None,
            lines: None,
        };
        if let Some(c) = self.report.written.collections.last_mut() {
            c.failures += 1;
        }
        super::record_failure(&mut self.report.written, self.options, failure.clone());
        if self.options.on_error == OnError::Stop {
            self.report.written.stopped = Some(failure);
            return Err(Stop);
        }
        Ok(())
    }

    /// Creates the collection (or view) with its options, then its indexes. `false`: it
    /// could not be created, and its documents are not copied.
    async fn create(&mut self, spec: &CollectionSpec) -> Result<bool, Stop> {
        if let Err(e) = create_collection(self.to, spec).await {
            self.fail(&spec.name, Stage::Create, format!("creating it: {e}"))?;
            return Ok(false);
        }
        match create_indexes(self.to, spec).await {
            Ok(n) => {
                if let Some(c) = self.report.written.collections.last_mut() {
                    c.indexes = n;
                }
            }
            Err(e) => self.fail(&spec.name, Stage::Indexes, format!("creating indexes: {e}"))?,
        }
        Ok(true)
    }

    /// Whether the target collection has no document (`false` when that cannot be told).
    async fn target_is_empty(&self, name: &str) -> bool {
        let found = self
            .to
            .collection::<RawDocumentBuf>(name)
            .find_one(doc! {})
            .projection(doc! { "_id": 1 })
            .await;
        matches!(found, Ok(None))
    }

    /// `$out` into the target database. `false` when the server refuses it (nothing is
    /// written then: `$out` replaces the target only when it completes).
    async fn server_side(&mut self, name: &str) -> bool {
        let pipeline = [doc! { "$out": { "db": self.to.name(), "coll": name } }];
        let cursor = self
            .from
            .collection::<RawDocumentBuf>(name)
            .aggregate(pipeline)
            .await;
        if let Err(e) = cursor {
            tracing::debug!(collection = name, error = %crate::floor::redacted_error::driver(&e), "server-side copy refused; streaming instead");
            return false;
        }
        match self
            .to
            .collection::<RawDocumentBuf>(name)
            .count_documents(doc! {})
            .await
        {
            Ok(n) => {
                if let Some(c) = self.report.written.collections.last_mut() {
                    c.documents = n;
                }
                self.report.written.documents += n;
                self.progress();
                true
            }
            Err(e) => {
                tracing::debug!(collection = name, error = %crate::floor::redacted_error::driver(&e), "counting after $out failed");
                true
            }
        }
    }

    async fn streamed(&mut self, name: &str) -> Result<(), Stop> {
        let source = self.from.collection::<RawDocumentBuf>(name);
        let target = self.to.collection::<RawDocumentBuf>(name);
        let mut cursor = match source.find(doc! {}).await {
            Ok(c) => c,
            Err(e) => return self.fail(name, Stage::Read, format!("reading the source: {e}")),
        };
        let mut batch = Vec::with_capacity(self.options.batch_size);
        loop {
            let next = match cursor.try_next().await {
                Ok(next) => next,
                Err(e) => {
                    self.write(name, &target, &mut batch).await?;
                    let failure = Failure {
                        collection: Some(name.to_owned()),
                        stage: Stage::Read,
                        message: format!("reading the source: {e}"),
                        line: None,
                        lines: None,
                    };
                    super::record_failure(&mut self.report.written, self.options, failure.clone());
                    self.report.written.stopped = Some(failure);
                    return Err(Stop);
                }
            };
            match next {
                Some(document) => {
                    batch.push(document);
                    if batch.len() >= self.options.batch_size {
                        self.write(name, &target, &mut batch).await?;
                    }
                }
                None => break,
            }
        }
        self.write(name, &target, &mut batch).await
    }

    async fn write(
        &mut self,
        name: &str,
        target: &mongodb::Collection<RawDocumentBuf>,
        batch: &mut Vec<RawDocumentBuf>,
    ) -> Result<(), Stop> {
        if batch.is_empty() {
            return Ok(());
        }
        let count = batch.len() as u64;
        let result = target.insert_many(batch.iter()).ordered(false).await;
        batch.clear();
        let refused: Vec<String> = match result {
            Ok(_) => Vec::new(),
            Err(e) => match &*e.kind {
                DriverKind::InsertMany(f) if f.write_concern_error.is_none() => f
                    .write_errors
                    .iter()
                    .flatten()
                    .map(|w| {
                        format!(
                            "document {} of a batch refused by the server ({}): {}",
                            w.index, w.code, w.message
                        )
                    })
                    .collect(),
                _ => {
                    let failure = Failure {
                        collection: Some(name.to_owned()),
                        stage: Stage::Write,
                        message: format!(
                            "writing a batch of {count}; some may have been written: {e}"
                        ),
                        line: None,
                        lines: None,
                    };
                    super::record_failure(&mut self.report.written, self.options, failure.clone());
                    self.report.written.stopped = Some(failure);
                    return Err(Stop);
                }
            },
        };
        let written = count - refused.len() as u64;
        if let Some(c) = self.report.written.collections.last_mut() {
            c.documents += written;
        }
        self.report.written.documents += written;
        self.report.written.skipped += refused.len() as u64;
        self.progress();
        for message in refused {
            self.fail(name, Stage::Write, message)?;
        }
        Ok(())
    }

    fn progress(&self) {
        if let Some(p) = &self.options.progress {
            p(Progress {
                documents: self.report.written.documents,
                bytes: 0,
            });
        }
    }
}
