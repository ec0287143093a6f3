//! Versioned migrations on one database: ledger, checksums, lock, failures, concurrency and
//! cancellation; effects checked with a raw client.

mod common;

use std::time::Duration;

use mongodb::bson::{doc, DateTime, Document};
use mongodb::Database;
use polymongo::migrate::{Migration, MigrationError, Migrations, Step, MIGRATIONS_COLLECTION};
use polymongo::{Error, ErrorKind, PolyMongo};
use polymongo_testkit::TestServer;

use common::ledger::{all, count_step, int, ledger_doc, ledger_versions};
use common::{eventually, manager, raw, server};

/// A code step that adds 1 to counter `version` in `effects`: each run of it is counted.
fn counting(version: u64) -> Migration {
    Migration::new(
        version,
        format!("count-{version}"),
        vec![count_step(version)],
    )
    .code_version("1")
}

fn counting_set(n: u64) -> Migrations {
    Migrations::new((1..=n).map(counting).collect()).expect("valid migrations")
}

/// A server, a manager on it and a raw handle on database `name`.
async fn setup(name: &str, pool: u32) -> (TestServer, PolyMongo, Database) {
    let server = server().await;
    let poly = manager(&server, pool).await;
    let db = raw(&server).await.database(name);
    (server, poly, db)
}

/// Runs of each counting step, by version (1-based), from the raw client.
async fn runs(db: &Database, n: u64) -> Vec<i64> {
    let mut out = vec![0; n as usize];
    for d in all(db, "effects").await {
        if let (Some(id), Some(runs)) = (int(&d, "_id"), int(&d, "runs")) {
            out[(id - 1) as usize] = runs;
        }
    }
    out
}

async fn lock_doc(db: &Database) -> Option<Document> {
    ledger_doc(db, "lock").await
}

fn migration_error(e: &Error) -> &MigrationError {
    match e {
        Error::Migration(m) => m,
        other => panic!("expected a migration error, got {other}"),
    }
}

#[tokio::test]
async fn applies_every_version_and_the_changes_are_present() {
    let (_server, poly, db) = setup("tenant_a", 4).await;
    let migrations = Migrations::new(vec![
        Migration::new(
            1,
            "seed-users",
            vec![Step::command(doc! {
                "insert": "users",
                "documents": [{ "_id": 1, "email": "a@x" }, { "_id": 2, "email": "b@x" }],
            })],
        ),
        Migration::new(
            2,
            "email-index",
            vec![Step::command(doc! {
                "createIndexes": "users",
                "indexes": [{ "key": { "email": 1 }, "name": "email_1" }],
            })],
        ),
        Migration::new(
            3,
            "plan",
            vec![Step::command(doc! {
                "update": "users",
                "updates": [{ "q": {}, "u": { "$set": { "plan": "free" } }, "multi": true }],
            })],
        ),
        Migration::new(
            4,
            "rename",
            vec![Step::command(
                doc! { "renameCollection": "users", "to": "accounts" },
            )],
        ),
        counting(5),
    ])
    .unwrap();

    let report = poly
        .migrate_database("tenant_a", &migrations)
        .await
        .unwrap();
    assert!(report.is_complete(), "{:?}", report.failed);
    let applied: Vec<u64> = report.applied.iter().map(|a| a.version).collect();
    assert_eq!(applied, [1, 2, 3, 4, 5]);
    assert_eq!(report.current_version, 5);
    assert!(report.skipped.is_empty());

    let names = db.list_collection_names().await.unwrap();
    assert!(names.contains(&"accounts".to_owned()), "{names:?}");
    assert!(!names.contains(&"users".to_owned()), "{names:?}");
    let accounts = db.collection::<Document>("accounts");
    assert_eq!(
        accounts
            .count_documents(doc! { "plan": "free" })
            .await
            .unwrap(),
        2
    );
    let indexes = accounts.list_index_names().await.unwrap();
    assert!(indexes.iter().any(|n| n.contains("email")), "{indexes:?}");
    assert_eq!(runs(&db, 5).await, [0, 0, 0, 0, 1]);
    assert_eq!(ledger_versions(&db).await, [1, 2, 3, 4, 5]);
    let entry = db
        .collection::<Document>(MIGRATIONS_COLLECTION)
        .find_one(doc! { "name": "plan" })
        .await
        .unwrap()
        .expect("ledger entry of version 3");
    assert_eq!(
        entry.get_str("checksum").unwrap(),
        migrations.checksum(3).unwrap()
    );
    assert_eq!(entry.get_str("by").unwrap(), report.runner);
    assert!(entry.get_datetime("applied_at").is_ok());
    assert!(lock_doc(&db).await.is_none(), "the lock is released");

    // Rerun: nothing applied, nothing run again.
    let again = poly
        .migrate_database("tenant_a", &migrations)
        .await
        .unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.skipped, [1, 2, 3, 4, 5]);
    assert_eq!(again.current_version, 5);
    assert_eq!(runs(&db, 5).await, [0, 0, 0, 0, 1]);
    assert_eq!(ledger_versions(&db).await, [1, 2, 3, 4, 5]);

    let status = poly
        .migration_status("tenant_a", &migrations)
        .await
        .unwrap();
    assert_eq!(status.current_version, 5);
    assert!(status.pending.is_empty() && status.changed.is_empty());
    assert_eq!(status.applied.len(), 5);
    assert!(status.lock.is_none());
}

#[tokio::test]
async fn a_failing_version_stops_the_run_and_the_next_run_continues() {
    let (_server, poly, db) = setup("tenant_f", 4).await;
    // Version 2 fails until a switch document exists.
    let gated = Migration::new(
        2,
        "gated",
        vec![Step::code(|db| async move {
            let switches = db.collection::<Document>("switches");
            if switches.find_one(doc! { "_id": "go" }).await?.is_none() {
                return Err("the switch is off".into());
            }
            db.collection::<Document>("effects")
                .update_one(doc! { "_id": 2_i64 }, doc! { "$inc": { "runs": 1 } })
                .upsert(true)
                .await?;
            Ok(())
        })],
    )
    .code_version("1");
    let migrations = Migrations::new(vec![counting(1), gated, counting(3)]).unwrap();

    let report = poly
        .migrate_database("tenant_f", &migrations)
        .await
        .unwrap();
    assert!(!report.is_complete());
    let failed = report.failed.as_ref().expect("version 2 failed");
    assert_eq!((failed.version, failed.step), (2, 0));
    assert!(failed.error.to_string().contains("switch is off"));
    assert_eq!(report.current_version, 1);
    assert_eq!(report.applied.len(), 1);
    assert_eq!(ledger_versions(&db).await, [1]);
    assert_eq!(runs(&db, 3).await, [1, 0, 0]);
    assert!(lock_doc(&db).await.is_none(), "released after a failure");
    let status = poly
        .migration_status("tenant_f", &migrations)
        .await
        .unwrap();
    assert_eq!((status.current_version, status.pending), (1, vec![2, 3]));

    db.collection::<Document>("switches")
        .insert_one(doc! { "_id": "go" })
        .await
        .unwrap();
    let report = poly
        .migrate_database("tenant_f", &migrations)
        .await
        .unwrap();
    assert!(report.is_complete());
    assert_eq!(report.skipped, [1]);
    assert_eq!(
        report.applied.iter().map(|a| a.version).collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(ledger_versions(&db).await, [1, 2, 3]);
    assert_eq!(runs(&db, 3).await, [1, 1, 1]);
}

#[tokio::test]
async fn a_failing_command_is_reported_with_its_version() {
    let (_server, poly, db) = setup("tenant_c", 4).await;
    let migrations = Migrations::new(vec![
        counting(1),
        Migration::new(
            2,
            "duplicate-ids",
            vec![Step::command(
                doc! { "insert": "things", "documents": [{ "_id": 1 }, { "_id": 1 }] },
            )],
        ),
    ])
    .unwrap();
    let report = poly
        .migrate_database("tenant_c", &migrations)
        .await
        .unwrap();
    let failed = report.failed.expect("version 2 failed");
    assert_eq!(failed.version, 2);
    assert!(
        failed.error.to_string().contains("writeErrors"),
        "{}",
        failed.error
    );
    assert_eq!(report.current_version, 1);
    assert_eq!(ledger_versions(&db).await, [1]);
}

#[tokio::test]
async fn a_changed_or_unknown_version_is_refused_and_nothing_is_applied() {
    let (_server, poly, db) = setup("tenant_x", 4).await;
    let v1 = |coll: &str| Migration::new(1, "create", vec![Step::command(doc! { "create": coll })]);
    let first = Migrations::new(vec![v1("a")]).unwrap();
    poly.migrate_database("tenant_x", &first).await.unwrap();

    let changed = Migrations::new(vec![v1("b"), counting(2)]).unwrap();
    let err = poly
        .migrate_database("tenant_x", &changed)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Migration);
    assert!(!err.is_retryable());
    match migration_error(&err) {
        MigrationError::ChecksumMismatch {
            database, version, ..
        } => assert_eq!((database.as_str(), *version), ("tenant_x", 1)),
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("migration 1"), "{err}");
    assert_eq!(ledger_versions(&db).await, [1]);
    assert_eq!(runs(&db, 2).await, [0, 0], "version 2 was not run");
    let status = poly.migration_status("tenant_x", &changed).await.unwrap();
    assert_eq!(status.changed, [1]);
    assert!(lock_doc(&db).await.is_none(), "released after a refusal");

    // A code migration whose code_version changed is refused the same way.
    let with_code = Migrations::new(vec![v1("a"), counting(2)]).unwrap();
    poly.migrate_database("tenant_x", &with_code).await.unwrap();
    let bumped = Migrations::new(vec![v1("a"), counting(2).code_version("2")]).unwrap();
    let err = poly
        .migrate_database("tenant_x", &bumped)
        .await
        .unwrap_err();
    assert!(matches!(
        migration_error(&err),
        MigrationError::ChecksumMismatch { version: 2, .. }
    ));

    // The ledger knows version 2, these definitions do not (an older binary).
    let err = poly.migrate_database("tenant_x", &first).await.unwrap_err();
    assert!(matches!(
        migration_error(&err),
        MigrationError::UnknownVersion { version: 2, .. }
    ));
    assert_eq!(runs(&db, 2).await, [0, 1]);
}

#[test]
fn invalid_sets_are_refused_naming_the_version() {
    let refused = |ms: Vec<Migration>| match Migrations::new(ms) {
        Err(Error::Migration(m)) => *m,
        Err(other) => panic!("unexpected {other}"),
        Ok(_) => panic!("accepted"),
    };
    let drop = |v: u64| Migration::new(v, "d", vec![Step::command(doc! { "drop": "c" })]);
    assert_eq!(
        refused(vec![drop(1), drop(2), drop(1)]),
        MigrationError::DuplicateVersion { version: 1 }
    );
    assert!(matches!(
        refused(vec![drop(0)]),
        MigrationError::ZeroVersion { .. }
    ));
    assert_eq!(
        refused(vec![Migration::new(
            3,
            " ",
            vec![Step::command(doc! { "drop": "c" })]
        )]),
        MigrationError::EmptyName { version: 3 }
    );
    assert_eq!(
        refused(vec![Migration::new(4, "none", vec![])]),
        MigrationError::NoSteps { version: 4 }
    );
    assert_eq!(
        refused(vec![Migration::new(
            5,
            "code",
            vec![Step::code(|_db| async { Ok(()) })]
        )]),
        MigrationError::MissingCodeVersion { version: 5 }
    );
    let disallowed = refused(vec![Migration::new(
        6,
        "wipe",
        vec![Step::command(doc! { "dropDatabase": 1 })],
    )]);
    assert_eq!(
        disallowed,
        MigrationError::CommandNotAllowed {
            version: 6,
            command: "dropDatabase".into()
        }
    );
    assert!(disallowed.to_string().contains("dropDatabase"));
    let cross = refused(vec![Migration::new(
        7,
        "elsewhere",
        vec![Step::command(
            doc! { "insert": "c", "documents": [{}], "$db": "other" },
        )],
    )]);
    assert!(
        matches!(&cross, MigrationError::CrossDatabase { version: 7, field, .. } if field == "$db"),
        "{cross:?}"
    );
    let rename = refused(vec![Migration::new(
        8,
        "rename",
        vec![Step::command(
            doc! { "renameCollection": "a", "to": { "db": "x" } },
        )],
    )]);
    assert!(matches!(
        rename,
        MigrationError::CrossDatabase { version: 8, .. }
    ));
}

#[test]
fn the_ledger_collection_is_reserved() {
    match polymongo::validate_collection_name(MIGRATIONS_COLLECTION) {
        Err(Error::InvalidName { rule, .. }) => {
            assert_eq!(rule, polymongo::NameRule::ReservedPrefix)
        }
        other => panic!("accepted: {other:?}"),
    }
}

#[tokio::test]
async fn concurrent_runners_apply_each_version_exactly_once() {
    let (_server, poly, db) = setup("tenant_cc", 16).await;
    let migrations = counting_set(4);
    let runners: Vec<_> = (0..8)
        .map(|_| {
            let poly = poly.clone();
            let migrations = migrations.clone();
            tokio::spawn(async move { poly.migrate_database("tenant_cc", &migrations).await })
        })
        .collect();
    let mut applied = 0;
    for r in runners {
        let report = r.await.unwrap().unwrap();
        assert!(report.is_complete());
        assert_eq!(report.current_version, 4);
        applied += report.applied.len();
    }
    assert_eq!(applied, 4, "each version applied by exactly one runner");
    assert_eq!(runs(&db, 4).await, [1, 1, 1, 1]);
    assert_eq!(ledger_versions(&db).await, [1, 2, 3, 4]);
    assert!(lock_doc(&db).await.is_none());
}

#[tokio::test]
async fn a_held_lock_blocks_and_an_expired_one_is_taken_over() {
    let (_server, poly, db) = setup("tenant_l", 4).await;
    let locks = db.collection::<Document>(MIGRATIONS_COLLECTION);
    let in_ten_minutes = DateTime::now().timestamp_millis() + 600_000;
    locks
        .insert_one(
            doc! { "_id": "lock", "owner": "other-host/pid 1/run 1", "expires_at_ms": in_ten_minutes },
        )
        .await
        .unwrap();
    let migrations = counting_set(2);

    let err = poly
        .migrator()
        .lock_wait(Duration::from_millis(100))
        .apply("tenant_l", &migrations)
        .await
        .unwrap_err();
    match migration_error(&err) {
        MigrationError::LockHeld { owner, .. } => assert_eq!(owner, "other-host/pid 1/run 1"),
        other => panic!("unexpected {other}"),
    }
    assert!(err.is_retryable(), "nothing was applied");
    assert_eq!(runs(&db, 2).await, [0, 0]);
    assert!(ledger_versions(&db).await.is_empty());
    let status = poly
        .migration_status("tenant_l", &migrations)
        .await
        .unwrap();
    let holder = status.lock.expect("the lock is reported");
    assert_eq!(holder.owner, "other-host/pid 1/run 1");
    assert!(!holder.is_expired());
    assert_eq!(
        lock_doc(&db).await.unwrap().get_str("owner").unwrap(),
        "other-host/pid 1/run 1",
        "a refused runner leaves the holder's lock alone"
    );

    // The holder died: its lock expired.
    let a_minute_ago = DateTime::now().timestamp_millis() - 60_000;
    locks
        .update_one(
            doc! { "_id": "lock" },
            doc! { "$set": { "expires_at_ms": a_minute_ago } },
        )
        .await
        .unwrap();
    let report = poly
        .migrator()
        .lock_wait(Duration::ZERO)
        .apply("tenant_l", &migrations)
        .await
        .unwrap();
    assert_eq!(report.applied.len(), 2);
    assert_eq!(runs(&db, 2).await, [1, 1]);
    assert!(lock_doc(&db).await.is_none());
}

/// A wait too long to name an instant ("wait for as long as it takes") is a wait, not a
/// panic: the first call computed its deadline as `now + wait`.
#[tokio::test]
async fn a_lock_wait_of_duration_max_waits_and_applies() {
    let (_server, poly, db) = setup("tenant_lw", 4).await;
    let migrations = counting_set(2);
    let report = poly
        .migrator()
        .lock_wait(Duration::MAX)
        .apply("tenant_lw", &migrations)
        .await
        .unwrap();
    assert_eq!(report.applied.len(), 2);
    assert_eq!(runs(&db, 2).await, [1, 1]);
    assert!(lock_doc(&db).await.is_none());
}

#[tokio::test]
async fn the_lock_is_renewed_while_a_long_step_runs() {
    let (_server, poly, db) = setup("tenant_r", 4).await;
    // The step waits until its lock's expiry has moved forward twice: only renewal does that.
    let migrations = Migrations::new(vec![Migration::new(
        1,
        "long",
        vec![Step::code(|db| async move {
            let locks = db.collection::<Document>(MIGRATIONS_COLLECTION);
            let expiry = |d: Option<Document>| d.and_then(|d| d.get_i64("expires_at_ms").ok());
            let first = expiry(locks.find_one(doc! { "_id": "lock" }).await?).ok_or("no lock")?;
            let until = tokio::time::Instant::now() + Duration::from_secs(20);
            let mut seen = first;
            let mut renewals = 0;
            while renewals < 2 {
                if tokio::time::Instant::now() > until {
                    return Err("the lock was not renewed".into());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                let now =
                    expiry(locks.find_one(doc! { "_id": "lock" }).await?).ok_or("lock gone")?;
                if now > seen {
                    renewals += 1;
                    seen = now;
                }
            }
            Ok(())
        })],
    )
    .code_version("1")])
    .unwrap();
    let report = poly
        .migrator()
        .lock_ttl(Duration::from_millis(300))
        .apply("tenant_r", &migrations)
        .await
        .unwrap();
    assert!(report.is_complete(), "{:?}", report.failed);
    assert_eq!(ledger_versions(&db).await, [1]);
}

#[tokio::test]
async fn cancelled_runs_and_reruns_apply_every_version_exactly_once() {
    let (_server, poly, db) = setup("tenant_t", 4).await;
    const N: u64 = 12;
    let migrations = counting_set(N);
    let mut delay = Duration::from_micros(500);
    let mut cancelled = 0;
    for _ in 0..16 {
        match tokio::time::timeout(delay, poly.migrate_database("tenant_t", &migrations)).await {
            Ok(report) => {
                let report = report.unwrap();
                assert!(report.is_complete());
                if report.current_version == N {
                    break;
                }
            }
            Err(_) => {
                cancelled += 1;
                delay *= 2;
            }
        }
    }
    assert!(cancelled > 0, "no run was cancelled");
    // Whatever the cancellations left, one more run finishes (it waits for a lock a cancelled
    // run still holds while it finishes its version).
    let last = poly
        .migrate_database("tenant_t", &migrations)
        .await
        .unwrap();
    assert_eq!(last.current_version, N);
    eventually("the lock released", Duration::from_secs(10), || async {
        lock_doc(&db).await.is_none().then_some(())
    })
    .await;
    assert_eq!(runs(&db, N).await, vec![1; N as usize]);
    assert_eq!(
        ledger_versions(&db).await,
        (1..=N as i64).collect::<Vec<_>>()
    );
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Profile {
    email: String,
}

impl polymongo::Model for Profile {
    const COLLECTION: &'static str = "profiles";

    fn indexes() -> Vec<mongodb::IndexModel> {
        vec![
            mongodb::IndexModel::builder()
                .keys(doc! { "email": 1 })
                .build(),
            mongodb::IndexModel::builder()
                .keys(doc! { "plan": 1, "created": 1 })
                .build(),
        ]
    }
}

/// The same collection, later, with one more index.
struct ProfileLater;

impl polymongo::Model for ProfileLater {
    const COLLECTION: &'static str = "profiles";

    fn indexes() -> Vec<mongodb::IndexModel> {
        let mut more = Profile::indexes();
        more.push(
            mongodb::IndexModel::builder()
                .keys(doc! { "team": 1 })
                .build(),
        );
        more
    }
}

/// Index keys of `coll`, as the server lists them (names vary between servers).
async fn index_keys(db: &Database, coll: &str) -> Vec<Document> {
    let cursor = db
        .collection::<Document>(coll)
        .list_indexes()
        .await
        .unwrap();
    let mut keys: Vec<Document> = futures_util::TryStreamExt::try_collect(cursor)
        .await
        .map(|v: Vec<mongodb::IndexModel>| v.into_iter().map(|m| m.keys).collect())
        .unwrap();
    keys.sort_by_key(|k| k.to_string());
    keys
}

#[tokio::test]
async fn a_model_s_declared_indexes_become_a_sync_step() {
    let (_server, poly, db) = setup("sync_idx", 4).await;
    db.collection::<Document>("profiles")
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "old": 1 })
                .build(),
        )
        .await
        .unwrap();
    let v1 = || Migration::new(1, "profile-indexes", vec![Step::sync_indexes::<Profile>()]);
    let report = poly
        .migrate_database("sync_idx", &Migrations::new(vec![v1()]).unwrap())
        .await
        .unwrap();
    assert!(report.is_complete(), "{:?}", report.failed);
    let with_old = index_keys(&db, "profiles").await;
    assert_eq!(with_old.len(), 4, "{with_old:?}");
    assert!(
        with_old.contains(&doc! { "old": 1 }),
        "undeclared kept unless asked"
    );
    assert!(with_old.contains(&doc! { "plan": 1, "created": 1 }));

    let v2 = Migration::new(
        2,
        "profile-indexes-exact",
        vec![Step::sync_indexes_dropping_undeclared::<Profile>()],
    );
    let set = Migrations::new(vec![v1(), v2]).unwrap();
    assert!(poly
        .migrate_database("sync_idx", &set)
        .await
        .unwrap()
        .is_complete());
    let keys = index_keys(&db, "profiles").await;
    assert_eq!(
        keys,
        vec![
            doc! { "_id": 1 },
            doc! { "email": 1 },
            doc! { "plan": 1, "created": 1 }
        ]
    );
    // The checksum names the collection, not the specs: the applied version stays valid
    // when the model's indexes change later.
    let later = Migration::new(
        1,
        "profile-indexes",
        vec![Step::sync_indexes::<ProfileLater>()],
    );
    assert_eq!(
        Migrations::new(vec![later]).unwrap().checksum(1),
        set.checksum(1)
    );
}

#[tokio::test]
async fn close_all_waits_for_the_version_in_progress_and_starts_no_other() {
    let (_server, poly, db) = setup("closing_mig", 4).await;
    let started = std::sync::Arc::new(tokio::sync::Notify::new());
    let signal = std::sync::Arc::clone(&started);
    let slow = Migration::new(
        1,
        "slow",
        vec![Step::code(move |db| {
            let signal = std::sync::Arc::clone(&signal);
            async move {
                signal.notify_one();
                tokio::time::sleep(Duration::from_millis(400)).await;
                db.collection::<Document>("effects")
                    .insert_one(doc! { "_id": 1_i64, "runs": 1 })
                    .await?;
                Ok(())
            }
        })],
    )
    .code_version("1");
    let set = Migrations::new(vec![slow, counting(2)]).unwrap();
    let run = {
        let (poly, set) = (poly.clone(), set.clone());
        tokio::spawn(async move { poly.migrate_database("closing_mig", &set).await })
    };
    started.notified().await;
    let closed = poly.close_all(Duration::from_secs(10)).await;
    assert_eq!(
        closed.pools_forced, 0,
        "the close waited for the version: {closed:?}"
    );
    let report = run.await.unwrap().unwrap();
    assert!(report.stopped && !report.is_complete(), "{report:?}");
    assert_eq!(report.applied.len(), 1);
    assert_eq!(ledger_versions(&db).await, vec![1]);
    assert_eq!(runs(&db, 2).await, vec![1, 0], "version 2 not started");
    assert!(lock_doc(&db).await.is_none(), "lock released");
    // A closed manager refuses new runs.
    let refused = poly
        .migrate_database("closing_mig", &set)
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Closed), "{refused}");
}
