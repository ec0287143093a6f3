//! Quickstart: one shared pool, a typed model, many tenant databases.
//!
//! Uses `MONGODB_URI` when it is set; otherwise starts a local test server (the test kit's
//! nx-27017, installed on first run into a cached Python environment).
//!
//! ```text
//! cargo run --example quickstart
//! MONGODB_URI=mongodb://127.0.0.1:27017 cargo run --example quickstart
//! ```

use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::doc;
use polymongo::{Model, PolyMongo};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct User {
    name: String,
    role: String,
}

impl Model for User {
    const COLLECTION: &'static str = "users";
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the server (if we started one) alive until the end of main.
    let (uri, _server) = polymongo_testkit::uri_from_env_or_start().await?;

    let poly = PolyMongo::builder()
        .uri(&uri)
        .default_db("production")
        .max_pool_size(10)
        .build()
        .await?;
    println!("built {poly:?}");

    let users = poly.model::<User>();

    // The default database…
    users
        .default_db()?
        .insert_one(User {
            name: "Ada".into(),
            role: "admin".into(),
        })
        .await?;

    // …and any number of tenant databases, over the same pool.
    for tenant in ["tenant_1", "tenant_2", "tenant_3"] {
        let coll = users.db(tenant)?;
        coll.insert_many([
            User {
                name: format!("{tenant}-alice"),
                role: "admin".into(),
            },
            User {
                name: format!("{tenant}-bob"),
                role: "member".into(),
            },
        ])
        .await?;
        // `run` awaits the same driver call and counts it in the usage analytics.
        let admins: Vec<User> = coll
            .run(|c| c.find(doc! { "role": "admin" }))
            .await?
            .try_collect()
            .await?;
        println!("{tenant}: admins {admins:?}");
    }
    for u in poly.stats().top_databases(3, polymongo::TopBy::Operations) {
        println!(
            "usage of {}: {} operations {:?}, p50 {} µs",
            u.database, u.operations, u.by_command, u.p50_us
        );
    }

    println!("ping: {:?}", poly.ping("production").await?);
    println!("state: {:?}", poly.connection_state());

    let report = poly.close_all(Duration::from_secs(5)).await;
    println!("closed: {report:?}");
    Ok(())
}
