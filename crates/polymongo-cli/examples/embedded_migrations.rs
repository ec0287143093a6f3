//! An application's own migration binary: its migrations — two in code, one a command —
//! behind the same `status | plan | apply | rollback` commands as `polymongo migrate`, with
//! the same flags, output and exit codes.
//!
//! ```text
//! cargo run -p polymongo-cli --example embedded_migrations -- \
//!     --uri mongodb://127.0.0.1:27017 status --prefix tenant_
//! cargo run -p polymongo-cli --example embedded_migrations -- \
//!     --uri mongodb://127.0.0.1:27017 apply --prefix tenant_ --canary 2 --max-failures 3
//! cargo run -p polymongo-cli --example embedded_migrations -- \
//!     --uri mongodb://127.0.0.1:27017 rollback --to 1 tenant_a tenant_b --json
//! ```
//!
//! `MONGODB_URI` may replace `--uri`, and `--config FILE` reads the library's options
//! (per-database routing included). In an application, this is `src/bin/migrate.rs`.

use polymongo::migrate::{Migration, Migrations, Step};
use polymongo::mongodb::bson::{doc, Document};

/// The application's migrations, in code: what its server binary would also use for lazy
/// migration on first use.
fn migrations() -> polymongo::Result<Migrations> {
    Migrations::new(vec![
        // A command: declarative, checksummed from its content, reversible.
        Migration::new(
            1,
            "users-email-index",
            vec![Step::command(doc! {
                "createIndexes": "users",
                "indexes": [{ "key": { "email": 1 }, "name": "email_1" }],
            })],
        )
        .down(vec![Step::command(doc! {
            "dropIndexes": "users", "index": "email_1",
        })]),
        // Code: anything the driver can do. Code cannot be hashed, so `code_version` says
        // when it changes. Written so that a second run does no harm (a runner that dies
        // in a step runs that step again).
        Migration::new(
            2,
            "default-plan",
            vec![Step::code(|db| async move {
                db.collection::<Document>("users")
                    .update_many(
                        doc! { "plan": { "$exists": false } },
                        doc! { "$set": { "plan": "free" } },
                    )
                    .await?;
                Ok(())
            })],
        )
        .code_version("2026-12-01")
        .down(vec![Step::code(|db| async move {
            db.collection::<Document>("users")
                .update_many(doc! { "plan": "free" }, doc! { "$unset": { "plan": "" } })
                .await?;
            Ok(())
        })]),
        Migration::new(
            3,
            "settings-defaults",
            vec![Step::code(|db| async move {
                db.collection::<Document>("settings")
                    .update_one(
                        doc! { "_id": "defaults" },
                        doc! { "$setOnInsert": { "locale": "en", "currency": "EUR" } },
                    )
                    .upsert(true)
                    .await?;
                Ok(())
            })],
        )
        .code_version("2026-12-01"),
    ])
}

fn main() {
    let migrations = match migrations() {
        Ok(m) => m,
        Err(e) => {
            // An invalid set is a bug of this binary: exit 3, as an invalid folder would.
            eprintln!("invalid migrations: {e}");
            std::process::exit(3);
        }
    };
    std::process::exit(polymongo_cli::migrate::run_embedded(migrations));
}
