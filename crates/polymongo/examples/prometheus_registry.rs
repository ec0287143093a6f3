//! polymongo's figures in an application's own `prometheus_client` registry, beside the
//! application's series, in one exposition (feature `prometheus-client`).
//!
//! Uses `MONGODB_URI` when it is set; otherwise starts a local test server (the test kit's
//! choice, installed on first run into a cached Python environment).
//!
//! ```text
//! cargo run -p polymongo --example prometheus_registry --features prometheus-client
//! ```

use std::time::Duration;

use mongodb::bson::doc;
use polymongo::{Model, PolyMongo};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    total: i64,
}

impl Model for Order {
    const COLLECTION: &'static str = "orders";
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the server (if we started one) alive until the end of main.
    let (uri, _server) = polymongo_testkit::uri_from_env_or_start().await?;
    let poly = PolyMongo::builder().uri(&uri).build().await?;

    // The application's registry: its own counter, and polymongo's collector.
    let mut registry = Registry::default();
    let requests = Counter::<u64>::default();
    registry.register("app_requests", "Requests served", requests.clone());
    registry.register_collector(Box::new(polymongo::metrics::collector(&poly)));

    // Some work on two tenants, counted through `run`.
    let orders = poly.model::<Order>();
    for (tenant, n) in [("tenant_1", 3), ("tenant_2", 5)] {
        let db = orders.db(tenant)?;
        for total in 0..n {
            db.run(|c| c.insert_one(Order { total })).await?;
            db.run(|c| c.count_documents(doc! {})).await?;
            requests.inc();
        }
    }

    // One exposition (OpenMetrics text), the application's series and polymongo's.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    print!("{text}");

    poly.close_all(Duration::from_secs(5)).await;
    Ok(())
}
