//! `polymongo migrate status|plan|apply|rollback` end to end: the built binary over a folder
//! of migration files against a test-kit server, effects checked with a raw client; a runner
//! killed mid-run and started again; bad input; and the embedded runner with code
//! migrations.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures_util::{StreamExt, TryStreamExt};
use polymongo::migrate::{Migration, Migrations, Step, MIGRATIONS_COLLECTION};
use polymongo::mongodb::bson::{doc, Bson, Document};
use polymongo::mongodb::{Client, Database};
use polymongo::PolyMongo;
use polymongo_cli::migrate::{MigrateCli, MigrateCommand, Output};
use polymongo_testkit::TestServer;
use serde_json::Value;

use common::{free_port, run, BIN};

async fn server() -> TestServer {
    TestServer::start().await.expect("test server")
}

async fn raw(server: &TestServer) -> Client {
    Client::with_uri_str(server.uri())
        .await
        .expect("raw client")
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:04}")).collect()
}

/// Creates each database with one document, a few at a time.
async fn create(raw: &Client, names: &[String]) {
    futures_util::stream::iter(names.iter().cloned())
        .map(|name| {
            let raw = raw.clone();
            async move {
                raw.database(&name)
                    .collection::<Document>("seed")
                    .insert_one(doc! { "created": true })
                    .await
                    .expect("create the database");
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
}

/// A folder of migration files.
fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write a migration file");
    }
    dir
}

fn dir_arg(dir: &Path) -> String {
    dir.to_str().expect("UTF-8 path").to_owned()
}

const INDEX: &str = r#"{"up": [{"createIndexes": "users", "indexes": [{"key": {"email": 1}, "name": "email_1"}]}],
  "down": [{"dropIndexes": "users", "index": "email_1"}]}"#;
const SEED: &str = r#"{"up": [{"insert": "settings", "documents": [{"_id": "plan", "value": "free"}], "ordered": false}],
  "down": [{"delete": "settings", "deletes": [{"q": {"_id": "plan"}, "limit": 1}]}]}"#;
const SEED_WITHOUT_DOWN: &str = r#"{"up": [{"insert": "settings", "documents": [{"_id": "plan", "value": "free"}], "ordered": false}]}"#;
const COUNT: &str = r#"{"up": [{"update": "effects", "updates": [{"q": {"_id": "counter"}, "u": {"$inc": {"runs": 1}}, "upsert": true}]}],
  "down": [{"delete": "effects", "deletes": [{"q": {"_id": "counter"}, "limit": 1}]}]}"#;

/// Index, seed document, counter: the three versions most tests apply.
fn three() -> tempfile::TempDir {
    folder(&[
        ("0001_users-email-index.json", INDEX),
        ("0002_seed-settings.json", SEED),
        ("0003_count.json", COUNT),
    ])
}

fn int(b: &Bson) -> Option<i64> {
    match b {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        _ => None,
    }
}

async fn all(db: &Database, coll: &str) -> Vec<Document> {
    db.collection::<Document>(coll)
        .find(doc! {})
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("read")
}

/// The versions in a database's ledger (documents with an integer `_id`), in order.
async fn ledger(db: &Database) -> Vec<i64> {
    let mut versions: Vec<i64> = all(db, MIGRATIONS_COLLECTION)
        .await
        .iter()
        .filter_map(|d| d.get("_id").and_then(int))
        .collect();
    versions.sort_unstable();
    versions
}

/// The ledger's special document (`lock`, `failed`).
async fn special(db: &Database, id: &str) -> Option<Document> {
    db.collection::<Document>(MIGRATIONS_COLLECTION)
        .find_one(doc! { "_id": id })
        .await
        .expect("read the ledger")
}

async fn counter(db: &Database) -> Option<i64> {
    special_in(db, "effects", "counter")
        .await
        .and_then(|d| d.get("runs").and_then(int))
}

async fn special_in(db: &Database, coll: &str, id: &str) -> Option<Document> {
    db.collection::<Document>(coll)
        .find_one(doc! { "_id": id })
        .await
        .expect("read")
}

async fn has_index_on(db: &Database, coll: &str, field: &str) -> bool {
    let Ok(cursor) = db.collection::<Document>(coll).list_indexes().await else {
        return false;
    };
    let keys: Vec<Document> = cursor
        .map_ok(|m| m.keys)
        .try_collect()
        .await
        .expect("indexes");
    keys.iter().any(|k| k.contains_key(field))
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// `{"1": 40, ...}` as a map of numbers.
fn counts(v: &Value) -> BTreeMap<u64, u64> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .iter()
        .map(|(k, n)| (k.parse().expect("a version"), n.as_u64().expect("a count")))
        .collect()
}

/// The outcome of `database` in a run's JSON report.
fn outcome<'a>(report: &'a Value, database: &str) -> &'a Value {
    report["databases"]
        .as_array()
        .expect("databases")
        .iter()
        .find(|d| d["database"] == database)
        .unwrap_or_else(|| panic!("{database} not in the report"))
}

fn versions_of(list: &Value) -> Vec<u64> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|v| v["version"].as_u64().expect("a version"))
        .collect()
}

#[tokio::test]
async fn apply_over_a_folder_brings_every_prefixed_database_to_the_latest_version() {
    let server = server().await;
    let raw = raw(&server).await;
    let list = names("mt_", 40);
    create(&raw, &list).await;
    create(&raw, &["other_db".to_owned()]).await;
    let dir = three();
    let (uri, dir) = (server.uri(), dir_arg(dir.path()));
    let base = ["--uri", uri, "migrate", "--dir", &dir];

    let (code, out, err) =
        run(&[&base[..], &["status", "--prefix", "mt_", "--json"]].concat()).await;
    assert_eq!(code, 0, "{err}");
    let before = json(&out);
    assert_eq!(before["total"], 40);
    assert_eq!(before["latest"], 3);
    assert_eq!(before["up_to_date"], 0);
    assert_eq!(counts(&before["at_version"]), BTreeMap::from([(0, 40)]));
    assert_eq!(
        counts(&before["pending"]),
        BTreeMap::from([(1, 40), (2, 40), (3, 40)])
    );

    let (code, out, err) = run(&[&base[..], &["plan", "--prefix", "mt_"]].concat()).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("would work on 40 of 40 databases"), "{out}");
    for v in 1..=3 {
        assert!(
            out.lines()
                .any(|l| l.trim().starts_with(&format!("version {v} "))
                    && l.trim().ends_with("40 databases")),
            "version {v} in\n{out}"
        );
    }
    let (code, out, _) = run(&[
        &base[..],
        &["apply", "--prefix", "mt_", "--dry-run", "--json"],
    ]
    .concat())
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        counts(&json(&out)["plan"]),
        BTreeMap::from([(1, 40), (2, 40), (3, 40)])
    );

    let (code, out, err) = run(&[
        &base[..],
        &["apply", "--prefix", "mt_", "--concurrency", "6", "--json"],
    ]
    .concat())
    .await;
    assert_eq!(code, 0, "{err}\n{out}");
    let report = json(&out);
    assert_eq!(report["complete"], true);
    assert_eq!(report["succeeded"], 40);
    assert_eq!(report["versions_done"], 120);
    for name in &list {
        assert_eq!(versions_of(&outcome(&report, name)["applied"]), [1, 2, 3]);
        let db = raw.database(name);
        assert_eq!(ledger(&db).await, [1, 2, 3], "{name}");
        assert_eq!(
            all(&db, "settings").await.len(),
            1,
            "{name}: one seed document"
        );
        assert_eq!(counter(&db).await, Some(1), "{name}: the counter ran once");
        assert!(has_index_on(&db, "users", "email").await, "{name}: index");
    }
    assert!(
        ledger(&raw.database("other_db")).await.is_empty(),
        "a database outside the prefix is not touched"
    );

    let (code, out, _) = run(&[&base[..], &["status", "--prefix", "mt_", "--json"]].concat()).await;
    assert_eq!(code, 0);
    let after = json(&out);
    assert_eq!(after["up_to_date"], 40);
    assert_eq!(counts(&after["at_version"]), BTreeMap::from([(3, 40)]));
    assert!(counts(&after["pending"]).is_empty());

    // Again: nothing left to do, nothing done twice.
    let (code, out, err) = run(&[&base[..], &["apply", "--prefix", "mt_"]].concat()).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("40 of 40 databases done, 0 failed, 0 not started; 0 versions applied"),
        "{out}"
    );
    assert_eq!(counter(&raw.database("mt_0007")).await, Some(1));
}

#[tokio::test]
async fn failing_databases_are_named_with_their_error_and_canaries_and_budgets_stop_the_rest() {
    let server = server().await;
    let raw = raw(&server).await;
    let dir = three();
    let (uri, dir) = (server.uri(), dir_arg(dir.path()));
    let base = ["--uri", uri, "migrate", "--dir", &dir];
    // Version 2 inserts a document with a fixed `_id`: a database that has it already
    // refuses the insert (duplicate key). (nx-27017 answers `create` of an existing
    // collection with `ok`, so a NamespaceExists failure cannot be provoked there.)
    let precreate = |names: &'static [&'static str]| {
        let raw = raw.clone();
        async move {
            for name in names {
                raw.database(name)
                    .collection::<Document>("settings")
                    .insert_one(doc! { "_id": "plan", "value": "taken" })
                    .await
                    .expect("pre-insert the seed document");
            }
        }
    };

    // Three databases already have the document version 2 inserts.
    let list = names("mf_", 40);
    create(&raw, &list).await;
    const FAILING: &[&str] = &["mf_0003", "mf_0017", "mf_0031"];
    precreate(FAILING).await;
    let (code, out, err) = run(&[
        &base[..],
        &["apply", "--prefix", "mf_", "--concurrency", "6"],
    ]
    .concat())
    .await;
    assert_eq!(code, 5, "{err}\n{out}");
    assert!(
        out.contains("37 of 40 databases done, 3 failed, 0 not started"),
        "{out}"
    );
    for name in &list {
        let db = raw.database(name);
        if FAILING.contains(&name.as_str()) {
            let line = out
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{name}:")))
                .unwrap_or_else(|| panic!("{name} not named in\n{out}"));
            assert!(
                line.contains("migration 2 (seed-settings) failed at step 0")
                    && line.contains("11000"),
                "{line}"
            );
            assert_eq!(ledger(&db).await, [1], "{name}");
            assert_eq!(counter(&db).await, None, "{name}: version 3 not run");
        } else {
            assert_eq!(ledger(&db).await, [1, 2, 3], "{name}");
            assert_eq!(counter(&db).await, Some(1), "{name}");
        }
    }
    let (code, out, _) = run(&[&base[..], &["status", "--prefix", "mf_", "--json"]].concat()).await;
    assert_eq!(code, 0, "failures found by status are not a partial read");
    let status = json(&out);
    let failed: BTreeSet<&str> = status["failed"]
        .as_array()
        .expect("failed")
        .iter()
        .map(|f| {
            assert_eq!(f["version"], 2);
            assert!(!f["error"].as_str().expect("error").is_empty());
            f["database"].as_str().expect("name")
        })
        .collect();
    assert_eq!(failed, FAILING.iter().copied().collect());
    assert_eq!(counts(&status["pending"]), BTreeMap::from([(2, 3), (3, 3)]));

    // A canary that fails: nothing else is touched.
    let list = names("mc_", 20);
    create(&raw, &list).await;
    precreate(&["mc_0001"]).await;
    let (code, out, err) = run(&[
        &base[..],
        &["apply", "--prefix", "mc_", "--canary", "2", "--json"],
    ]
    .concat())
    .await;
    assert_eq!(code, 5, "{err}\n{out}");
    let report = json(&out);
    assert_eq!(report["stopped"]["reason"], "canary_failed");
    assert_eq!(report["stopped"]["database"], "mc_0001");
    assert_eq!(report["not_started"].as_array().expect("list").len(), 18);
    let failure = &outcome(&report, "mc_0001")["failure"];
    assert_eq!(failure["version"], 2);
    assert!(!failure["error"].as_str().expect("error").is_empty());
    assert_eq!(ledger(&raw.database("mc_0000")).await, [1, 2, 3]);
    assert_eq!(ledger(&raw.database("mc_0001")).await, [1]);
    for name in &list[2..] {
        let db = raw.database(name);
        assert!(ledger(&db).await.is_empty(), "{name} untouched");
        assert!(
            !has_index_on(&db, "users", "email").await,
            "{name} untouched"
        );
        assert!(all(&db, "settings").await.is_empty(), "{name} untouched");
    }

    // A budget of one failure: no new database once it is spent.
    let list = names("mb_", 30);
    create(&raw, &list).await;
    precreate(&["mb_0005"]).await;
    let (code, out, err) = run(&[
        &base[..],
        &[
            "apply",
            "--prefix",
            "mb_",
            "--concurrency",
            "2",
            "--max-failures",
            "1",
            "--json",
        ],
    ]
    .concat())
    .await;
    assert_eq!(code, 5, "{err}\n{out}");
    let report = json(&out);
    assert_eq!(report["stopped"]["reason"], "failure_budget");
    assert_eq!(report["failed"], 1);
    let not_started: Vec<&str> = report["not_started"]
        .as_array()
        .expect("list")
        .iter()
        .map(|n| n.as_str().expect("name"))
        .collect();
    assert!(not_started.len() >= 20, "{not_started:?}");
    for name in &not_started {
        assert!(
            ledger(&raw.database(name)).await.is_empty(),
            "{name} untouched"
        );
    }
    assert_eq!(
        report["succeeded"].as_u64().expect("count") + 1 + not_started.len() as u64,
        30
    );
}

/// Where a killed runner was on one database, read from its ledger collection.
#[derive(Debug)]
struct Cut {
    /// Versions recorded.
    ledger: Vec<i64>,
    /// A lock document was left (the runner held the database when it died).
    locked: bool,
    /// The work the lock records (`applying`: version, steps done, down).
    marker: Option<(i64, i64, bool)>,
}

impl Cut {
    /// The step the dead runner may have been in, as the library reads a taken-over lock:
    /// its marker while the marked version is not recorded; else, a lock left without one,
    /// the first step of the first pending version (a version's first step is not marked).
    /// `exact`: whether the library must resume there (a live marker), or may (no marker).
    fn point(&self) -> Option<((i64, i64), bool)> {
        if let Some((v, step, false)) = self.marker {
            if !self.ledger.contains(&v) {
                return Some(((v, step), true));
            }
        }
        if !self.locked {
            return None;
        }
        (1..=3)
            .find(|v| !self.ledger.contains(v))
            .map(|v| ((v, 0), false))
    }
}

#[tokio::test]
async fn a_killed_runner_is_finished_by_the_next_run_with_nothing_applied_twice() {
    let server = server().await;
    let raw = raw(&server).await;
    let list = names("mk_", 150);
    create(&raw, &list).await;
    let dir = three();
    let (uri, dir) = (server.uri().to_owned(), dir_arg(dir.path()));

    let started = Instant::now();
    let mut child = std::process::Command::new(BIN)
        .args([
            "--uri",
            &uri,
            "migrate",
            "--dir",
            &dir,
            "apply",
            "--prefix",
            "mk_",
            "--concurrency",
            "8",
            "--lock-ttl",
            "2",
            "--quiet",
        ])
        .env_remove("MONGODB_URI")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    // Killed (SIGKILL) once 30 databases are done, seen from a raw client. Names run in
    // order, 8 at a time: each poll reads the ledgers of a window past the databases already
    // seen complete (a complete ledger stays complete), so polls stay short.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut complete_seen = BTreeSet::new();
    while complete_seen.len() < 30 {
        let window: Vec<&String> = list
            .iter()
            .filter(|n| !complete_seen.contains(*n))
            .take(24)
            .collect();
        for name in window {
            if ledger(&raw.database(name)).await.len() == 3 {
                complete_seen.insert(name.clone());
            }
        }
        if complete_seen.len() >= 30 {
            break;
        }
        if let Some(status) = child.try_wait().expect("poll the runner") {
            panic!(
                "the runner ended ({status}) before it could be killed; {} seen done",
                complete_seen.len()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the runner made no progress: {} done",
            complete_seen.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("SIGKILL");
    let killed_after = started.elapsed();
    child.wait().expect("reap");

    let mut cuts = BTreeMap::new();
    for name in &list {
        let db = raw.database(name);
        let lock = special(&db, "lock").await;
        let marker = lock.as_ref().and_then(|lock| {
            let m = lock.get_document("applying").ok()?;
            Some((
                m.get("version").and_then(int)?,
                m.get("steps_done").and_then(int)?,
                m.get_bool("down").unwrap_or(false),
            ))
        });
        cuts.insert(
            name.clone(),
            Cut {
                ledger: ledger(&db).await,
                locked: lock.is_some(),
                marker,
            },
        );
    }
    let complete = cuts.values().filter(|c| c.ledger.len() == 3).count();
    let locked = cuts.values().filter(|c| c.locked).count();
    assert!(
        (30..150).contains(&complete),
        "{complete} complete when killed"
    );
    assert!(locked > 0, "the runner was killed with work in flight");

    let rerun_started = Instant::now();
    let (code, out, err) = run(&[
        "--uri",
        &uri,
        "migrate",
        "--dir",
        &dir,
        "apply",
        "--prefix",
        "mk_",
        "--concurrency",
        "8",
        "--lock-wait",
        "30",
        "--json",
    ])
    .await;
    let rerun = rerun_started.elapsed();
    assert_eq!(code, 0, "{err}\n{out}");
    let report = json(&out);
    assert_eq!(report["complete"], true);

    let (mut resumed, mut maybe_twice, mut twice) = (0, 0, 0);
    for (name, cut) in &cuts {
        let db = raw.database(name);
        assert_eq!(ledger(&db).await, [1, 2, 3], "{name}");
        // Exactly the versions left, none applied twice.
        let o = outcome(&report, name);
        let left: Vec<u64> = (1..=3)
            .filter(|v| !cut.ledger.contains(&(*v as i64)))
            .collect();
        assert_eq!(versions_of(&o["applied"]), left, "{name}: {cut:?}");
        // The interrupted version is finished first, from its cut step; nothing else is
        // resumed.
        let point = cut.point();
        let got = o["resumed"].as_u64().map(|v| v as i64);
        match point {
            Some(((v, _), true)) => assert_eq!(got, Some(v), "{name}: {cut:?}"),
            Some(((v, _), false)) => assert!(got.is_none() || got == Some(v), "{name}: {cut:?}"),
            None => assert_eq!(got, None, "{name}: {cut:?}"),
        }
        resumed += usize::from(got.is_some());
        assert_eq!(all(&db, "settings").await.len(), 1, "{name}: the seed once");
        // Only the step in flight when the runner died may run again: the counter's.
        let runs = counter(&db).await.expect("the counter");
        if point.is_some_and(|(at, _)| at == (3, 0)) {
            maybe_twice += 1;
            twice += usize::from(runs == 2);
            assert!(runs == 1 || runs == 2, "{name}: {runs} runs");
        } else {
            assert_eq!(runs, 1, "{name}: {cut:?}");
        }
    }
    assert_eq!(report["resumed"], resumed);
    eprintln!(
        "kill/resume: killed after {:.2} s with {complete} databases complete and {locked} \
         locks left ({resumed} resumed, {maybe_twice} possibly cut in the counter step, \
         {twice} of them counted twice); rerun {:.2} s",
        killed_after.as_secs_f64(),
        rerun.as_secs_f64()
    );
}

#[tokio::test]
async fn rollback_undoes_versions_and_refuses_to_pass_a_version_without_down_steps() {
    let server = server().await;
    let raw = raw(&server).await;
    let list = names("mr_", 10);
    create(&raw, &list).await;
    let dir = three();
    let (uri, dir_path) = (server.uri(), dir_arg(dir.path()));
    let base = ["--uri", uri, "migrate", "--dir", &dir_path];
    let (code, _, err) = run(&[&base[..], &["apply", "--prefix", "mr_"]].concat()).await;
    assert_eq!(code, 0, "{err}");

    let (code, out, _) = run(&[
        &base[..],
        &["plan", "--prefix", "mr_", "--rollback-to", "1", "--json"],
    ]
    .concat())
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        counts(&json(&out)["plan"]),
        BTreeMap::from([(2, 10), (3, 10)])
    );

    let (code, out, err) = run(&[
        &base[..],
        &["rollback", "--to", "1", "--prefix", "mr_", "--json"],
    ]
    .concat())
    .await;
    assert_eq!(code, 0, "{err}\n{out}");
    let report = json(&out);
    assert_eq!(report["action"], "rollback");
    assert_eq!(report["versions_done"], 20);
    for name in &list {
        assert_eq!(versions_of(&outcome(&report, name)["rolled_back"]), [3, 2]);
        let db = raw.database(name);
        assert_eq!(ledger(&db).await, [1], "{name}");
        assert!(
            all(&db, "settings").await.is_empty(),
            "{name}: seed deleted"
        );
        assert_eq!(counter(&db).await, None, "{name}: counter deleted");
        assert!(has_index_on(&db, "users", "email").await, "{name}: 1 kept");
    }

    // The same migrations with version 2 lacking its down steps (down is not part of the
    // checksum, so the ledgers still match): a rollback past 2 is refused, nothing undone.
    let (code, _, err) = run(&[&base[..], &["apply", "--prefix", "mr_"]].concat()).await;
    assert_eq!(code, 0, "{err}");
    let without = folder(&[
        ("0001_users-email-index.json", INDEX),
        ("0002_seed-settings.json", SEED_WITHOUT_DOWN),
        ("0003_count.json", COUNT),
    ]);
    let without = dir_arg(without.path());
    for command in [
        &["rollback", "--to", "1"][..],
        &["plan", "--rollback-to", "1"],
    ] {
        let (code, out, err) = run(&[
            &["--uri", uri, "migrate", "--dir", &without][..],
            command,
            &["--prefix", "mr_"],
        ]
        .concat())
        .await;
        assert_eq!(code, 3, "{command:?}: {err}\n{out}");
        assert!(err.contains("migration 2 has no down steps"), "{err}");
    }
    // Rolling back only what has down steps is allowed.
    let (code, _, err) = run(&[
        &["--uri", uri, "migrate", "--dir", &without][..],
        &["rollback", "--to", "2", "--prefix", "mr_"],
    ]
    .concat())
    .await;
    assert_eq!(code, 0, "{err}");
    for name in &list {
        let db = raw.database(name);
        assert_eq!(ledger(&db).await, [1, 2], "{name}");
        assert_eq!(all(&db, "settings").await.len(), 1, "{name}: 2 not undone");
    }
}

/// A bad folder: what it is, its files, what the error must say.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);

#[tokio::test]
async fn bad_input_exits_3_naming_the_file_the_field_or_the_name() {
    // Nothing here needs a server: a closed port proves nothing is sent.
    let uri = format!(
        "mongodb://127.0.0.1:{}/?directConnection=true&serverSelectionTimeoutMS=200",
        free_port()
    );
    let cases: &[Case] = &[
        (
            "not JSON",
            &[("0001_a.json", INDEX), ("0002_broken.json", "{\"up\": [")],
            &["0002_broken.json", "not a JSON document"],
        ),
        (
            "a command not allowed",
            &[(
                "0001_a.json",
                r#"{"up": [{"drop": "a"}, {"dropDatabase": 1}]}"#,
            )],
            &["0001_a.json", "field up[1]", "dropDatabase"],
        ),
        (
            "a field of the wrong type",
            &[(
                "0001_a.json",
                r#"{"up": [{"drop": "a"}], "down": {"create": "a"}}"#,
            )],
            &["0001_a.json", "field down", "expected an array"],
        ),
        (
            "an unknown field",
            &[(
                "0001_a.json",
                r#"{"up": [{"drop": "a"}], "description": "x"}"#,
            )],
            &["0001_a.json", "field description"],
        ),
        (
            "a gap",
            &[("0001_a.json", INDEX), ("0003_c.json", COUNT)],
            &["jump from 1 to 3", "0001_a.json", "0003_c.json"],
        ),
        (
            "a duplicate",
            &[
                ("0001_a.json", INDEX),
                ("0002_a.json", SEED),
                ("2_b.json", COUNT),
            ],
            &["version 2", "0002_a.json", "2_b.json"],
        ),
        (
            "a file that is not a migration",
            &[("0001_a.json", INDEX), ("0002_b.jsn", SEED)],
            &["0002_b.jsn", "not a migration file"],
        ),
    ];
    for (case, files, says) in cases {
        let dir = folder(files);
        let dir = dir_arg(dir.path());
        for command in ["status", "apply"] {
            let (code, out, err) = run(&[
                "--uri", &uri, "migrate", "--dir", &dir, command, "--prefix", "t_",
            ])
            .await;
            assert_eq!(code, 3, "{case}: {err}");
            assert!(out.is_empty(), "{case}: {out}");
            for s in *says {
                assert!(err.contains(s), "{case}: {s:?} not in {err}");
            }
        }
    }
    let missing = run(&[
        "--uri",
        &uri,
        "migrate",
        "--dir",
        "/nonexistent/migrations",
        "status",
        "a",
    ])
    .await;
    assert_eq!(missing.0, 3, "{}", missing.2);
    assert!(
        missing.2.contains("/nonexistent/migrations"),
        "{}",
        missing.2
    );

    let good = three();
    let good = dir_arg(good.path());
    let base = ["--uri", uri.as_str(), "migrate", "--dir", &good];
    // A database name MongoDB refuses, given or listed.
    let (code, _, err) = run(&[&base[..], &["apply", "tenant_1", "bad.name"]].concat()).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("\"bad.name\""), "{err}");
    let list = tempfile::NamedTempFile::new().expect("list file");
    std::fs::write(
        list.path(),
        "# tenants\ntenant_1\n\ntenant_2  # the second\nbad$name\n",
    )
    .expect("write");
    let (code, _, err) = run(&[
        &base[..],
        &[
            "status",
            "--databases-from",
            list.path().to_str().expect("path"),
        ],
    ]
    .concat())
    .await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(":5:") && err.contains("\"bad$name\""), "{err}");
    // Flags out of range.
    for (flags, says) in [
        (&["apply", "a", "--concurrency", "0"][..], "--concurrency"),
        (&["apply", "a", "--max-failures", "0"], "--max-failures"),
        (&["apply", "a", "--canary", "0"], "--canary"),
    ] {
        let (code, _, err) = run(&[&base[..], flags].concat()).await;
        assert_eq!(code, 3, "{flags:?}: {err}");
        assert!(err.contains(says), "{flags:?}: {err}");
    }
    // Bad command lines are the parser's: exit 2.
    for args in [
        &["frobnicate", "a"][..],
        &["apply"],
        &["apply", "a", "--prefix", "t_"],
        &["apply", "a", "--canary", "1", "--canary-db", "a"],
        &["rollback", "a"],
    ] {
        let (code, _, err) = run(&[&base[..], args].concat()).await;
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    let (code, _, err) = run(&["--uri", &uri, "migrate", "status", "a"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--dir"), "{err}");
    // A valid request to a cluster that is not there: 4.
    let (code, _, err) = run(&[&base[..], &["status", "--prefix", "t_"]].concat()).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("cannot reach the cluster"), "{err}");
}

/// An application's command line with the migration commands flattened in.
#[derive(Debug, Parser)]
struct App {
    #[command(subcommand)]
    command: AppCommand,
}

#[derive(Debug, Subcommand)]
enum AppCommand {
    /// The application's own work.
    Serve,
    #[command(subcommand)]
    Migrate(MigrateCommand),
}

fn code_migrations(with_down: bool) -> Migrations {
    let bump = |version: i64| {
        Step::code(move |db| async move {
            db.collection::<Document>("effects")
                .update_one(doc! { "_id": version }, doc! { "$inc": { "runs": 1 } })
                .upsert(true)
                .await?;
            Ok(())
        })
    };
    let undo = |version: i64| {
        Step::code(move |db| async move {
            db.collection::<Document>("effects")
                .delete_one(doc! { "_id": version })
                .await?;
            Ok(())
        })
    };
    let mut second = Migration::new(2, "code-two", vec![bump(2)]).code_version("1");
    if with_down {
        second = second.down(vec![undo(2)]);
    }
    Migrations::new(vec![
        Migration::new(1, "code-one", vec![bump(1)])
            .code_version("1")
            .down(vec![undo(1)]),
        second,
        Migration::new(
            3,
            "command",
            vec![Step::command(doc! {
                "insert": "settings", "documents": [{ "_id": "plan" }], "ordered": false,
            })],
        )
        .down(vec![Step::command(doc! {
            "delete": "settings", "deletes": [{ "q": { "_id": "plan" }, "limit": 1 }],
        })]),
    ])
    .expect("valid migrations")
}

async fn runs(db: &Database) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = all(db, "effects")
        .await
        .iter()
        .filter_map(|d| Some((d.get("_id").and_then(int)?, d.get("runs").and_then(int)?)))
        .collect();
    out.sort_unstable();
    out
}

#[tokio::test]
async fn the_embedded_runner_applies_and_rolls_back_code_migrations() {
    let server = server().await;
    let raw = raw(&server).await;
    let list = names("emb_", 12);
    create(&raw, &list).await;
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .build()
        .await
        .expect("manager");
    let quiet = Output {
        json: true,
        quiet: true,
    };
    let command = |args: &[&str]| match App::try_parse_from(["myapp", "migrate"].iter().chain(args))
        .expect("the application's command line")
        .command
    {
        AppCommand::Migrate(m) => m,
        AppCommand::Serve => unreachable!("parsed migrate"),
    };
    let migrations = code_migrations(true);

    let apply = command(&[
        "apply",
        "--prefix",
        "emb_",
        "--canary",
        "1",
        "--concurrency",
        "3",
    ]);
    assert_eq!(
        polymongo_cli::migrate::run(&poly, &migrations, &apply, quiet).await,
        0
    );
    for name in &list {
        let db = raw.database(name);
        assert_eq!(ledger(&db).await, [1, 2, 3], "{name}");
        assert_eq!(runs(&db).await, [(1, 1), (2, 1)], "{name}");
        assert_eq!(all(&db, "settings").await.len(), 1, "{name}");
    }
    // Again through the one-call command line (`--uri`, no `--dir`): nothing to do.
    let cli = MigrateCli::try_parse_from([
        "myapp-migrate",
        "--uri",
        server.uri(),
        "--quiet",
        "apply",
        "--prefix",
        "emb_",
    ])
    .expect("the embedded command line");
    assert_eq!(cli.run(&migrations).await, 0);
    assert_eq!(runs(&raw.database("emb_0004")).await, [(1, 1), (2, 1)]);
    let status = MigrateCli::try_parse_from([
        "myapp-migrate",
        "--uri",
        server.uri(),
        "status",
        "emb_0000",
        "emb_0001",
    ])
    .expect("status");
    assert_eq!(status.run(&migrations).await, 0);

    // A rollback past the code version without down steps: each database refuses it before
    // undoing anything (the set does not say which versions have down steps).
    let rollback = command(&["rollback", "--to", "0", "--prefix", "emb_"]);
    assert_eq!(
        polymongo_cli::migrate::run(&poly, &code_migrations(false), &rollback, quiet).await,
        3
    );
    for name in &list {
        assert_eq!(ledger(&raw.database(name)).await, [1, 2, 3], "{name}");
    }
    assert_eq!(
        polymongo_cli::migrate::run(&poly, &migrations, &rollback, quiet).await,
        0
    );
    for name in &list {
        let db = raw.database(name);
        assert!(ledger(&db).await.is_empty(), "{name}");
        assert!(runs(&db).await.is_empty(), "{name}: code down steps ran");
        assert!(all(&db, "settings").await.is_empty(), "{name}");
    }
    poly.close_all(Duration::from_secs(5)).await;
}
