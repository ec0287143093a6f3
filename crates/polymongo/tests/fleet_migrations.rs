//! Migrations over fleets of databases: two clusters, failures, canaries, failure budgets,
//! a killed runner and its resumption, concurrent runners, changed definitions, rollbacks,
//! lazy mode and cancellation; every effect checked with raw clients.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::{Client, Database};
use polymongo::migrate::{
    Canary, FleetOptions, FleetStop, Migration, MigrationError, Migrations, Phase, Step, Stopped,
    Targets, MIGRATIONS_COLLECTION,
};
use polymongo::{DbConfig, Error, Model, PolyMongo};
use serde::{Deserialize, Serialize};

use common::ledger::{all, count_step, int, ledger_doc, ledger_versions};
use common::{eventually, manager, raw, server};

async fn ledger(db: &Database) -> Vec<i64> {
    ledger_versions(db).await
}

async fn special(db: &Database, id: &str) -> Option<Document> {
    ledger_doc(db, id).await
}

/// Runs of each counting step by version, from a raw client (`effects` collection).
async fn runs(db: &Database) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = all(db, "effects")
        .await
        .iter()
        .filter_map(|d| Some((int(d, "_id")?, int(d, "runs")?)))
        .collect();
    out.sort_unstable();
    out
}

/// Three versions: an index (declarative), a seed document (declarative insert with a fixed
/// `_id`), a counted code step.
fn three() -> Migrations {
    Migrations::new(vec![
        Migration::new(
            1,
            "users-email-index",
            vec![Step::command(doc! {
                "createIndexes": "users",
                "indexes": [{ "key": { "email": 1 }, "name": "email_1" }],
            })],
        ),
        Migration::new(
            2,
            "seed-settings",
            vec![Step::command(doc! {
                "insert": "settings", "documents": [{ "_id": "plan", "value": "free" }],
            })],
        ),
        Migration::new(3, "count", vec![count_step(3)]).code_version("1"),
    ])
    .expect("valid migrations")
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:04}")).collect()
}

/// Whether `coll` has an index on `field`, as the server reports it (nx-27017 renames
/// indexes, so only the keys are compared).
async fn has_index_on(db: &Database, coll: &str, field: &str) -> bool {
    let Ok(cursor) = db.collection::<Document>(coll).list_indexes().await else {
        return false;
    };
    let keys: Vec<Document> = cursor.map_ok(|m| m.keys).try_collect().await.unwrap();
    keys.iter().any(|k| k.contains_key(field))
}

#[tokio::test]
async fn a_fleet_run_over_two_clusters_brings_every_database_to_the_latest_version() {
    let (a, b) = (server().await, server().await);
    let poly = manager(&a, 16).await;
    let all_names = names("fl_", 500);
    let (on_a, on_b) = all_names.split_at(250);
    poly.scale()
        .set_db(on_b, DbConfig::new().uri(b.uri()))
        .await
        .unwrap();
    let (raw_a, raw_b) = (raw(&a).await, raw(&b).await);
    // The databases exist (a tenant's first document) so that a prefix finds them.
    for (client, list) in [(&raw_a, on_a), (&raw_b, on_b)] {
        for name in list {
            client
                .database(name)
                .collection::<Document>("users")
                .insert_one(doc! { "email": format!("owner@{name}") })
                .await
                .unwrap();
        }
    }
    let progress = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&progress);
    let options = FleetOptions::new().concurrency(8).on_progress(move |p| {
        seen.lock()
            .unwrap()
            .push((p.done, p.total, p.eta.is_some()))
    });
    let targets = Targets::prefix("fl_");
    assert_eq!(poly.fleet().databases(&targets).await.unwrap(), all_names);

    let report = poly
        .fleet()
        .migrate(&targets, &three(), &options)
        .await
        .unwrap();

    assert!(report.is_complete(), "{:?}", report.failed().next());
    assert_eq!((report.total, report.succeeded()), (500, 500));
    assert_eq!(report.versions_done(), 1500);
    let progress = progress.lock().unwrap().clone();
    assert_eq!(progress.len(), 500);
    assert!(progress.iter().all(|(_, total, _)| *total == 500));
    assert_eq!(progress.last().map(|p| p.0), Some(500));
    for (client, list, other) in [(&raw_a, on_a, &raw_b), (&raw_b, on_b, &raw_a)] {
        for name in list {
            let db = client.database(name);
            assert_eq!(ledger(&db).await, vec![1, 2, 3], "{name}");
            assert!(has_index_on(&db, "users", "email").await, "{name}");
            assert_eq!(all(&db, "settings").await.len(), 1, "{name}");
            assert_eq!(runs(&db).await, vec![(3, 1)], "{name}");
            assert!(
                special(&db, "lock").await.is_none(),
                "{name}: lock released"
            );
            // Nothing of it on the other cluster.
            assert!(ledger(&other.database(name)).await.is_empty(), "{name}");
        }
    }
    // A rerun finds everything done.
    let again = poly
        .fleet()
        .migrate(&targets, &three(), &options)
        .await
        .unwrap();
    assert!(again.is_complete());
    assert_eq!(again.versions_done(), 0);
    let status = poly.fleet().status(&targets, &three(), 16).await.unwrap();
    assert_eq!((status.total, status.up_to_date), (500, 500));
    assert_eq!(status.at_version.get(&3), Some(&500));
    assert!(status.pending.is_empty() && status.failed.is_empty() && status.locked.is_empty());
}

/// Version 2 fails on the databases in `failing`.
fn failing_on(failing: &'static [&'static str]) -> Migrations {
    Migrations::new(vec![
        Migration::new(1, "count-1", vec![count_step(1)]).code_version("1"),
        Migration::new(
            2,
            "fragile",
            vec![Step::code(move |db| async move {
                if failing.contains(&db.name()) {
                    return Err(format!("refusing {}", db.name()).into());
                }
                db.collection::<Document>("effects")
                    .update_one(doc! { "_id": 2_i64 }, doc! { "$inc": { "runs": 1 } })
                    .upsert(true)
                    .await?;
                Ok(())
            })],
        )
        .code_version("1"),
    ])
    .unwrap()
}

#[tokio::test]
async fn failing_databases_stay_at_the_previous_version_with_their_error_and_the_rest_migrate() {
    let server = server().await;
    let poly = manager(&server, 8).await;
    let hooked = Arc::new(Mutex::new(HashSet::new()));
    let seen = Arc::clone(&hooked);
    let _hook = poly.on_error(move |e| {
        if let Some(db) = &e.database {
            if e.message.contains("migration 2") {
                seen.lock().unwrap().insert(db.clone());
            }
        }
    });
    let list = names("ff_", 40);
    const FAILING: &[&str] = &["ff_0003", "ff_0017", "ff_0031"];
    let report = poly
        .fleet()
        .migrate(
            &Targets::databases(list.clone()),
            &failing_on(FAILING),
            &FleetOptions::new().concurrency(6),
        )
        .await
        .unwrap();

    assert!(!report.is_complete());
    let mut failed: Vec<&str> = report.failed().map(|o| o.database.as_str()).collect();
    failed.sort_unstable();
    assert_eq!(failed, FAILING);
    for o in report.failed() {
        let problem = o.problem().unwrap();
        assert!(
            problem.contains("migration 2") && problem.contains(&o.database),
            "{problem}"
        );
    }
    let raw = raw(&server).await;
    for name in &list {
        let db = raw.database(name);
        if FAILING.contains(&name.as_str()) {
            assert_eq!(ledger(&db).await, vec![1], "{name}");
            assert_eq!(runs(&db).await, vec![(1, 1)], "{name}");
            let failure = special(&db, "failed").await.expect("failure kept");
            assert_eq!(int(&failure, "version"), Some(2));
        } else {
            assert_eq!(ledger(&db).await, vec![1, 2], "{name}");
            assert_eq!(runs(&db).await, vec![(1, 1), (2, 1)], "{name}");
            assert!(special(&db, "failed").await.is_none());
        }
    }
    let status = poly
        .fleet()
        .status(&Targets::databases(list), &failing_on(FAILING), 4)
        .await
        .unwrap();
    let mut listed: Vec<&str> = status.failed.iter().map(|(d, _)| d.as_str()).collect();
    listed.sort_unstable();
    assert_eq!(listed, FAILING);
    assert_eq!(status.pending.get(&2), Some(&3));
    assert_eq!(status.up_to_date, 37);
    let figures = poly.migration_stats();
    let v = |n: u64| {
        figures
            .versions
            .iter()
            .find(|c| c.version == n)
            .copied()
            .unwrap()
    };
    assert_eq!((v(1).applied, v(1).failed), (40, 0));
    assert_eq!((v(2).applied, v(2).failed), (37, 3));
    assert_eq!(
        (figures.fleet_databases_ok, figures.fleet_databases_failed),
        (37, 3)
    );
    assert_eq!(
        (figures.fleet_runs_active, figures.fleet_databases_pending),
        (0, 0)
    );
    #[cfg(feature = "metrics")]
    {
        let text = polymongo::metrics::render(&poly);
        assert!(
            text.contains("polymongo_migrations_total{version=\"2\",outcome=\"failed\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("polymongo_fleet_databases_total{outcome=\"ok\"} 37\n"));
    }
    let hooked = eventually(
        "error hooks for the failed databases",
        Duration::from_secs(10),
        || {
            let hooked = hooked.lock().unwrap().clone();
            async move { (hooked.len() == 3).then_some(hooked) }
        },
    )
    .await;
    assert!(FAILING.iter().all(|d| hooked.contains(*d)));
}

#[tokio::test]
async fn a_failing_canary_stops_the_run_before_any_other_database_is_touched() {
    let server = server().await;
    let poly = manager(&server, 8).await;
    let list = names("fc_", 30);
    const FAILING: &[&str] = &["fc_0001"];
    let report = poly
        .fleet()
        .migrate(
            &Targets::databases(list.clone()),
            &failing_on(FAILING),
            &FleetOptions::new().concurrency(4).canary(Canary::First(3)),
        )
        .await
        .unwrap();
    assert_eq!(
        report.stopped,
        Some(Stopped::CanaryFailed {
            database: "fc_0001".into()
        })
    );
    assert_eq!(report.not_started.len(), 27);
    assert!(report.outcomes.iter().all(|o| o.canary));
    let raw = raw(&server).await;
    for name in &list[3..] {
        let db = raw.database(name);
        assert!(
            all(&db, MIGRATIONS_COLLECTION).await.is_empty(),
            "{name} untouched"
        );
        assert!(runs(&db).await.is_empty(), "{name} untouched");
    }
    // Named canaries must be among the targets.
    let refused = poly
        .fleet()
        .migrate(
            &Targets::databases(list.clone()),
            &three(),
            &FleetOptions::new().canary(Canary::Databases(vec!["elsewhere".into()])),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::Config { field, .. } if field == "canary"),
        "{refused}"
    );
}

#[tokio::test]
async fn the_failure_budget_stops_new_work_and_those_in_flight_finish() {
    let server = server().await;
    let poly = manager(&server, 8).await;
    let list = names("fb_", 40);
    let every: &'static [&'static str] = Box::leak(
        list.iter()
            .map(|n| &*Box::leak(n.clone().into_boxed_str()))
            .collect::<Vec<&'static str>>()
            .into_boxed_slice(),
    );
    let progress_seen = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&progress_seen);
    let report = poly
        .fleet()
        .migrate(
            &Targets::databases(list.clone()),
            &failing_on(every),
            &FleetOptions::new()
                .concurrency(2)
                .max_failures(3)
                .on_progress(move |p| {
                    assert_eq!(p.phase, Phase::Fleet);
                    seen.fetch_add(1, Ordering::SeqCst);
                }),
        )
        .await
        .unwrap();
    let failures = report.failed().count();
    // Three failures stop new starts; at most one more was in flight.
    assert!((3..=4).contains(&failures), "{failures} failures");
    assert_eq!(report.outcomes.len(), failures);
    assert_eq!(report.not_started.len(), 40 - failures);
    assert!(matches!(
        report.stopped,
        Some(Stopped::FailureBudget { .. })
    ));
    assert_eq!(progress_seen.load(Ordering::SeqCst), failures);
    let raw = raw(&server).await;
    for name in &report.not_started {
        assert!(
            all(&raw.database(name), MIGRATIONS_COLLECTION)
                .await
                .is_empty(),
            "{name}"
        );
    }
    let zero = poly
        .fleet()
        .migrate(
            &Targets::databases(list),
            &three(),
            &FleetOptions::new().max_failures(0),
        )
        .await
        .unwrap_err();
    assert!(matches!(zero, Error::Config { field, .. } if field == "max_failures"));
}

/// Three versions of declarative steps: each inserts a document with a fixed `_id` and
/// increments a counter, in separate steps, so a step that ran twice shows.
fn declarative(n: u64) -> Migrations {
    Migrations::new(
        (1..=n)
            .map(|v| {
                let vi = v as i64;
                Migration::new(
                    v,
                    format!("v{v}"),
                    vec![
                        Step::command(doc! {
                            "insert": "seeded", "documents": [{ "_id": vi }], "ordered": false,
                        }),
                        Step::command(doc! {
                            "update": "effects",
                            "updates": [{ "q": { "_id": vi }, "u": { "$inc": { "runs": 1 } }, "upsert": true }],
                        }),
                        Step::command(doc! {
                            "insert": "seeded", "documents": [{ "_id": vi + 1000 }],
                        }),
                    ],
                )
            })
            .collect(),
    )
    .unwrap()
}

#[test]
fn a_killed_runner_leaves_work_that_the_next_run_finishes_exactly_once() {
    // The runner's runtime is shut down mid-run: its tasks stop at their next await, as in
    // a process that dies, and its locks stay until they expire.
    let server = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { server().await });
    let uri = server.uri().to_owned();
    let list = names("fk_", 120);
    let migrations = declarative(3);
    let killed = tokio::runtime::Runtime::new().unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    {
        let (uri, list, migrations, done) = (
            uri.clone(),
            list.clone(),
            migrations.clone(),
            Arc::clone(&done),
        );
        killed.spawn(async move {
            let poly = PolyMongo::builder()
                .uri(uri)
                .max_pool_size(8)
                .build()
                .await
                .unwrap();
            let seen = Arc::clone(&done);
            let options = FleetOptions::new()
                .concurrency(8)
                .on_progress(move |p| seen.store(p.done, Ordering::SeqCst));
            let _ = poly
                .fleet()
                .lock_ttl(Duration::from_millis(1500))
                .migrate(&Targets::databases(list), &migrations, &options)
                .await;
        });
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::SeqCst) < 30 {
        assert!(
            std::time::Instant::now() < deadline,
            "the run made no progress"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    killed.shutdown_background();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let raw = Client::with_uri_str(&uri).await.unwrap();
        // Where the dead runner was: (database, version, step) from its lock documents.
        let mut cut = HashSet::new();
        let mut locks_left = 0;
        for name in &list {
            if let Some(lock) = special(&raw.database(name), "lock").await {
                locks_left += 1;
                if let Ok(m) = lock.get_document("applying") {
                    cut.insert((
                        name.clone(),
                        int(m, "version").unwrap(),
                        int(m, "steps_done").unwrap(),
                    ));
                }
            }
        }
        assert!(locks_left > 0, "the runner was killed with work in flight");
        let poly = PolyMongo::builder()
            .uri(&uri)
            .max_pool_size(8)
            .build()
            .await
            .unwrap();
        let report = poly
            .fleet()
            .lock_wait(Duration::from_secs(10))
            .migrate(
                &Targets::databases(list.clone()),
                &migrations,
                &FleetOptions::new().concurrency(8),
            )
            .await
            .unwrap();
        assert!(
            report.is_complete(),
            "{:?}",
            report.failed().next().map(|o| o.problem())
        );
        let resumed = report
            .outcomes
            .iter()
            .filter(|o| o.result.as_ref().is_ok_and(|r| r.resumed.is_some()))
            .count();
        assert!(
            resumed > 0 && resumed <= locks_left,
            "{resumed} resumed, {locks_left} locks left"
        );
        for name in &list {
            let db = raw.database(name);
            assert_eq!(ledger(&db).await, vec![1, 2, 3], "{name}");
            assert_eq!(
                all(&db, "seeded").await.len(),
                6,
                "{name}: each insert once"
            );
            for (v, runs) in runs(&db).await {
                // Only a counter whose step was cut may have run twice.
                let was_cut = cut.contains(&(name.clone(), v, 1));
                assert!(
                    runs == 1 || (was_cut && runs == 2),
                    "{name} v{v}: {runs} runs"
                );
            }
        }
    });
}

#[tokio::test]
async fn concurrent_runners_on_one_fleet_apply_each_version_once() {
    let server = server().await;
    let (p1, p2) = (manager(&server, 8).await, manager(&server, 8).await);
    let list = names("fx_", 60);
    let migrations = Migrations::new(
        (1..=3)
            .map(|v| Migration::new(v, format!("c{v}"), vec![count_step(v)]).code_version("1"))
            .collect(),
    )
    .unwrap();
    let targets = Targets::databases(list.clone());
    let mut reversed = list.clone();
    reversed.reverse();
    let targets_rev = Targets::databases(reversed);
    let options = FleetOptions::new().concurrency(8);
    let (r1, r2) = tokio::join!(
        p1.fleet().migrate(&targets, &migrations, &options),
        p2.fleet().migrate(&targets_rev, &migrations, &options),
    );
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert!(r1.is_complete() && r2.is_complete());
    assert_eq!(r1.versions_done() + r2.versions_done(), 180);
    let raw = raw(&server).await;
    for name in &list {
        let db = raw.database(name);
        assert_eq!(ledger(&db).await, vec![1, 2, 3]);
        assert_eq!(runs(&db).await, vec![(1, 1), (2, 1), (3, 1)], "{name}");
    }
}

#[tokio::test]
async fn a_changed_definition_is_refused_on_every_database_and_nothing_is_applied() {
    let server = server().await;
    let poly = manager(&server, 8).await;
    let list = names("fd_", 10);
    let targets = Targets::databases(list.clone());
    let v1 = |coll: &str| Migration::new(1, "create", vec![Step::command(doc! { "create": coll })]);
    let first = Migrations::new(vec![v1("a")]).unwrap();
    assert!(poly
        .fleet()
        .migrate(&targets, &first, &FleetOptions::new())
        .await
        .unwrap()
        .is_complete());
    let changed = Migrations::new(vec![
        v1("b"),
        Migration::new(2, "count", vec![count_step(2)]).code_version("1"),
    ])
    .unwrap();
    let report = poly
        .fleet()
        .migrate(&targets, &changed, &FleetOptions::new())
        .await
        .unwrap();
    assert_eq!(report.failed().count(), 10);
    for o in &report.outcomes {
        match &o.result {
            Err(Error::Migration(e)) => assert!(
                matches!(**e, MigrationError::ChecksumMismatch { version: 1, .. }),
                "{e}"
            ),
            other => panic!("{}: {other:?}", o.database),
        }
    }
    let status = poly.fleet().status(&targets, &changed, 4).await.unwrap();
    assert_eq!(status.refused.len(), 10);
    let raw = raw(&server).await;
    for name in &list {
        assert_eq!(ledger(&raw.database(name)).await, vec![1]);
        assert!(
            runs(&raw.database(name)).await.is_empty(),
            "{name}: v2 not applied"
        );
    }
}

#[tokio::test]
async fn invalid_targets_and_options_are_refused_before_anything_runs() {
    let server = server().await;
    let poly = manager(&server, 4).await;
    let bad = poly
        .fleet()
        .migrate(
            &Targets::databases(["fine_1", "not/valid", "fine_2"]),
            &three(),
            &FleetOptions::new(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(bad, Error::InvalidName { ref name, .. } if name == "not/valid"),
        "{bad}"
    );
    let zero = poly
        .fleet()
        .migrate(
            &Targets::databases(["fine_1"]),
            &three(),
            &FleetOptions::new().concurrency(0),
        )
        .await
        .unwrap_err();
    assert!(matches!(zero, Error::Config { field, .. } if field == "concurrency"));
    let raw = raw(&server).await;
    assert!(ledger(&raw.database("fine_1")).await.is_empty());
}

/// Versions with down steps: 1 creates `a`, 2 seeds a document (undone only with
/// `seed_down`), 3 adds an index.
fn reversible_with(seed_down: bool) -> Migrations {
    let seed = Migration::new(
        2,
        "seed",
        vec![Step::command(
            doc! { "insert": "a", "documents": [{ "_id": 1, "x": 1 }] },
        )],
    );
    let undo_seed =
        Step::command(doc! { "delete": "a", "deletes": [{ "q": { "_id": 1 }, "limit": 1 }] });
    Migrations::new(vec![
        Migration::new(1, "create-a", vec![Step::command(doc! { "create": "a" })])
            .down(vec![Step::command(doc! { "drop": "a" })]),
        if seed_down {
            seed.down(vec![undo_seed])
        } else {
            seed
        },
        Migration::new(
            3,
            "index-x",
            vec![Step::command(doc! {
                "createIndexes": "a", "indexes": [{ "key": { "x": 1 }, "name": "x_1" }],
            })],
        )
        .down(vec![Step::command(
            doc! { "dropIndexes": "a", "index": { "x": 1 } },
        )]),
    ])
    .unwrap()
}

fn reversible() -> Migrations {
    reversible_with(true)
}

#[tokio::test]
async fn rollback_undoes_versions_newest_first_and_refuses_without_down_steps() {
    let server = server().await;
    let poly = manager(&server, 4).await;
    let raw = raw(&server).await;
    let db = raw.database("rb_1");
    assert!(poly
        .migrate_database("rb_1", &reversible())
        .await
        .unwrap()
        .is_complete());
    assert!(has_index_on(&db, "a", "x").await);

    let report = poly
        .migrator()
        .rollback_to("rb_1", &reversible(), 1)
        .await
        .unwrap();
    let undone: Vec<u64> = report.rolled_back.iter().map(|v| v.version).collect();
    assert_eq!(undone, vec![3, 2]);
    assert_eq!(report.current_version, 1);
    assert_eq!(ledger(&db).await, vec![1]);
    assert!(!has_index_on(&db, "a", "x").await);
    assert!(all(&db, "a").await.is_empty());

    // Without down steps for version 2, a rollback past it undoes nothing.
    assert!(poly
        .migrate_database("rb_1", &reversible())
        .await
        .unwrap()
        .is_complete());
    let no_down = reversible_with(false);
    let refused = poly
        .migrator()
        .rollback_to("rb_1", &no_down, 0)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::Migration(e) if **e == MigrationError::NoDownSteps { database: "rb_1".into(), version: 2 }),
        "{refused}"
    );
    assert_eq!(ledger(&db).await, vec![1, 2, 3], "nothing rolled back");

    // A fleet rollback to 0 on three databases.
    let fleet = Targets::databases(["rb_2", "rb_3", "rb_4"]);
    assert!(poly
        .fleet()
        .migrate(&fleet, &reversible(), &FleetOptions::new())
        .await
        .unwrap()
        .is_complete());
    let status = poly.fleet().status(&fleet, &reversible(), 2).await.unwrap();
    assert_eq!(status.rollback_plan(0).get(&1), Some(&3));
    let back = poly
        .fleet()
        .rollback_to(&fleet, &reversible(), 0, &FleetOptions::new())
        .await
        .unwrap();
    assert!(back.is_complete());
    assert_eq!(back.versions_done(), 9);
    for name in ["rb_2", "rb_3", "rb_4"] {
        let db = raw.database(name);
        assert!(ledger(&db).await.is_empty(), "{name}");
        let colls = db.list_collection_names().await.unwrap();
        assert!(!colls.contains(&"a".to_owned()), "{name}: {colls:?}");
    }
}

#[tokio::test]
async fn an_interrupted_version_is_finished_from_its_cut_step() {
    let server = server().await;
    let poly = manager(&server, 4).await;
    let raw = raw(&server).await;
    let db = raw.database("cut_1");
    let migrations = declarative(2);
    assert!(poly
        .migrate_database("cut_1", &declarative(1))
        .await
        .unwrap()
        .is_complete());
    // What a runner that died in version 2's second step leaves: version 2's first step
    // done, its second step done too (the cut came before its record), and an expired lock
    // saying it was at step 1.
    db.collection::<Document>("seeded")
        .insert_one(doc! { "_id": 2_i64 })
        .await
        .unwrap();
    db.collection::<Document>("effects")
        .insert_one(doc! { "_id": 2_i64, "runs": 1 })
        .await
        .unwrap();
    db.collection::<Document>(MIGRATIONS_COLLECTION)
        .insert_one(doc! {
            "_id": "lock", "owner": "dead-host/pid 1/run 1", "expires_at_ms": 0_i64,
            "applying": {
                "version": 2_i64, "down": false, "steps_done": 1_i64,
                "checksum": migrations.checksum(2).unwrap(),
            },
        })
        .await
        .unwrap();

    let report = poly.migrate_database("cut_1", &migrations).await.unwrap();

    assert!(report.is_complete(), "{:?}", report.failed);
    assert_eq!(report.resumed, Some(2));
    assert_eq!(ledger(&db).await, vec![1, 2]);
    // Step 0 (an insert with a fixed `_id`, not accepted as done) was not run again, or the
    // run would have failed on its duplicate key; the cut step 1 ran again; step 2 once.
    assert_eq!(all(&db, "seeded").await.len(), 4);
    assert_eq!(runs(&db).await, vec![(1, 1), (2, 2)]);
    assert!(special(&db, "lock").await.is_none());
}

#[derive(Debug, Serialize, Deserialize)]
struct Account {
    email: String,
}

impl Model for Account {
    const COLLECTION: &'static str = "accounts";
}

#[tokio::test]
async fn lazy_mode_migrates_once_for_fifty_concurrent_first_requests() {
    let server = server().await;
    let migrations = Migrations::new(
        (1..=3)
            .map(|v| Migration::new(v, format!("c{v}"), vec![count_step(v)]).code_version("1"))
            .collect(),
    )
    .unwrap();
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .max_pool_size(16)
        .migrate_on_first_use(migrations.clone())
        .build()
        .await
        .unwrap();
    let other = PolyMongo::builder()
        .uri(server.uri())
        .max_pool_size(16)
        .migrate_on_first_use(migrations)
        .build()
        .await
        .unwrap();
    let accounts = poly.model::<Account>();
    let theirs = other.model::<Account>();
    let firsts = (0..50).map(|i| {
        let (mine, theirs) = (accounts.clone(), theirs.clone());
        async move {
            let handle = if i % 2 == 0 {
                mine.acquire("lazy_1").await
            } else {
                theirs.acquire("lazy_1").await
            };
            handle.map(|_| ())
        }
    });
    for r in futures_util::future::join_all(firsts).await {
        r.unwrap();
    }
    let raw = raw(&server).await;
    let db = raw.database("lazy_1");
    assert_eq!(ledger(&db).await, vec![1, 2, 3]);
    assert_eq!(runs(&db).await, vec![(1, 1), (2, 1), (3, 1)]);

    // Warm: no ledger read any more. With the ledger gone, a read would migrate again.
    db.collection::<Document>(MIGRATIONS_COLLECTION)
        .drop()
        .await
        .unwrap();
    accounts.acquire("lazy_1").await.unwrap();
    theirs.acquire("lazy_1").await.unwrap();
    assert_eq!(runs(&db).await, vec![(1, 1), (2, 1), (3, 1)]);
    assert!(ledger(&db).await.is_empty());
    // `db()` never migrates.
    accounts.db("lazy_2").unwrap();
    assert!(ledger(&raw.database("lazy_2")).await.is_empty());
}

#[tokio::test]
async fn lazy_mode_reports_a_failing_step_and_tries_again_on_the_next_first_use() {
    let server = server().await;
    const FAILING: &[&str] = &["lazy_bad"];
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .max_pool_size(4)
        .migrate_on_first_use(failing_on(FAILING))
        .build()
        .await
        .unwrap();
    let accounts = poly.model::<Account>();
    let e = accounts.acquire("lazy_bad").await.unwrap_err();
    assert!(
        matches!(&e, Error::Migration(m) if matches!(**m, MigrationError::Failed { version: 2, .. })),
        "{e}"
    );
    let again = accounts.acquire("lazy_bad").await.unwrap_err();
    assert!(again.to_string().contains("refusing lazy_bad"), "{again}");
    let raw = raw(&server).await;
    let db = raw.database("lazy_bad");
    assert_eq!(ledger(&db).await, vec![1]);
    assert_eq!(runs(&db).await, vec![(1, 1)]);
    accounts.acquire("lazy_good").await.unwrap();
    assert_eq!(ledger(&raw.database("lazy_good")).await, vec![1, 2]);
}

#[tokio::test]
async fn a_fleet_run_cut_at_growing_delays_leaves_whole_versions_and_a_rerun_completes() {
    let server = server().await;
    let poly = manager(&server, 8).await;
    let list = names("ft_", 24);
    let targets = Targets::databases(list.clone());
    let migrations = declarative(3);
    let raw = raw(&server).await;
    for delay_ms in [0_u64, 1, 3, 10, 30, 100] {
        let cut = tokio::time::timeout(
            Duration::from_millis(delay_ms),
            poly.fleet()
                .migrate(&targets, &migrations, &FleetOptions::new().concurrency(4)),
        )
        .await;
        let figures = poly.migration_stats();
        assert_eq!(
            (figures.fleet_runs_active, figures.fleet_databases_pending),
            (0, 0),
            "a dropped run leaves the gauges"
        );
        // Whatever was cut finishes its version and lets go of its lock.
        for name in &list {
            let db = raw.database(name);
            eventually("locks released", Duration::from_secs(20), || {
                let db = db.clone();
                async move { special(&db, "lock").await.is_none().then_some(()) }
            })
            .await;
            let versions = ledger(&db).await;
            let counted: Vec<i64> = runs(&db).await.iter().map(|(v, _)| *v).collect();
            assert_eq!(
                counted, versions,
                "{name} after a cut at {delay_ms} ms: whole versions only"
            );
            assert!(runs(&db).await.iter().all(|(_, r)| *r == 1), "{name}");
        }
        if cut.is_ok() {
            break;
        }
    }
    let done = poly
        .fleet()
        .migrate(&targets, &migrations, &FleetOptions::new())
        .await
        .unwrap();
    assert!(done.is_complete());
    for name in &list {
        let db = raw.database(name);
        assert_eq!(ledger(&db).await, vec![1, 2, 3]);
        assert_eq!(runs(&db).await, vec![(1, 1), (2, 1), (3, 1)], "{name}");
        assert_eq!(all(&db, "seeded").await.len(), 6);
    }
}

#[tokio::test]
async fn a_requested_stop_starts_nothing_new_and_returns_once_those_in_flight_finished() {
    let server = server().await;
    let poly = manager(&server, 8).await;
    let list = names("fs_", 60);
    let stop = FleetStop::new();
    let trigger = stop.clone();
    let report = poly
        .fleet()
        .migrate(
            &Targets::databases(list.clone()),
            &declarative(3),
            &FleetOptions::new()
                .concurrency(4)
                .stop_signal(stop)
                .on_progress(move |p| {
                    if p.done == 5 {
                        trigger.stop();
                    }
                }),
        )
        .await
        .unwrap();
    assert_eq!(report.stopped, Some(Stopped::Requested));
    // Five finished when the stop came; at most the three others in flight then finished.
    assert!(
        (5..=8).contains(&report.outcomes.len()),
        "{}",
        report.outcomes.len()
    );
    assert!(report.outcomes.iter().all(|o| o.is_ok()));
    assert_eq!(report.outcomes.len() + report.not_started.len(), 60);
    // Nothing is left running: every lock is gone the moment the run returns.
    let raw = raw(&server).await;
    let finished: HashSet<&str> = report
        .outcomes
        .iter()
        .map(|o| o.database.as_str())
        .collect();
    for name in &list {
        let db = raw.database(name);
        assert!(special(&db, "lock").await.is_none(), "{name}");
        let expected: Vec<i64> = if finished.contains(name.as_str()) {
            vec![1, 2, 3]
        } else {
            vec![]
        };
        assert_eq!(ledger(&db).await, expected, "{name}");
    }
}

#[tokio::test]
async fn the_example_folder_applies_and_rolls_back_on_a_server_with_pipeline_updates() {
    let Some(server) =
        polymongo_testkit::server_for(&[polymongo_testkit::Capability::PipelineUpdates]).await
    else {
        return; // reported as a skip by the kit
    };
    let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/migrations");
    let migrations = Migrations::from_dir(folder).unwrap();
    let poly = manager(&server, 8).await;
    let raw = raw(&server).await;
    let list = names("pipe_", 5);
    for name in &list {
        raw.database(name)
            .collection::<Document>("users")
            .insert_many([
                doc! { "email": "a@x" },
                doc! { "email": "b@x", "plan": "pro" },
            ])
            .await
            .unwrap();
    }
    let targets = Targets::databases(list.clone());
    let report = poly
        .fleet()
        .migrate(&targets, &migrations, &FleetOptions::new())
        .await
        .unwrap();
    assert!(
        report.is_complete(),
        "{:?}",
        report.failed().next().map(|o| o.problem())
    );
    for name in &list {
        let users = all(&raw.database(name), "users").await;
        let plan = |email: &str| {
            let u = users
                .iter()
                .find(|u| u.get_str("email") == Ok(email))
                .unwrap();
            (
                u.get_str("plan").ok().map(str::to_owned),
                u.contains_key("planDefaultedAt"),
            )
        };
        assert_eq!(
            plan("a@x"),
            (Some("free".into()), true),
            "{name}: the pipeline's $set"
        );
        assert_eq!(
            plan("b@x"),
            (Some("pro".into()), false),
            "{name}: left alone"
        );
    }
    let back = poly
        .fleet()
        .rollback_to(&targets, &migrations, 1, &FleetOptions::new())
        .await
        .unwrap();
    assert!(
        back.is_complete(),
        "{:?}",
        back.failed().next().map(|o| o.problem())
    );
    for name in &list {
        let db = raw.database(name);
        assert_eq!(ledger(&db).await, vec![1]);
        let users = all(&db, "users").await;
        let a = users
            .iter()
            .find(|u| u.get_str("email") == Ok("a@x"))
            .unwrap();
        assert!(
            !a.contains_key("plan") && !a.contains_key("planDefaultedAt"),
            "{a}"
        );
    }
}

#[tokio::test]
async fn lazy_mode_costs_one_command_on_first_use_and_none_when_warm() {
    let server = server().await;
    let migrations = Migrations::new(
        (1..=2)
            .map(|v| Migration::new(v, format!("c{v}"), vec![count_step(v)]).code_version("1"))
            .collect(),
    )
    .unwrap();
    // Up to date beforehand, by another process's manager.
    let other = manager(&server, 4).await;
    assert!(other
        .migrate_database("lazy_cost", &migrations)
        .await
        .unwrap()
        .is_complete());
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .max_pool_size(4)
        .usage_analytics(polymongo::UsageAnalytics::Commands)
        .migrate_on_first_use(migrations)
        .build()
        .await
        .unwrap();
    let accounts = poly.model::<Account>();
    let commands = || poly.stats().usage("lazy_cost").map_or(0, |u| u.operations);
    accounts.acquire("lazy_cost").await.unwrap();
    eventually("the ledger read counted", Duration::from_secs(10), || {
        let n = commands();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    assert_eq!(commands(), 1, "first use: one read of the ledger");
    // Warm: a known command after it, so that any extra one would be counted before it.
    let warm = accounts.acquire("lazy_cost").await.unwrap();
    warm.collection()
        .find_one(doc! { "_id": "none" })
        .await
        .unwrap();
    eventually("the find counted", Duration::from_secs(10), || {
        let n = commands();
        async move { (n >= 2).then_some(()) }
    })
    .await;
    assert_eq!(commands(), 2, "warm acquires send nothing");
}

#[tokio::test]
async fn a_lazy_first_use_cut_at_growing_delays_migrates_each_version_once() {
    let server = server().await;
    let migrations = declarative(3);
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .max_pool_size(4)
        .migrate_on_first_use(migrations)
        .build()
        .await
        .unwrap();
    let accounts = poly.model::<Account>();
    let raw = raw(&server).await;
    let db = raw.database("lazy_cut");
    for delay_ms in [0_u64, 1, 2, 5, 10, 20, 50] {
        let cut = tokio::time::timeout(
            Duration::from_millis(delay_ms),
            accounts.acquire("lazy_cut"),
        )
        .await;
        eventually("lock released", Duration::from_secs(20), || {
            let db = db.clone();
            async move { special(&db, "lock").await.is_none().then_some(()) }
        })
        .await;
        let versions = ledger(&db).await;
        let counted: Vec<i64> = runs(&db).await.iter().map(|(v, _)| *v).collect();
        assert_eq!(
            counted, versions,
            "after a cut at {delay_ms} ms: whole versions only"
        );
        if cut.is_ok() {
            break;
        }
    }
    accounts.acquire("lazy_cut").await.unwrap();
    assert_eq!(ledger(&db).await, vec![1, 2, 3]);
    assert_eq!(runs(&db).await, vec![(1, 1), (2, 1), (3, 1)]);
    assert_eq!(all(&db, "seeded").await.len(), 6);
}
