//! Bulk tasks: export a tenant's database to a gzip dump, import it as another tenant, copy
//! a database, drop one — with the reports each step returns.
//!
//! Uses `MONGODB_URI` when it is set; otherwise starts a local test server.
//!
//! ```text
//! cargo run --example bulk
//! ```

use std::time::Duration;

use mongodb::bson::{doc, oid::ObjectId, DateTime};
use polymongo::bulk::{ExportOptions, ImportOptions, OnError};
use polymongo::{Model, PolyMongo};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Invoice {
    #[serde(rename = "_id")]
    id: ObjectId,
    customer: String,
    cents: i64,
    issued: DateTime,
}
impl Model for Invoice {
    const COLLECTION: &'static str = "invoices";
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (uri, _server) = polymongo_testkit::uri_from_env_or_start().await?;
    let poly = PolyMongo::builder().uri(&uri).build().await?;
    let invoices = poly.model::<Invoice>();
    invoices
        .db("tenant_a")?
        .insert_many((0..1_000).map(|i| Invoice {
            id: ObjectId::new(),
            customer: format!("customer {}", i % 37),
            cents: 1_000 + i,
            issued: DateTime::now(),
        }))
        .await?;

    // Export to a gzip file, streamed: memory stays bounded whatever the database's size.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tenant_a.ndjson.gz");
    let file = tokio::fs::File::create(&path).await?;
    let exported = poly
        .bulk()
        .export_stream(
            "tenant_a",
            tokio::io::BufWriter::new(file),
            ExportOptions::default()
                .gzip(true)
                .progress(|p| println!("  exported {} documents", p.documents)),
        )
        .await?;
    let size = tokio::fs::metadata(&path).await?.len();
    println!(
        "exported {} documents ({} bytes of dump, {size} bytes gzipped)",
        exported.documents, exported.bytes
    );

    // Import it as another tenant; ObjectIds, dates and 64-bit integers keep their types.
    let file = tokio::fs::File::open(&path).await?;
    let imported = poly
        .bulk()
        .import_stream(
            "tenant_b",
            file,
            ImportOptions::default().on_error(OnError::Continue),
        )
        .await?;
    println!("imported: {imported}");
    let one = invoices.db("tenant_b")?.find_one(doc! {}).await?;
    println!("a document of tenant_b: {one:?}");

    // Copy and drop whole databases; routing decides where each lives.
    let copied = poly
        .bulk()
        .copy_database("tenant_b", "tenant_c", ImportOptions::default())
        .await?;
    println!(
        "copied {} documents ({:?})",
        copied.written.documents, copied.paths
    );
    poly.bulk().drop_database("tenant_c").await?;
    println!("dropped tenant_c");

    poly.close_all(Duration::from_secs(5)).await;
    Ok(())
}
