//! Versioned migrations: three versions (an index, a data fix in code, a rename) applied to
//! three tenant databases, a rerun that applies nothing, the status, and a changed
//! definition refused with the version it names.
//!
//! Uses `MONGODB_URI` when it is set; otherwise starts a local test server.
//!
//! ```text
//! cargo run --example migrations
//! ```

use std::time::Duration;

use polymongo::migrate::{Migration, Migrations, Step};
use polymongo::mongodb::bson::{doc, Document};
use polymongo::{Error, PolyMongo};

fn migrations(plan: &str) -> polymongo::Result<Migrations> {
    let plan = plan.to_owned();
    Migrations::new(vec![
        Migration::new(
            1,
            "users-email-index",
            vec![Step::command(doc! {
                "createIndexes": "users",
                "indexes": [{ "key": { "email": 1 }, "name": "email_1" }],
            })],
        ),
        // Code cannot be hashed: its `code_version` goes into the checksum instead. Change it
        // when the code changes.
        Migration::new(
            2,
            "default-plan",
            vec![Step::code(move |db| {
                let plan = plan.clone();
                async move {
                    db.collection::<Document>("users")
                        .update_many(
                            doc! { "plan": { "$exists": false } },
                            doc! { "$set": { "plan": plan } },
                        )
                        .await?;
                    Ok(())
                }
            })],
        )
        .code_version("2026-11-30"),
        Migration::new(
            3,
            "rename-users",
            vec![Step::command(
                doc! { "renameCollection": "users", "to": "accounts" },
            )],
        ),
    ])
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (uri, _server) = polymongo_testkit::uri_from_env_or_start().await?;
    let poly = PolyMongo::builder()
        .uri(&uri)
        .default_db("tenant_1")
        .build()
        .await?;
    let tenants = ["tenant_1", "tenant_2", "tenant_3"];
    for t in tenants {
        poly.database(t)?
            .collection::<Document>("users")
            .insert_one(doc! { "email": format!("owner@{t}") })
            .await?;
    }

    let set = migrations("free")?;
    for t in tenants {
        let report = poly.migrate_database(t, &set).await?;
        let applied: Vec<u64> = report.applied.iter().map(|a| a.version).collect();
        println!(
            "{t}: applied {applied:?}, now at version {}",
            report.current_version
        );
    }
    let again = poly.migrate_database("tenant_1", &set).await?;
    println!(
        "tenant_1 rerun: applied {}, skipped {:?}",
        again.applied.len(),
        again.skipped
    );

    let status = poly.migration_status("tenant_2", &set).await?;
    println!(
        "tenant_2: version {}, pending {:?}, locked: {}",
        status.current_version,
        status.pending,
        status.lock.is_some()
    );

    // Same versions, different code version: refused, naming the version.
    let changed = Migrations::new(vec![
        Migration::new(
            1,
            "users-email-index",
            vec![Step::command(doc! {
                "createIndexes": "users",
                "indexes": [{ "key": { "email": 1 }, "name": "email_1" }],
            })],
        ),
        Migration::new(2, "default-plan", vec![Step::code(|_db| async { Ok(()) })])
            .code_version("2026-12-01"),
    ])?;
    match poly.migrate_database("tenant_3", &changed).await {
        Err(e @ Error::Migration(_)) => println!("refused: {e}"),
        other => println!("unexpected: {other:?}"),
    }

    // Bad input is refused before anything runs.
    let bad = Migrations::new(vec![Migration::new(
        9,
        "wipe",
        vec![Step::command(doc! { "dropDatabase": 1 })],
    )]);
    if let Err(e) = bad {
        println!("refused: {e}");
    }

    poly.close_all(Duration::from_secs(5)).await;
    Ok(())
}
