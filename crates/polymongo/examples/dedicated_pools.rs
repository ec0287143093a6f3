//! Per-database pools: a database on another cluster, a dedicated pool closed when idle, a
//! noisy tenant capped, and per-tenant indexes.
//!
//! Starts two local test servers (the test kit) to stand for two clusters.
//!
//! ```text
//! cargo run --example dedicated_pools
//! ```

use std::time::Duration;

use mongodb::bson::doc;
use mongodb::options::IndexOptions;
use mongodb::IndexModel;
use polymongo::{DbConfig, Model, PolyMongo};
use polymongo_testkit::TestServer;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    number: i64,
    customer: String,
}

impl Model for Order {
    const COLLECTION: &'static str = "orders";

    fn indexes() -> Vec<IndexModel> {
        vec![IndexModel::builder()
            .keys(doc! { "number": 1 })
            .options(IndexOptions::builder().unique(true).build())
            .build()]
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let main_cluster = TestServer::start().await?;
    let analytics_cluster = TestServer::start().await?;

    let poly = PolyMongo::builder()
        .uri(main_cluster.uri())
        .default_db("main")
        .max_pool_size(10)
        // Another cluster, shared by every database routed there.
        .db("analytics", DbConfig::new().uri(analytics_cluster.uri()))
        // A pool of its own, closed after 200 ms without use.
        .db(
            "cache",
            DbConfig::new()
                .max_connections(2)
                .auto_close(Duration::from_millis(200)),
        )
        // A tenant that may not hold more than 2 operations of the shared pool at once.
        .db("big_tenant", DbConfig::new().max_concurrent_ops(2))
        .build()
        .await?;

    let orders = poly.model::<Order>();
    for (db, n) in [
        ("tenant_a", 1),
        ("analytics", 2),
        ("cache", 3),
        ("big_tenant", 4),
    ] {
        // `acquire` creates the declared indexes on first use and waits for a slot if capped.
        let h = orders.acquire(db).await?;
        h.insert_one(Order {
            number: n,
            customer: format!("{db} customer"),
        })
        .await?;
        println!("{db}: {} order(s)", h.count_documents(doc! {}).await?);
    }
    println!(
        "clients: {} (main, analytics cluster, cache's own); dedicated open: {}",
        poly.live_clients(),
        poly.open_dedicated_pools()
    );

    // The cache pool closes once idle past its ttl, and reopens on the next use.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while poly.open_dedicated_pools() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "cache pool closed for idleness; dedicated open: {}",
        poly.open_dedicated_pools()
    );
    orders.db("cache")?.find_one(doc! {}).await?;
    println!(
        "used again; dedicated open: {}",
        poly.open_dedicated_pools()
    );

    // Reconfigure at run time: move a tenant to the analytics cluster.
    poly.scale()
        .set_db(&["tenant_b"], DbConfig::new().uri(analytics_cluster.uri()))
        .await?;
    orders
        .db("tenant_b")?
        .insert_one(Order {
            number: 5,
            customer: "b".into(),
        })
        .await?;

    println!("closed: {:?}", poly.close_all(Duration::from_secs(5)).await);
    Ok(())
}
