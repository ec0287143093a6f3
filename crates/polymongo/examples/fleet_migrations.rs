//! Fleet migrations from a folder of files: 200 tenant databases, the plan, a run with three
//! canaries and a progress line, the fleet's status afterwards, a rollback of two tenants,
//! and lazy mode for a tenant created later.
//!
//! The migrations are the files of `examples/migrations/` (see `docs/migrations.md`).
//! Uses `MONGODB_URI` when it is set; otherwise starts a local test server that applies
//! `update` with a pipeline (mongoeco or mongod; see the test kit's QUIRKS.md).
//!
//! ```text
//! cargo run --example fleet_migrations
//! ```

use std::time::Duration;

use polymongo::migrate::{Canary, FleetOptions, Migrations, Targets};
use polymongo::mongodb::bson::{doc, Document};
use polymongo::{Model, PolyMongo};

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct User {
    email: String,
}

impl Model for User {
    const COLLECTION: &'static str = "users";
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Version 2 is an `update` with an aggregation pipeline, which nx-27017 lacks.
    let (uri, _server) = polymongo_testkit::uri_from_env_or_start_for(&[
        polymongo_testkit::Capability::PipelineUpdates,
    ])
    .await?;
    let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/migrations");
    let migrations = Migrations::from_dir(folder)?;
    println!(
        "{} migrations from {folder}, latest version {}",
        migrations.versions().count(),
        migrations.latest()
    );

    let poly = PolyMongo::builder()
        .uri(&uri)
        .max_pool_size(16)
        .build()
        .await?;
    // Tenants exist: each has its first user.
    for i in 0..200 {
        let name = format!("shop_{i:03}");
        poly.database(&name)?
            .collection::<Document>("users")
            .insert_one(doc! { "email": format!("owner@{name}") })
            .await?;
    }
    let tenants = Targets::prefix("shop_");

    let plan = poly.fleet().status(&tenants, &migrations, 16).await?;
    println!(
        "plan: {} databases, {} up to date, would apply {:?} (version: databases)",
        plan.total, plan.up_to_date, plan.pending
    );

    let options = FleetOptions::new()
        .concurrency(8)
        .canary(Canary::First(3))
        .max_failures(5)
        .on_progress(|p| {
            if p.done % 50 == 0 || p.done == p.total {
                println!(
                    "  {}/{} done, {} failed, {:.0} databases/s, eta {:.1?}",
                    p.done,
                    p.total,
                    p.failed,
                    p.rate,
                    p.eta.unwrap_or_default()
                );
            }
        });
    let report = poly
        .fleet()
        .migrate(&tenants, &migrations, &options)
        .await?;
    println!(
        "run: {} of {} databases migrated, {} versions applied in {:.1?}",
        report.succeeded(),
        report.total,
        report.versions_done(),
        report.duration
    );
    for failed in report.failed() {
        println!(
            "  {}: {}",
            failed.database,
            failed.problem().unwrap_or_default()
        );
    }

    let status = poly.fleet().status(&tenants, &migrations, 16).await?;
    println!(
        "status: by version {:?}, {} up to date, {} failed, {} locked",
        status.at_version,
        status.up_to_date,
        status.failed.len(),
        status.locked.len()
    );

    let two = Targets::databases(["shop_000", "shop_001"]);
    let back = poly
        .fleet()
        .rollback_to(&two, &migrations, 1, &FleetOptions::new())
        .await?;
    println!(
        "rollback of 2 tenants to version 1: {} versions undone",
        back.versions_done()
    );

    // A service that migrates each tenant on its first use.
    let service = PolyMongo::builder()
        .uri(&uri)
        .migrate_on_first_use(migrations.clone())
        .build()
        .await?;
    service.model::<User>().acquire("shop_new").await?;
    let new = service.migration_status("shop_new", &migrations).await?;
    println!(
        "shop_new, first acquire: now at version {}",
        new.current_version
    );
    let figures = service.migration_stats();
    println!(
        "service figures: {} versions applied, {} failed",
        figures.applied_total, figures.failed_total
    );

    service.close_all(Duration::from_secs(5)).await;
    poly.close_all(Duration::from_secs(5)).await;
    Ok(())
}
