//! A tenant's life after creation over three test-kit servers (control + two cells):
//! archive → restore round trips byte-exact onto the other cell, every step is idempotent,
//! a process killed mid-create or mid-archive leaves a complete tenant or none (and its data
//! whole somewhere), futures cut at growing delays leave a state the next call finishes,
//! bad input gets named errors. Effects checked with raw clients and the files themselves.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document, RawDocumentBuf};
use mongodb::options::IndexOptions;
use mongodb::{Client, IndexModel};
use polymongo::tenants::{
    ArchiveTenant, CreateTenant, DeleteTenant, Deleted, Placement, RestoreTenant, TenantError,
    TenantState,
};
use polymongo::{ClusterConfig, DirectoryConfig, Error, PolyMongo};
use polymongo_testkit::{Capability, TestServer};

use common::raw;

const REFRESH: Duration = Duration::from_millis(200);
const SETTLE: Duration = Duration::from_millis(50);

struct Fleet {
    control: TestServer,
    a: TestServer,
    b: TestServer,
}

async fn fleet_for(needs: &[Capability]) -> Option<Fleet> {
    Some(Fleet {
        control: polymongo_testkit::server_for(needs).await?,
        a: polymongo_testkit::server_for(needs).await?,
        b: polymongo_testkit::server_for(needs).await?,
    })
}

async fn fleet() -> Fleet {
    Fleet {
        control: common::server().await,
        a: common::server().await,
        b: common::server().await,
    }
}

async fn manager(control: &str, a: &str, b: &str) -> PolyMongo {
    PolyMongo::builder()
        .uri(control)
        .max_pool_size(8)
        .cluster("cell_a", ClusterConfig::new(a))
        .cluster("cell_b", ClusterConfig::new(b))
        .directory(
            DirectoryConfig::on("main")
                .database_prefix("t_")
                .refresh(REFRESH),
        )
        .build()
        .await
        .expect("manager")
}

async fn instance(f: &Fleet) -> PolyMongo {
    manager(f.control.uri(), f.a.uri(), f.b.uri()).await
}

fn tenant_error(e: &Error) -> &TenantError {
    match e {
        Error::Tenant(t) => t,
        other => panic!("expected a tenant error, got {other}"),
    }
}

/// Documents every server keeps exactly.
fn seed_docs(tenant: &str, n: i32) -> Vec<Document> {
    (0..n)
        .map(|i| {
            doc! {
                "_id": i,
                "tenant": tenant,
                "n": i64::from(i) * 1_000_000_007,
                "f": f64::from(i) / 3.0,
                "text": format!("{tenant}-{i}-{}", "é".repeat(40)),
                "when": mongodb::bson::DateTime::from_millis(1_700_000_000_000 + i64::from(i)),
                "tags": ["a", { "b": [1, 2.5, Bson::Null] }],
                "flag": i % 2 == 0,
                "bin": Bson::Binary(mongodb::bson::Binary {
                    subtype: mongodb::bson::spec::BinarySubtype::Generic,
                    bytes: vec![u8::try_from(i % 251).unwrap_or(0); 8],
                }),
                "order": { "z": 1, "a": 2 },
            }
        })
        .collect()
}

async fn seed(client: &Client, database: &str, tenant: &str, n: i32) {
    let db = client.database(database);
    // In batches: one large insert keeps mongoeco busy past the driver's monitor timeout on a
    // loaded machine (the pool is then cleared under the insert).
    for batch in seed_docs(tenant, n).chunks(250) {
        db.collection::<Document>("notes")
            .insert_many(batch.to_vec())
            .await
            .unwrap();
    }
    db.collection::<Document>("events")
        .insert_many((0..5).map(|i| doc! { "_id": format!("e{i}"), "kind": i }))
        .await
        .unwrap();
    db.collection::<Document>("events")
        .create_index(
            IndexModel::builder()
                .keys(doc! { "kind": 1, "label": -1 })
                .options(
                    IndexOptions::builder()
                        .unique(true)
                        .name("kind_id".to_owned())
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
}

/// A database as bytes: per collection, each document's BSON bytes by `_id`, and its
/// indexes (name, keys, unique).
async fn snapshot(
    client: &Client,
    database: &str,
) -> BTreeMap<String, (Vec<Vec<u8>>, Vec<String>)> {
    let db = client.database(database);
    let mut out = BTreeMap::new();
    for name in db.list_collection_names().await.unwrap() {
        if name.starts_with("system.") {
            continue;
        }
        let coll = db.collection::<RawDocumentBuf>(&name);
        let docs: Vec<RawDocumentBuf> = coll
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let mut indexes: Vec<String> = db
            .collection::<Document>(&name)
            .list_indexes()
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .into_iter()
            .map(|i| {
                format!(
                    "{:?} {} {:?}",
                    i.options.as_ref().and_then(|o| o.name.clone()),
                    i.keys,
                    i.options.as_ref().and_then(|o| o.unique)
                )
            })
            .collect();
        indexes.sort();
        out.insert(
            name,
            (
                docs.iter().map(|d| d.as_bytes().to_vec()).collect(),
                indexes,
            ),
        );
    }
    out
}

async fn databases(client: &Client) -> BTreeSet<String> {
    client
        .list_database_names()
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("t_"))
        .collect()
}

/// Places recorded per cluster in the directory.
async fn places(f: &Fleet) -> BTreeMap<String, i64> {
    let docs: Vec<Document> = raw(&f.control)
        .await
        .database("polymongo_directory")
        .collection::<Document>("clusters")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    docs.iter()
        .map(|d| {
            let t = d.get("tenants").unwrap();
            (
                d.get_str("_id").unwrap().to_owned(),
                t.as_i64().or(t.as_i32().map(i64::from)).unwrap(),
            )
        })
        .filter(|(_, n)| *n != 0)
        .collect()
}

fn client_of<'c>(clients: &'c [(String, Client); 2], cluster: &str) -> &'c Client {
    &clients.iter().find(|(n, _)| n == cluster).unwrap().1
}

async fn clients(f: &Fleet) -> [(String, Client); 2] {
    [
        ("cell_a".to_owned(), raw(&f.a).await),
        ("cell_b".to_owned(), raw(&f.b).await),
    ]
}

#[tokio::test]
async fn archive_then_restore_onto_the_other_cell_round_trips_byte_exact() {
    // Every BSON type the dump format carries, on servers that keep them all.
    let Some(f) = fleet_for(&[Capability::ExactBsonTypes]).await else {
        return;
    };
    let poly = instance(&f).await;
    let tenants = poly.tenants().unwrap();
    let created = tenants
        .create(
            "acme",
            CreateTenant::new().placement(Placement::On("cell_a".into())),
        )
        .await
        .unwrap();
    let cells = clients(&f).await;
    let a = client_of(&cells, "cell_a");
    seed(a, "t_acme", "acme", 500).await;
    a.database("t_acme")
        .collection::<Document>("types")
        .insert_one(doc! {
            "_id": 1_i64,
            "decimal": mongodb::bson::Decimal128::from_bytes([7; 16]),
            "regex": mongodb::bson::Regex { pattern: "^a".into(), options: "i".into() },
            "ts": mongodb::bson::Timestamp { time: 1, increment: 2 },
            "min": Bson::MinKey,
            "max": Bson::MaxKey,
            "neg_zero": -0.0_f64,
            "i64": i64::MAX,
        })
        .await
        .unwrap();
    let before = snapshot(a, "t_acme").await;
    let folder = tempfile::tempdir().unwrap();
    let archived = tenants
        .archive(
            "acme",
            ArchiveTenant::to_folder(folder.path()).settle(SETTLE),
        )
        .await
        .unwrap();
    assert_eq!(archived.state, TenantState::Archived);
    let record = archived.archive.clone().unwrap();
    assert!(record.verified);
    assert_eq!(record.from_cluster, "cell_a");
    let in_database: usize = before.values().map(|(docs, _)| docs.len()).sum();
    assert_eq!(record.documents(), in_database as u64);
    assert!(Path::new(&record.path).is_file());
    assert!(!Path::new(&format!("{}.partial", record.path)).exists());
    // The file is the one recorded.
    let file = tokio::fs::File::open(&record.path).await.unwrap();
    let summary = polymongo::bulk::verify_stream(file).await.unwrap();
    assert_eq!(summary.sha256, record.sha256);
    assert_eq!(
        summary.file_bytes,
        std::fs::metadata(&record.path).unwrap().len()
    );
    // Dropped from its cell; its place given back.
    assert!(databases(a).await.is_empty());
    assert!(places(&f).await.is_empty(), "{:?}", places(&f).await);
    // Not served, by this instance or another.
    let other = instance(&f).await;
    for p in [&poly, &other] {
        let e = p.tenant("acme").await.unwrap_err();
        assert!(
            matches!(tenant_error(&e), TenantError::NotServing { state, .. } if state == "archived"),
            "{e}"
        );
    }
    let restored = other
        .tenants()
        .unwrap()
        .restore(
            "acme",
            RestoreTenant::new().placement(Placement::On("cell_b".into())),
        )
        .await
        .unwrap();
    assert_eq!(
        (restored.state, restored.cluster.as_str()),
        (TenantState::Active, "cell_b")
    );
    assert!(restored.version > created.version);
    let b = client_of(&cells, "cell_b");
    assert_eq!(snapshot(b, "t_acme").await, before, "byte-exact round trip");
    assert!(databases(a).await.is_empty(), "nothing on the old cell");
    assert_eq!(places(&f).await, BTreeMap::from([("cell_b".to_owned(), 1)]));
    // Served again on its new cell, by both instances within the bound.
    common::eventually(
        "the first instance routes the restored tenant",
        Duration::from_secs(5),
        || async {
            poly.tenant("acme")
                .await
                .ok()
                .filter(|t| t.info().cluster == "cell_b")
        },
    )
    .await;
}

#[tokio::test]
async fn every_step_is_idempotent_and_delete_needs_its_confirmation() {
    let f = fleet().await;
    let poly = instance(&f).await;
    let tenants = poly.tenants().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let archive = || ArchiveTenant::to_folder(folder.path()).settle(SETTLE);
    tenants.create("t1", CreateTenant::new()).await.unwrap();
    tenants.create("t2", CreateTenant::new()).await.unwrap();
    let cells = clients(&f).await;
    let t1 = tenants.get("t1").await.unwrap();
    seed(client_of(&cells, &t1.cluster), "t_t1", "t1", 50).await;

    let first = tenants.archive("t1", archive()).await.unwrap();
    let again = tenants.archive("t1", archive()).await.unwrap();
    assert_eq!(again, first, "archiving an archived tenant changes nothing");
    let restored = tenants.restore("t1", RestoreTenant::new()).await.unwrap();
    let again = tenants.restore("t1", RestoreTenant::new()).await.unwrap();
    assert_eq!(
        again, restored,
        "restoring an active tenant changes nothing"
    );
    assert_eq!(
        snapshot(client_of(&cells, &restored.cluster), "t_t1").await["notes"]
            .0
            .len(),
        50
    );

    // Delete: refused unless confirmed by name; then gone, database and entry; again: not found.
    let e = tenants
        .delete("t1", DeleteTenant::confirming("t2"))
        .await
        .unwrap_err();
    assert!(
        matches!(tenant_error(&e), TenantError::NotConfirmed { .. }),
        "{e}"
    );
    assert!(databases(client_of(&cells, &restored.cluster))
        .await
        .contains("t_t1"));
    let gone = tenants
        .delete("t1", DeleteTenant::confirming("t1").settle(SETTLE))
        .await
        .unwrap();
    assert!(
        matches!(&gone, Deleted::Removed(info) if info.id == "t1"),
        "{gone:?}"
    );
    assert!(!databases(client_of(&cells, &restored.cluster))
        .await
        .contains("t_t1"));
    assert_eq!(
        tenants
            .delete("t1", DeleteTenant::confirming("t1"))
            .await
            .unwrap(),
        Deleted::NotFound
    );
    let e = tenants.get("t1").await.unwrap_err();
    assert!(
        matches!(tenant_error(&e), TenantError::Unknown { .. }),
        "{e}"
    );
    // The archive file outlives the tenant.
    let record = first.archive.unwrap();
    assert!(Path::new(&record.path).is_file());

    // An archived tenant is deleted without a database to drop; its place was given back.
    tenants.archive("t2", archive()).await.unwrap();
    assert!(places(&f).await.is_empty(), "{:?}", places(&f).await);
    assert!(matches!(
        tenants
            .delete("t2", DeleteTenant::confirming("t2"))
            .await
            .unwrap(),
        Deleted::Removed(_)
    ));
    assert_eq!(
        tenants
            .recount_places()
            .await
            .unwrap()
            .values()
            .sum::<u64>(),
        0
    );
}

#[tokio::test]
async fn bad_input_and_damaged_archives_get_named_errors_and_change_nothing() {
    let f = fleet().await;
    let poly = instance(&f).await;
    let tenants = poly.tenants().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let archive = || ArchiveTenant::to_folder(folder.path()).settle(SETTLE);
    let e = tenants.archive("nobody", archive()).await.unwrap_err();
    assert!(
        matches!(tenant_error(&e), TenantError::Unknown { .. }),
        "{e}"
    );
    let e = tenants.archive("a/b", archive()).await.unwrap_err();
    assert!(
        matches!(tenant_error(&e), TenantError::InvalidId { .. }),
        "{e}"
    );
    tenants.create("acme", CreateTenant::new()).await.unwrap();
    let e = tenants
        .restore("acme", RestoreTenant::new())
        .await
        .unwrap_err();
    assert!(
        matches!(tenant_error(&e), TenantError::NoArchive { .. }),
        "{e}"
    );

    // An archive folder that cannot be written: an I/O error; the tenant stays fenced
    // (archiving, data in place) and an archive to a good folder finishes it.
    let cells = clients(&f).await;
    let info = tenants.get("acme").await.unwrap();
    let cell = client_of(&cells, &info.cluster);
    seed(cell, "t_acme", "acme", 20).await;
    let blocked = folder.path().join("file");
    std::fs::write(&blocked, b"not a folder").unwrap();
    let e = tenants
        .archive(
            "acme",
            ArchiveTenant::to_folder(blocked.join("sub")).settle(SETTLE),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert_eq!(
        tenants.get("acme").await.unwrap().state,
        TenantState::Archiving
    );
    assert_eq!(snapshot(cell, "t_acme").await["notes"].0.len(), 20);
    let archived = tenants.archive("acme", archive()).await.unwrap();
    let record = archived.archive.clone().unwrap();

    // A changed archive file: refused before any place is taken; the tenant stays archived.
    let bytes = std::fs::read(&record.path).unwrap();
    let mut changed = bytes.clone();
    let last = changed.len() - 9;
    changed[last] ^= 0xff;
    std::fs::write(&record.path, &changed).unwrap();
    let e = tenants
        .restore("acme", RestoreTenant::new())
        .await
        .unwrap_err();
    assert!(
        matches!(tenant_error(&e), TenantError::ArchiveMismatch { .. }),
        "{e}"
    );
    assert_eq!(
        tenants.get("acme").await.unwrap().state,
        TenantState::Archived
    );
    assert!(places(&f).await.is_empty());
    // A missing one: the same.
    std::fs::remove_file(&record.path).unwrap();
    let e = tenants
        .restore("acme", RestoreTenant::new())
        .await
        .unwrap_err();
    assert!(
        matches!(tenant_error(&e), TenantError::ArchiveMismatch { .. }),
        "{e}"
    );
    // Put back: restored whole.
    std::fs::write(&record.path, &bytes).unwrap();
    let restored = tenants.restore("acme", RestoreTenant::new()).await.unwrap();
    let cell = client_of(&cells, &restored.cluster);
    assert_eq!(snapshot(cell, "t_acme").await["notes"].0.len(), 20);
    // Wrong states are refused by name.
    let e = tenants
        .restore("acme", RestoreTenant::new())
        .await
        .map(|i| i.state);
    assert_eq!(e.unwrap(), TenantState::Active);
    tenants.suspend("acme").await.unwrap();
    let e = tenants
        .restore("acme", RestoreTenant::new())
        .await
        .unwrap_err();
    assert!(
        matches!(tenant_error(&e), TenantError::WrongState { state, wanted: "restore", .. } if state == "suspended"),
        "{e}"
    );
}

#[tokio::test]
async fn archives_and_restores_cut_at_growing_delays_are_finished_by_the_next_call() {
    let f = fleet().await;
    let poly = instance(&f).await;
    let tenants = poly.tenants().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let cells = clients(&f).await;
    let mut cut = 0;
    for (i, delay_ms) in [0_u64, 1, 3, 10, 30, 60, 120].into_iter().enumerate() {
        let id = format!("cut{i}");
        let info = tenants.create(&id, CreateTenant::new()).await.unwrap();
        let database = format!("t_{id}");
        seed(client_of(&cells, &info.cluster), &database, &id, 300).await;
        let before = snapshot(client_of(&cells, &info.cluster), &database).await;
        let archive = ArchiveTenant::to_folder(folder.path()).settle(SETTLE);
        let first = tokio::time::timeout(
            Duration::from_millis(delay_ms),
            tenants.archive(&id, archive.clone()),
        )
        .await;
        cut += usize::from(first.is_err());
        // Whatever was cut: the data is whole in the database or in a verified file.
        let now = tenants.get(&id).await.unwrap();
        let verified = now.archive.as_ref().is_some_and(|a| a.verified);
        if !verified {
            assert_eq!(
                snapshot(client_of(&cells, &info.cluster), &database).await,
                before,
                "{id}: not yet verified, so not dropped"
            );
        }
        let archived = tenants.archive(&id, archive).await.unwrap();
        assert_eq!(archived.state, TenantState::Archived);
        let restore = tokio::time::timeout(
            Duration::from_millis(delay_ms),
            tenants.restore(&id, RestoreTenant::new()),
        )
        .await;
        cut += usize::from(restore.is_err());
        let restored = tenants.restore(&id, RestoreTenant::new()).await.unwrap();
        assert_eq!(
            snapshot(client_of(&cells, &restored.cluster), &database).await,
            before,
            "{id}: restored whole after a cut at {delay_ms} ms"
        );
    }
    assert!(cut >= 4, "only {cut} calls were cut");
    let recounted = tenants.recount_places().await.unwrap();
    assert_eq!(recounted.values().sum::<u64>(), 7);
    println!("cut {cut} of 14 calls; every tenant finished whole");
}

/// The child process of the crash tests: runs `create` or `archive` over the tenants its
/// parent names, announcing each on stdout, until its parent kills it. Run only by them.
#[tokio::test]
#[ignore = "the child process of the crash tests, which run it themselves"]
async fn child_process_entry() {
    let Ok(spec) = std::env::var("POLYMONGO_LIFECYCLE_CHILD") else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let [action, control, a, b, folder, ids] = parts[..] else {
        panic!("bad child spec {spec}");
    };
    let poly = manager(control, a, b).await;
    let tenants = poly.tenants().unwrap();
    for id in ids.split(',') {
        println!("@begin {id}");
        match action {
            "create" => {
                tenants.create(id, CreateTenant::new()).await.unwrap();
            }
            "archive" => {
                tenants
                    .archive(id, ArchiveTenant::to_folder(folder).settle(SETTLE))
                    .await
                    .unwrap();
            }
            other => panic!("unknown action {other}"),
        }
        println!("@done {id}");
    }
    println!("all done");
}

/// Starts the child on `ids`, kills it (SIGKILL) `delay` after it announced the `at`-th
/// tenant; returns how many it announced done.
fn run_and_kill(
    f: &Fleet,
    action: &str,
    folder: &Path,
    ids: &[String],
    at: usize,
    delay: Duration,
) -> usize {
    let spec = [
        action,
        f.control.uri(),
        f.a.uri(),
        f.b.uri(),
        folder.to_str().unwrap(),
        &ids.join(","),
    ]
    .join("|");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_entry",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("POLYMONGO_LIFECYCLE_CHILD", spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (mut begun, mut done) = (0, 0);
    for line in stdout.lines() {
        let line = line.unwrap();
        if line.contains("@begin ") {
            begun += 1;
            if begun == at {
                std::thread::sleep(delay);
                break;
            }
        } else if line.contains("@done ") {
            done += 1;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    done
}

#[tokio::test]
async fn a_process_killed_mid_create_leaves_complete_tenants_or_none_and_a_rerun_finishes() {
    let f = fleet().await;
    let folder = tempfile::tempdir().unwrap();
    let poly = instance(&f).await;
    let tenants = poly.tenants().unwrap();
    let cells = clients(&f).await;
    let mut all = Vec::new();
    for (round, delay_ms) in [0_u64, 2, 5, 10, 20, 40, 80].into_iter().enumerate() {
        let ids: Vec<String> = (0..10).map(|i| format!("k{round}x{i}")).collect();
        let done = run_and_kill(
            &f,
            "create",
            folder.path(),
            &ids,
            4,
            Duration::from_millis(delay_ms),
        );
        // Complete (active, with its database) or not served; never an active half-tenant.
        let mut states: BTreeMap<&str, usize> = BTreeMap::new();
        for id in &ids {
            let state = match tenants.get(id).await {
                Ok(info) if info.state == TenantState::Active => {
                    assert!(
                        databases(client_of(&cells, &info.cluster))
                            .await
                            .contains(&info.database),
                        "{id} active without its database"
                    );
                    "active"
                }
                Ok(info) => {
                    assert_eq!(info.state, TenantState::Creating, "{id}");
                    "creating"
                }
                Err(e) => {
                    assert!(
                        matches!(tenant_error(&e), TenantError::Unknown { .. }),
                        "{e}"
                    );
                    "unknown"
                }
            };
            *states.entry(state).or_default() += 1;
        }
        println!(
            "round {round}: killed {delay_ms} ms after the 4th create began ({done} done): {states:?}"
        );
        all.extend(ids);
    }
    // The rerun: each create finishes a `creating` tenant, makes a missing one, and is
    // refused (by name) for one the killed process finished.
    for id in &all {
        match tenants.create(id, CreateTenant::new()).await {
            Ok(info) => assert_eq!(info.state, TenantState::Active),
            Err(e) => assert!(
                matches!(tenant_error(&e), TenantError::AlreadyExists { state, .. } if state == "active"),
                "{e}"
            ),
        }
        poly.tenant(id).await.unwrap();
    }
    // A kill between taking a place and recording the tenant leaks the place: the count
    // only ever overstates, and a recount repairs it.
    let recorded: i64 = places(&f).await.values().sum();
    assert!(
        recorded >= all.len() as i64,
        "{recorded} places for {} tenants",
        all.len()
    );
    let recounted = tenants.recount_places().await.unwrap();
    assert_eq!(recounted.values().sum::<u64>(), all.len() as u64);
    println!(
        "places before the recount {recorded}, tenants {}",
        all.len()
    );
}

#[tokio::test]
async fn a_process_killed_mid_archive_keeps_the_data_whole_and_a_rerun_finishes() {
    let f = fleet().await;
    let folder = tempfile::tempdir().unwrap();
    let poly = instance(&f).await;
    let tenants = poly.tenants().unwrap();
    let cells = clients(&f).await;
    let mut all = Vec::new();
    let mut expected = BTreeMap::new();
    for (round, delay_ms) in [0_u64, 20, 60, 120, 250].into_iter().enumerate() {
        let ids: Vec<String> = (0..4).map(|i| format!("r{round}x{i}")).collect();
        for id in &ids {
            let info = tenants.create(id, CreateTenant::new()).await.unwrap();
            let database = format!("t_{id}");
            let cell = client_of(&cells, &info.cluster);
            seed(cell, &database, id, 600).await;
            expected.insert(id.clone(), snapshot(cell, &database).await);
        }
        let done = run_and_kill(
            &f,
            "archive",
            folder.path(),
            &ids,
            2,
            Duration::from_millis(delay_ms),
        );
        // Every tenant's data is whole somewhere: in its database, or in a verified file
        // whose SHA-256 is the one recorded (and then only there).
        let mut states: BTreeMap<String, usize> = BTreeMap::new();
        for id in &ids {
            let info = tenants.get(id).await.unwrap();
            let verified = info.archive.as_ref().is_some_and(|a| a.verified);
            *states
                .entry(format!(
                    "{}{}",
                    info.state.as_str(),
                    if verified { "+verified" } else { "" }
                ))
                .or_default() += 1;
            let database = format!("t_{id}");
            let cell = client_of(&cells, &info.cluster);
            match info.archive.as_ref().filter(|a| a.verified) {
                Some(a) => {
                    let file = tokio::fs::File::open(&a.path).await.unwrap();
                    let summary = polymongo::bulk::verify_stream(file).await.unwrap();
                    assert_eq!(summary.sha256, a.sha256, "{id}");
                    if info.state == TenantState::Archived {
                        assert!(!databases(cell).await.contains(&database), "{id}");
                    }
                }
                None => {
                    assert!(
                        matches!(info.state, TenantState::Active | TenantState::Archiving),
                        "{id}: {:?}",
                        info.state
                    );
                    assert_eq!(snapshot(cell, &database).await, expected[id], "{id}");
                }
            }
        }
        println!(
            "round {round}: killed {delay_ms} ms after the 2nd archive began ({done} done): {states:?}"
        );
        all.extend(ids);
    }
    for id in &all {
        let archived = tenants
            .archive(id, ArchiveTenant::to_folder(folder.path()).settle(SETTLE))
            .await
            .unwrap();
        assert_eq!(archived.state, TenantState::Archived);
    }
    // Every archive restores to what the tenant held.
    for id in &all {
        let restored = tenants.restore(id, RestoreTenant::new()).await.unwrap();
        let cell = client_of(&cells, &restored.cluster);
        assert_eq!(
            snapshot(cell, &format!("t_{id}")).await,
            expected[id],
            "{id}"
        );
    }
    let recorded: i64 = places(&f).await.values().sum();
    assert!(recorded >= all.len() as i64);
    let recounted = tenants.recount_places().await.unwrap();
    assert_eq!(recounted.values().sum::<u64>(), all.len() as u64);
    // No unverified leftovers beside the archives.
    let partial = std::fs::read_dir(folder.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .to_string_lossy()
                .ends_with(".partial")
        })
        .count();
    println!(
        "places before the recount {recorded}, tenants {}, partial files {partial}",
        all.len()
    );
}

#[tokio::test]
async fn deletes_cut_at_growing_delays_are_finished_by_the_next_call() {
    let f = fleet().await;
    let poly = instance(&f).await;
    let tenants = poly.tenants().unwrap();
    let cells = clients(&f).await;
    let mut outcomes = BTreeMap::new();
    for (i, delay_ms) in [0_u64, 1, 3, 10, 30, 60, 120].into_iter().enumerate() {
        let id = format!("del{i}");
        let info = tenants.create(&id, CreateTenant::new()).await.unwrap();
        seed(
            client_of(&cells, &info.cluster),
            &format!("t_{id}"),
            &id,
            50,
        )
        .await;
        let cut = tokio::time::timeout(
            Duration::from_millis(delay_ms),
            tenants.delete(&id, DeleteTenant::confirming(&id).settle(SETTLE)),
        )
        .await;
        // Cut: the tenant is as it was, fenced (deleting), or gone; never served half-dropped.
        let state = match tenants.get(&id).await {
            Ok(now) => {
                assert!(
                    matches!(now.state, TenantState::Active | TenantState::Deleting),
                    "{id}: {:?}",
                    now.state
                );
                now.state.as_str().to_owned()
            }
            Err(e) => {
                assert!(
                    matches!(tenant_error(&e), TenantError::Unknown { .. }),
                    "{e}"
                );
                "gone".to_owned()
            }
        };
        *outcomes
            .entry(format!("{}{state}", if cut.is_err() { "cut+" } else { "" }))
            .or_insert(0) += 1;
        let again = tenants
            .delete(&id, DeleteTenant::confirming(&id).settle(SETTLE))
            .await
            .unwrap();
        assert!(
            matches!(again, Deleted::Removed(_) | Deleted::NotFound),
            "{again:?}"
        );
        assert!(!databases(client_of(&cells, &info.cluster))
            .await
            .contains(&format!("t_{id}")));
        assert!(matches!(
            tenants.get(&id).await.map_err(|e| tenant_error(&e).clone()),
            Err(TenantError::Unknown { .. })
        ));
    }
    // Places: none leaked by a dropped caller (the last writes run as their own task).
    assert!(places(&f).await.is_empty(), "{:?}", places(&f).await);
    println!("deletes cut at 0–120 ms: {outcomes:?}");
}
