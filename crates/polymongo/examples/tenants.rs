//! The tenant directory: a control cluster and two cells, tenants placed by the fewest
//! tenants with a capacity on one cell, each tenant's data on its own cell, a suspension
//! that a second instance picks up within the refresh bound, an archive restored onto a cell
//! chosen by placement, a delete, the census, and typed errors.
//!
//! Starts three local test servers (control and two cells); with `MONGODB_URI` set, uses
//! that one cluster for all three roles (the cells then differ only by name).
//!
//! ```text
//! cargo run --example tenants
//! ```

use std::time::{Duration, Instant};

use polymongo::tenants::{
    ArchiveTenant, CreateTenant, DeleteTenant, Deleted, RestoreTenant, TenantError,
};
use polymongo::{ClusterConfig, DirectoryConfig, Error, Model, PolyMongo};
use polymongo_testkit::TestServer;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Order {
    item: String,
}

impl Model for Order {
    const COLLECTION: &'static str = "orders";
}

async fn instance(control: &str, a: &str, b: &str) -> polymongo::Result<PolyMongo> {
    PolyMongo::builder()
        .uri(control)
        .cluster("cell_a", ClusterConfig::new(a).capacity(3))
        .cluster("cell_b", ClusterConfig::new(b))
        .directory(
            DirectoryConfig::on("main")
                .database_prefix("shop_")
                .refresh(Duration::from_millis(250)),
        )
        .build()
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut servers = Vec::new();
    let (control, a, b) = match std::env::var("MONGODB_URI") {
        Ok(uri) if !uri.is_empty() => {
            let with = |name: &str| {
                let sep = if uri.contains('?') { '&' } else { '?' };
                format!("{uri}{sep}appName={name}")
            };
            (uri.clone(), with("cell_a"), with("cell_b"))
        }
        _ => {
            println!("MONGODB_URI is not set: starting three local test servers…");
            for _ in 0..3 {
                servers.push(TestServer::start().await?);
            }
            (
                servers[0].uri().to_owned(),
                servers[1].uri().to_owned(),
                servers[2].uri().to_owned(),
            )
        }
    };
    let poly = instance(&control, &a, &b).await?;
    let other = instance(&control, &a, &b).await?;
    let tenants = poly.tenants()?;
    let orders = poly.model::<Order>();

    for name in ["acme", "globex", "initech", "umbrella", "hooli", "stark"] {
        let t = tenants.create(name, CreateTenant::new()).await?;
        println!("created {:<9} on {} ({})", t.id, t.cluster, t.database);
        // A model routed by tenant id, as `.db(name)` routes it by database name.
        orders
            .tenant(name)
            .await?
            .insert_one(Order {
                item: format!("first order of {name}"),
            })
            .await?;
    }

    // A second instance routes through the same directory.
    let routed = other.tenant("hooli").await?;
    println!(
        "the other instance routes hooli to {}",
        routed.info().cluster
    );

    let started = Instant::now();
    tenants.suspend("hooli").await?;
    loop {
        match other.tenant("hooli").await {
            Err(Error::Tenant(e)) if matches!(*e, TenantError::Suspended { .. }) => {
                println!(
                    "the other instance refuses suspended hooli after {:?}",
                    started.elapsed()
                );
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => return Err(e.into()),
        }
    }
    tenants.resume("hooli").await?;

    // Archive a tenant to a file (its database is dropped once the file is verified),
    // restore it onto the other cell, then delete another for good.
    let folder = std::env::temp_dir().join(format!("polymongo-archives-{}", std::process::id()));
    let archived = tenants
        .archive("stark", ArchiveTenant::to_folder(&folder))
        .await?;
    if let Some(a) = &archived.archive {
        println!(
            "archived stark from {}: {} documents in {} ({} bytes)",
            a.from_cluster,
            a.documents(),
            a.path,
            a.file_bytes
        );
    }
    // Placed again by the fewest tenants (cell_a has a capacity of 3).
    let restored = tenants.restore("stark", RestoreTenant::new()).await?;
    println!(
        "restored stark onto {} ({})",
        restored.cluster,
        restored.state.as_str()
    );
    match tenants
        .delete("umbrella", DeleteTenant::confirming("umbrella"))
        .await?
    {
        Deleted::Removed(info) => println!("deleted umbrella (database {} dropped)", info.database),
        other => println!("umbrella: {other:?}"),
    }
    for c in tenants.census().await? {
        println!("{:<7} places {} states {:?}", c.name, c.places, c.states);
    }
    let _ = std::fs::remove_dir_all(&folder);

    for (what, result) in [
        ("unknown tenant", poly.tenant("nobody").await.err()),
        ("invalid id", poly.tenant("a/b").await.err()),
    ] {
        if let Some(e) = result {
            println!("{what}: {e}");
        }
    }
    other.close_all(Duration::from_secs(5)).await;
    poly.close_all(Duration::from_secs(5)).await;
    Ok(())
}
