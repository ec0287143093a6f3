//! Transactions: an order and its ledger entry committed together, an application error that
//! aborts, and the typed error for databases on different pools.
//!
//! Uses `MONGODB_URI` when it is set (a replica set also runs the cross-database part);
//! otherwise starts a local test server, which runs transactions within one database.
//!
//! ```text
//! cargo run --example transactions
//! ```

use std::time::Duration;

use mongodb::bson::doc;
use polymongo::{DbConfig, Error, Model, PolyMongo};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    item: String,
    total: i64,
}
impl Model for Order {
    const COLLECTION: &'static str = "orders";
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    credit: i64,
}
impl Model for Entry {
    const COLLECTION: &'static str = "ledger";
}

/// The application's reason to abort, carried through the driver's error.
#[derive(Debug)]
struct OutOfStock(String);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (uri, _server) = polymongo_testkit::uri_from_env_or_start().await?;
    let poly = PolyMongo::builder()
        .uri(&uri)
        .default_db("shop")
        // A dedicated pool: a transaction cannot span it and the shared pool.
        .db("reports", DbConfig::new().max_connections(2))
        .build()
        .await?;
    let (orders, ledger) = (poly.model::<Order>(), poly.model::<Entry>());

    // Both writes commit, or neither does. `async move` with owned handles keeps the future
    // `Send`, so this could run in a spawned task or a web handler.
    let (o, l) = (orders.clone(), ledger.clone());
    let id = poly
        .transaction(["shop"])
        .run(async move |session| {
            let id = o
                .db("shop")?
                .insert_one(Order {
                    item: "lamp".into(),
                    total: 40,
                })
                .session(&mut *session)
                .await?
                .inserted_id;
            l.db("shop")?
                .insert_one(Entry { credit: 40 })
                .session(&mut *session)
                .await?;
            Ok(id)
        })
        .await?;
    println!("committed order {id}");

    // An application error aborts: nothing of this attempt stays.
    let refused = poly
        .transaction(["shop"])
        .run(async |session| {
            orders
                .db("shop")?
                .insert_one(Order {
                    item: "sofa".into(),
                    total: 900,
                })
                .session(&mut *session)
                .await?;
            Err::<(), _>(mongodb::error::Error::custom(OutOfStock("sofa".into())))
        })
        .await;
    if let Err(e) = &refused {
        if let Some(OutOfStock(item)) = e.driver_error().and_then(|d| d.get_custom::<OutOfStock>())
        {
            println!("aborted: {item} is out of stock");
        }
    }
    let sofas = orders
        .db("shop")?
        .count_documents(doc! { "item": "sofa" })
        .await?;
    println!("sofa orders after the abort: {sofas}");

    // Databases on different pools are refused before anything is sent.
    match poly
        .transaction(["shop", "reports"])
        .run(async |_| Ok(()))
        .await
    {
        Err(e @ Error::CrossPool { .. }) => println!("refused: {e}"),
        other => println!("unexpected: {other:?}"),
    }

    poly.close_all(Duration::from_secs(5)).await;
    Ok(())
}
