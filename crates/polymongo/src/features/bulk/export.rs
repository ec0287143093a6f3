//! Export: a database to the dump format, streamed, or into memory.

use std::sync::Arc;

use async_compression::tokio::write::GzipEncoder;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, DateTime, Document, RawDocumentBuf};
use mongodb::Database;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::format::{self, CollectionSpec, Header, Record};
use super::{
    producer, Bulk, CollectionReport, Dump, ExportOptions, ExportReport, Progress, FORMAT_VERSION,
    WRITE_CHUNK,
};
use crate::floor::error::{Error, Result};
use crate::registry::DbLease;

/// Documents between two progress reports when chunks fill slowly.
const PROGRESS_EVERY: u64 = 500;

impl Bulk<'_> {
    /// The whole database `db` in memory: collections with their options and indexes, and
    /// every document.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::Closed`], and the driver's errors.
    pub async fn export(&self, db: &str) -> Result<Dump> {
        let mut bytes = Vec::new();
        self.export_stream(db, &mut bytes, ExportOptions::default())
            .await?;
        Dump::read_from(&bytes[..])
    }

    /// Writes database `db` to `out` in the dump format, with bounded memory whatever its
    /// size: documents are read a cursor batch at a time and written in chunks of 256 KiB,
    /// each awaited before more is read. Collections come first (sorted by name), then views.
    /// `out` is flushed, not shut down (with gzip, the compressed stream is finished).
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::Closed`], the driver's errors, and
    /// [`Error::Io`] when `out` fails.
    pub async fn export_stream<W>(
        &self,
        db: &str,
        out: W,
        options: ExportOptions,
    ) -> Result<ExportReport>
    where
        W: AsyncWrite + Unpin,
    {
        let lease = self.registry.lease(db)?;
        export_on(&lease, db, out, options).await
    }
}

/// [`Bulk::export_stream`] from a database already leased (on the cluster its owner chose).
pub(crate) async fn export_on<W>(
    lease: &DbLease,
    db: &str,
    out: W,
    options: ExportOptions,
) -> Result<ExportReport>
where
    W: AsyncWrite + Unpin,
{
    if options.gzip {
        let mut gz = GzipEncoder::new(out);
        let report = export_into(lease, db, &mut gz, &options).await?;
        gz.shutdown()
            .await
            .map_err(io("finishing the gzip stream"))?;
        Ok(report)
    } else {
        let mut out = out;
        export_into(lease, db, &mut out, &options).await
    }
}

async fn export_into<W>(
    lease: &DbLease,
    db: &str,
    out: &mut W,
    options: &ExportOptions,
) -> Result<ExportReport>
where
    W: AsyncWrite + Unpin,
{
    let slot = &lease.entry;
    let cluster = slot.pool.label().to_owned();
    let driver = |e| Error::from_driver(e, &cluster);
    let database = &slot.database;
    let specs = collection_specs(database).await.map_err(driver)?;

    let mut report = ExportReport {
        database: db.to_owned(),
        ..ExportReport::default()
    };
    let mut buf = Vec::with_capacity(WRITE_CHUNK + 64 * 1024);
    format::encode(
        &Record::Header(Header {
            version: FORMAT_VERSION,
            database: db.to_owned(),
            created: DateTime::now(),
            producer: producer(),
        }),
        &mut buf,
    );
    for spec in &specs {
        format::encode(&Record::Collection(spec.clone()), &mut buf);
        let mut collection = CollectionReport {
            name: spec.name.clone(),
            indexes: spec.indexes.len() as u64,
            ..CollectionReport::default()
        };
        if spec.kind != "view" {
            let coll = database.collection::<RawDocumentBuf>(&spec.name);
            let mut find = coll.find(doc! {});
            if let Some(n) = options.batch_size {
                find = find.batch_size(n);
            }
            let mut cursor = find.await.map_err(driver)?;
            while let Some(raw) = cursor.try_next().await.map_err(driver)? {
                let document = Document::try_from(raw.as_ref()).map_err(|e| {
                    Error::Driver(mongodb::error::Error::custom(Arc::new(format!(
                        "a document of {db}.{} is not valid BSON: {e}",
                        spec.name
                    ))))
                })?;
                format::encode_document(document, &mut buf);
                collection.documents += 1;
                report.documents += 1;
                let flushed = buf.len() >= WRITE_CHUNK;
                if flushed {
                    flush(out, &mut buf, &mut report.bytes).await?;
                }
                // Small documents fill a chunk slowly: report at least every
                // `PROGRESS_EVERY` documents too.
                if flushed || report.documents.is_multiple_of(PROGRESS_EVERY) {
                    if let Some(p) = &options.progress {
                        p(Progress {
                            documents: report.documents,
                            bytes: report.bytes,
                        });
                    }
                }
            }
        }
        report.collections.push(collection);
    }
    format::encode(
        &Record::End {
            collections: specs.len() as u64,
            documents: report.documents,
        },
        &mut buf,
    );
    flush(out, &mut buf, &mut report.bytes).await?;
    out.flush().await.map_err(io("flushing the dump"))?;
    if let Some(p) = &options.progress {
        p(Progress {
            documents: report.documents,
            bytes: report.bytes,
        });
    }
    tracing::info!(
        database = db,
        collections = specs.len(),
        documents = report.documents,
        "database exported"
    );
    Ok(report)
}

async fn flush<W: AsyncWrite + Unpin>(
    out: &mut W,
    buf: &mut Vec<u8>,
    bytes: &mut u64,
) -> Result<()> {
    out.write_all(buf).await.map_err(io("writing the dump"))?;
    *bytes += buf.len() as u64;
    buf.clear();
    Ok(())
}

pub(crate) fn io(during: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |e| Error::Io {
        during,
        source: Arc::new(e),
    }
}

/// The database's collections and views (not `system.*`), collections first, each sorted by
/// name, with their options and indexes.
pub(crate) async fn collection_specs(
    database: &Database,
) -> mongodb::error::Result<Vec<CollectionSpec>> {
    // `listCollections` through a cursor command rather than `list_collections()`: the typed
    // specification fails to decode on servers that send `info.uuid` as a string.
    let mut cursor = database
        .run_cursor_command(doc! { "listCollections": 1 })
        .await?;
    let mut specs = Vec::new();
    while let Some(entry) = cursor.try_next().await? {
        let Ok(name) = entry.get_str("name") else {
            continue;
        };
        if name.starts_with("system.") {
            continue;
        }
        let kind = entry.get_str("type").unwrap_or("collection").to_owned();
        let options = entry.get_document("options").cloned().unwrap_or_default();
        let indexes = if kind == "view" {
            Vec::new()
        } else {
            index_specs(database, name).await?
        };
        specs.push(CollectionSpec {
            name: name.to_owned(),
            kind,
            options,
            indexes,
        });
    }
    specs.sort_by(|a, b| (a.kind == "view", &a.name).cmp(&(b.kind == "view", &b.name)));
    Ok(specs)
}

async fn index_specs(
    database: &Database,
    collection: &str,
) -> mongodb::error::Result<Vec<Document>> {
    let mut cursor = database
        .run_cursor_command(doc! { "listIndexes": collection })
        .await?;
    let mut indexes = Vec::new();
    while let Some(mut index) = cursor.try_next().await? {
        if index.get_str("name") == Ok("_id_") {
            continue;
        }
        // Server bookkeeping, not part of the specification.
        index.remove("v");
        index.remove("ns");
        indexes.push(index);
    }
    Ok(indexes)
}
