//! OpenTelemetry: the library's spans exported through `tracing-opentelemetry`, here to
//! standard output with the `opentelemetry-stdout` exporter (swap in an OTLP exporter to send
//! them to a tracing backend).
//!
//! Each operation run through `DbHandle::run` is a `CLIENT` span named `{operation}
//! {collection}` (`insert orders`, `find orders`) with the attributes of OpenTelemetry's
//! MongoDB conventions: `db.system.name`, `db.namespace`, `db.collection.name`,
//! `db.operation.name`, `server.address`, `server.port`, and on failure `error.type`,
//! `db.response.status_code` and an `Error` status. A transaction is a `transaction` span.
//!
//! Uses `MONGODB_URI` when it is set; otherwise starts a local test server that runs
//! transactions.
//!
//! ```text
//! cargo run -p polymongo --example opentelemetry
//! ```

use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::doc;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use polymongo::{Model, PolyMongo};
use polymongo_testkit::Capability;
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    _id: i64,
    item: String,
    total: i64,
}
impl Model for Order {
    const COLLECTION: &'static str = "orders";
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the server (if we started one) alive until the end of main.
    let (uri, _server) =
        polymongo_testkit::uri_from_env_or_start_for(&[Capability::Transactions]).await?;

    // Spans go to stdout as each one ends (a simple processor; a service would batch them).
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .with_resource(
            Resource::builder()
                .with_service_name("polymongo-example")
                .build(),
        )
        .build();
    let tracer = provider.tracer("polymongo-example");
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer)),
    )?;

    let poly = PolyMongo::builder()
        .uri(&uri)
        .default_db("shop")
        .max_pool_size(4)
        .build()
        .await?;
    let orders = poly.model::<Order>().db("tenant_otel")?;
    // A fresh start, so the duplicate below is the only failure.
    orders.run(|c| c.delete_many(doc! {})).await?;

    // Spans: `insert orders`, `find orders`, `update orders`, `countDocuments orders`.
    orders
        .run(|c| {
            c.insert_many([
                Order {
                    _id: 1,
                    item: "tea".into(),
                    total: 4,
                },
                Order {
                    _id: 2,
                    item: "cake".into(),
                    total: 7,
                },
            ])
        })
        .await?;
    let big: Vec<Order> = orders
        .run(|c| c.find(doc! { "total": { "$gt": 5 } }))
        .await?
        .try_collect()
        .await?;
    println!("orders over 5: {big:?}");
    orders
        .run(|c| c.update_one(doc! { "_id": 1 }, doc! { "$set": { "total": 5 } }))
        .await?;
    let count = orders.run(|c| c.count_documents(doc! {})).await?;
    println!("{count} orders");

    // A failure: `error.type` and `db.response.status_code` are "11000", the status Error.
    let duplicate = orders
        .run(|c| {
            c.insert_one(Order {
                _id: 1,
                item: "again".into(),
                total: 1,
            })
        })
        .await;
    println!("duplicate insert: {}", duplicate.unwrap_err());

    // A `transaction` span around the driver's transaction.
    let committed = poly
        .transaction(["tenant_otel"])
        .run(async |session| {
            orders
                .insert_one(Order {
                    _id: 3,
                    item: "scone".into(),
                    total: 3,
                })
                .session(&mut *session)
                .await?;
            Ok(())
        })
        .await;
    println!("transaction: {committed:?}");

    poly.close_all(Duration::from_secs(5)).await;
    provider.shutdown()?;
    Ok(())
}
