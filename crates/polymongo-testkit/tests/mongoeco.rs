//! mongoeco through the kit: the launcher's five patches seen from the Rust driver, what the
//! server keeps exactly (every BSON type, index names and directions), fail points, isolation,
//! restarts of the SQLite engine, and the process life cycle.
//!
//! Every test needs mongoeco itself, so each asks for it by kind through [`mongoeco`], which
//! reports a skip when this machine has no Python 3.13+.

mod common;

use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, Bson, Document, RawDocumentBuf};
use mongodb::options::ClientOptions;
use mongodb::Client;
use polymongo_testkit::{Capability, ServerKind, ServerOptions, TestKitError, TestServer};

/// A mongoeco server, or `None` (a reported skip) when no Python 3.13+ exists here.
async fn mongoeco(opts: ServerOptions) -> Option<TestServer> {
    match TestServer::start_with(opts.kind(ServerKind::MongoEco)).await {
        Ok(server) => Some(server),
        Err(e @ TestKitError::NoMongoEcoPython { .. }) => {
            polymongo_testkit::record_skip(&e.to_string());
            None
        }
        Err(e) => panic!("mongoeco did not start: {e}"),
    }
}

#[tokio::test]
async fn mongoeco_describes_itself_and_answers_the_driver() {
    let started = Instant::now();
    let Some(server) = mongoeco(ServerOptions::new()).await else {
        return;
    };
    eprintln!("mongoeco ready after {:?}", started.elapsed());
    assert_eq!(server.kind(), ServerKind::MongoEco);
    let port = server.port().expect("port");
    assert_eq!(
        server.uri(),
        format!("mongodb://127.0.0.1:{port}/?directConnection=true")
    );
    assert!(server.pid().is_some());
    assert!(!server.is_replica_set());
    // Not a replica set: full MongoDB transaction semantics are not promised.
    assert!(!server.supports_transactions());
    for cap in [
        Capability::ExactBsonTypes,
        Capability::IndexDirection,
        Capability::TransactionIsolation,
        Capability::CrossDatabaseTransactions,
        Capability::FailPoints,
    ] {
        assert!(server.has(cap), "{cap}");
    }
    assert!(!server.has(Capability::ChangeStreams));
    assert!(!server.has(Capability::LargeCollections));
    assert!(!server.has(Capability::RestartKeepsData));
    assert!(format!("{server:?}").contains("MongoEco"));

    let client = common::client(&server).await;
    let reply = client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .expect("ping");
    assert!(
        matches!(reply.get("ok"), Some(Bson::Double(v)) if *v == 1.0),
        "{reply}"
    );
    client.shutdown().await;
}

#[tokio::test]
async fn driver_reads_work_through_the_patches() {
    let Some(server) = mongoeco(ServerOptions::new()).await else {
        return;
    };
    let client = common::client(&server).await;
    let db = client.database("reads");
    let coll = db.collection::<Document>("c");
    coll.insert_many((0..10).map(|i| doc! { "_id": i, "v": i * 10 }))
        .await
        .expect("insert");

    // Patch 1: find_one sends `limit` as Int64.
    let one = coll
        .find_one(doc! { "_id": 3 })
        .await
        .expect("find_one")
        .expect("found");
    assert_eq!(one.get_i32("v"), Ok(30));

    // Patch 2: a cursor over several batches needs an Int64 cursor id (and patch 1 its
    // getMore); skip and limit are Int64 too.
    let all: Vec<Document> = coll
        .find(doc! {})
        .batch_size(3)
        .skip(1)
        .limit(8)
        .sort(doc! { "_id": 1 })
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("cursor");
    let ids: Vec<i32> = all.iter().map(|d| d.get_i32("_id").expect("id")).collect();
    assert_eq!(ids, (1..9).collect::<Vec<_>>());
    let names = db.list_collection_names().await.expect("listCollections");
    assert_eq!(names, vec!["c".to_owned()]);
    let indexes = coll.list_index_names().await.expect("listIndexes");
    assert_eq!(indexes, vec!["_id_".to_owned()]);
    let counted: Vec<Document> = coll
        .aggregate([doc! { "$group": { "_id": null, "n": { "$sum": 1 } } }])
        .await
        .expect("aggregate")
        .try_collect()
        .await
        .expect("aggregate cursor");
    assert_eq!(counted[0].get_i32("n"), Ok(10));
    client.shutdown().await;
}

#[tokio::test]
async fn errors_carry_codes() {
    let Some(server) = mongoeco(ServerOptions::new()).await else {
        return;
    };
    let client = common::client(&server).await;
    let code = |e: &mongodb::error::Error| match &*e.kind {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    };
    // Patch 3: unknown commands are CommandNotFound, not an "invalid reply".
    let err = client
        .database("errs")
        .run_command(doc! { "noSuchCommandHere": 1 })
        .await
        .expect_err("unknown command");
    assert_eq!(code(&err), Some(59), "{err:?}");
    // Argument errors are BadValue.
    let err = client
        .database("errs")
        .run_command(doc! { "find": "c", "batchSize": "many" })
        .await
        .expect_err("bad argument");
    assert!(code(&err).is_some(), "{err:?}");
    // Errors with their own code keep it (duplicate key: 11000, a write error).
    let coll = client.database("errs").collection::<Document>("c");
    coll.insert_one(doc! { "_id": 1 }).await.expect("insert");
    let err = coll
        .insert_one(doc! { "_id": 1 })
        .await
        .expect_err("duplicate");
    assert!(
        matches!(&*err.kind, mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) if w.code == 11000),
        "{err:?}"
    );
    client.shutdown().await;
}

#[tokio::test]
async fn connection_count_is_exact() {
    let Some(server) = mongoeco(ServerOptions::new()).await else {
        return;
    };
    assert_eq!(server.connection_count().await.expect("count"), 0);
    for _ in 0..10 {
        assert_eq!(server.connection_count().await.expect("count"), 0);
    }
    let mut options = ClientOptions::parse(server.uri()).await.expect("parse");
    options.max_pool_size = Some(4);
    let client = Client::with_options(options).expect("client");
    let coll = client.database("conns").collection::<Document>("c");
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let coll = coll.clone();
            tokio::spawn(async move { coll.insert_one(doc! { "i": i }).await.expect("insert") })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    // Patch 4: the real count, not a constant 1: the pool (1 to 4) plus the monitors.
    let busy = server.connection_count().await.expect("busy");
    assert!((2..=4 + 2).contains(&busy), "busy count {busy}");
    client.shutdown().await;
    let dropped = common::eventually(Duration::from_secs(5), || async {
        server.connection_count().await.ok() == Some(0)
    })
    .await;
    assert!(dropped, "{:?}", server.connection_count().await);
}

#[tokio::test]
async fn rename_through_admin_moves_the_collection() {
    let Some(server) = mongoeco(ServerOptions::new()).await else {
        return;
    };
    let client = common::client(&server).await;
    let db = client.database("ren");
    db.collection::<Document>("old")
        .insert_many([doc! { "_id": 1 }, doc! { "_id": 2 }])
        .await
        .expect("insert");
    // Patch 5: what drivers send, on admin with full namespaces.
    client
        .database("admin")
        .run_command(doc! { "renameCollection": "ren.old", "to": "ren.new" })
        .await
        .expect("rename");
    let mut names = db.list_collection_names().await.expect("names");
    names.sort();
    assert_eq!(names, vec!["new".to_owned()]);
    assert_eq!(
        db.collection::<Document>("new")
            .count_documents(doc! {})
            .await
            .expect("count"),
        2
    );
    // Across databases it stays refused, with a code.
    let err = client
        .database("admin")
        .run_command(doc! { "renameCollection": "ren.new", "to": "other.new" })
        .await
        .expect_err("cross-database rename");
    assert!(
        matches!(&*err.kind, mongodb::error::ErrorKind::Command(_)),
        "{err:?}"
    );
    client.shutdown().await;
}

/// Every BSON type the driver can write, in an order that is not alphabetical.
fn every_type() -> Document {
    use std::str::FromStr;
    doc! {
        "_id": 7_i64,
        "z_double": 1.5,
        "neg_zero": -0.0_f64,
        "string": "é",
        "doc": { "b": 1, "a": 2 },
        "array": [1, "two", { "three": 3 }],
        "binary": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 255] },
        "uuid": Binary { subtype: BinarySubtype::Uuid, bytes: vec![7; 16] },
        "oid": mongodb::bson::oid::ObjectId::parse_str("5f0c3d8b9e1a4b2c3d4e5f60").expect("oid"),
        "bool": true,
        "date": mongodb::bson::DateTime::from_millis(1_700_000_000_123),
        "null": null,
        "regex": mongodb::bson::Regex { pattern: "^a.c".into(), options: "im".into() },
        "code": Bson::JavaScriptCode("f()".into()),
        "code_w_s": Bson::JavaScriptCodeWithScope(mongodb::bson::JavaScriptCodeWithScope {
            code: "g(x)".into(),
            scope: doc! { "x": 1 },
        }),
        "i32": i32::MIN,
        "ts": mongodb::bson::Timestamp { time: 12, increment: 34 },
        "i64": i64::MAX,
        "small_i64": 5_i64,
        "decimal": mongodb::bson::Decimal128::from_str("-12.345E-3").expect("decimal"),
        "min": Bson::MinKey,
        "max": Bson::MaxKey,
    }
}

#[tokio::test]
async fn every_bson_type_round_trips_byte_for_byte() {
    let Some(server) = mongoeco(ServerOptions::new()).await else {
        return;
    };
    let client = common::client(&server).await;
    let written = every_type();
    let bytes = RawDocumentBuf::from_document(&written)
        .expect("encode")
        .into_bytes();
    client
        .database("types")
        .collection::<Document>("all")
        .insert_one(&written)
        .await
        .expect("insert");
    let read = client
        .database("types")
        .collection::<RawDocumentBuf>("all")
        .find_one(doc! { "_id": 7_i64 })
        .await
        .expect("find")
        .expect("found");
    assert_eq!(
        read.as_bytes(),
        &bytes[..],
        "read back {:?}",
        read.to_document()
    );
    client.shutdown().await;
}

#[tokio::test]
async fn indexes_keep_their_names_and_directions() {
    let Some(server) = mongoeco(ServerOptions::new()).await else {
        return;
    };
    let client = common::client(&server).await;
    let coll = client.database("idx").collection::<Document>("c");
    coll.insert_one(doc! { "a": 1, "b": 2 })
        .await
        .expect("insert");
    coll.create_index(
        mongodb::IndexModel::builder()
            .keys(doc! { "a": 1, "b": -1 })
            .options(
                mongodb::options::IndexOptions::builder()
                    .name("mine".to_owned())
                    .unique(true)
                    .build(),
            )
            .build(),
    )
    .await
    .expect("create index");
    let indexes: Vec<mongodb::IndexModel> = coll
        .list_indexes()
        .await
        .expect("listIndexes")
        .try_collect()
        .await
        .expect("indexes");
    let mine = indexes
        .iter()
        .find(|i| i.options.as_ref().and_then(|o| o.name.as_deref()) == Some("mine"))
        .expect("the index under its own name");
    assert_eq!(mine.keys, doc! { "a": 1, "b": -1 });
    assert_eq!(mine.options.as_ref().and_then(|o| o.unique), Some(true));
    client.shutdown().await;
}

#[tokio::test]
async fn a_fail_point_fails_the_command_with_its_code_and_labels() {
    let Some(server) = mongoeco(ServerOptions::new()).await else {
        return;
    };
    let client = common::client(&server).await;
    client
        .database("admin")
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": { "times": 1 },
            "data": {
                "failCommands": ["insert"],
                "errorCode": 91,
                "errorLabels": ["RetryableWriteError"],
            },
        })
        .await
        .expect("configureFailPoint");
    let coll = client.database("fp").collection::<Document>("c");
    let err = coll
        .insert_one(doc! { "_id": 1 })
        .await
        .expect_err("the fail point fires");
    assert!(
        matches!(&*err.kind, mongodb::error::ErrorKind::Command(c) if c.code == 91),
        "{err:?}"
    );
    assert!(err.contains_label("RetryableWriteError"), "{err:?}");
    // `times: 1`: the next insert goes through.
    coll.insert_one(doc! { "_id": 1 })
        .await
        .expect("second insert");
    client.shutdown().await;
}

#[tokio::test]
async fn transactions_are_isolated_and_span_databases() {
    let Some(server) = mongoeco(ServerOptions::new()).await else {
        return;
    };
    let client = common::client(&server).await;
    let observer = common::client(&server).await;
    for db in ["iso_a", "iso_b"] {
        client
            .database(db)
            .collection::<Document>("c")
            .insert_one(doc! { "_id": 0 })
            .await
            .expect("create");
    }
    let mut session = client.start_session().await.expect("session");
    session.start_transaction().await.expect("start");
    for db in ["iso_a", "iso_b"] {
        client
            .database(db)
            .collection::<Document>("c")
            .insert_one(doc! { "_id": 1 })
            .session(&mut session)
            .await
            .expect("write in the transaction");
    }
    for db in ["iso_a", "iso_b"] {
        let seen = observer
            .database(db)
            .collection::<Document>("c")
            .count_documents(doc! {})
            .await
            .expect("count");
        assert_eq!(seen, 1, "{db}: an uncommitted write is visible");
    }
    session.commit_transaction().await.expect("commit");
    for db in ["iso_a", "iso_b"] {
        let seen = observer
            .database(db)
            .collection::<Document>("c")
            .count_documents(doc! {})
            .await
            .expect("count");
        assert_eq!(seen, 2, "{db}: the commit is visible");
    }
    // `Client::shutdown` waits for live sessions.
    drop(session);
    client.shutdown().await;
    observer.shutdown().await;
}

#[tokio::test]
async fn a_persistent_server_keeps_data_across_kill_and_restart() {
    let Some(mut server) = mongoeco(ServerOptions::new().persistent(true)).await else {
        return;
    };
    // Data survives; the kit still does not offer mongoeco for restart tests (QUIRKS.md).
    assert!(!server.has(Capability::RestartKeepsData));
    let port = server.port();
    let client = common::client(&server).await;
    client
        .database("keep")
        .collection::<Document>("c")
        .insert_one(doc! { "_id": 1, "v": "kept", "n": 5_i64 })
        .await
        .expect("insert");
    client.shutdown().await;

    server.kill().await.expect("kill");
    let restarted = Instant::now();
    server.restart().await.expect("restart");
    eprintln!("mongoeco restart took {:?}", restarted.elapsed());
    assert_eq!(server.port(), port);
    let client = common::client(&server).await;
    let found = client
        .database("keep")
        .collection::<Document>("c")
        .find_one(doc! { "_id": 1 })
        .await
        .expect("find");
    assert_eq!(found, Some(doc! { "_id": 1, "v": "kept", "n": 5_i64 }));
    client.shutdown().await;

    // A stop is a clean SIGTERM exit.
    server.stop().await.expect("stop");
    assert_eq!(server.pid(), None);
}

#[tokio::test]
async fn an_interpreter_older_than_3_13_is_refused_with_advice() {
    // A stand-in that answers the kit's version question like a Python 3.11 would.
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("python3");
    std::fs::write(&fake, "#!/bin/sh\necho /opt/old/python3\necho 3.11.7\n").expect("write");
    let mut perms = std::fs::metadata(&fake).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake, perms).expect("chmod");

    let err = TestServer::start_with(
        ServerOptions::new()
            .kind(ServerKind::MongoEco)
            .python(&fake),
    )
    .await
    .expect_err("too old");
    assert!(
        matches!(&err, TestKitError::PythonUnsupported { server: ServerKind::MongoEco, version, .. } if version == "3.11.7"),
        "{err:?}"
    );
    assert!(err.to_string().contains("3.13 or newer"), "{err}");
    // The same interpreter is fine for nx-27017's range, so the check is per server.
    assert!(!err.to_string().contains("3.11 to 3.14"), "{err}");
}
