//! Change streams through the kit (nx-27017 needs the launcher's patches for
//! the Rust driver to accept them).

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, oid::ObjectId, Binary, DateTime, Document};
use mongodb::change_stream::event::OperationType;
use mongodb::options::FullDocumentType;
use polymongo_testkit::{server_for, Capability};

#[tokio::test]
async fn watch_receives_insert_and_update_from_another_client() {
    let Some(server) = server_for(&[Capability::ChangeStreams]).await else {
        return;
    };
    let db = common::unique_name("cs");
    let watcher = common::client(&server).await;
    let writer = common::client(&server).await;
    let watched = watcher.database(&db).collection::<Document>("events");
    // Create the collection first (a real mongod needs the namespace to exist
    // for some versions; nx needs nothing).
    watched.insert_one(doc! { "_id": 0 }).await.expect("seed");

    let mut stream = watched
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .await
        .expect("watch");

    let target = writer.database(&db).collection::<Document>("events");
    // ObjectId, Date and Binary values, which nx-27017 0.8.1 alone would send
    // in its SQLite storage encoding (the launcher's patch 3).
    let id = ObjectId::new();
    let inserted = doc! {
        "_id": id,
        "name": "ada",
        "n": 7,
        "when": DateTime::from_millis(1_577_934_245_678),
        "bytes": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 255] },
        "nested": { "ref": ObjectId::new(), "list": [1, "two"] },
    };
    target.insert_one(inserted.clone()).await.expect("insert");
    let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an insert event within 10 s")
        .expect("stream not ended")
        .expect("event decodes");
    assert_eq!(event.operation_type, OperationType::Insert);
    assert_eq!(event.full_document.as_ref(), Some(&inserted));
    assert_eq!(event.document_key, Some(doc! { "_id": id }));
    let ns = event.ns.expect("ns");
    assert_eq!(
        (ns.db.as_str(), ns.coll.as_deref()),
        (db.as_str(), Some("events"))
    );
    assert!(
        event.cluster_time.is_some(),
        "clusterTime decodes as a Timestamp"
    );

    target
        .update_one(doc! { "_id": id }, doc! { "$set": { "n": 8 } })
        .await
        .expect("update");
    let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an update event within 10 s")
        .expect("stream not ended")
        .expect("event decodes");
    assert_eq!(event.operation_type, OperationType::Update);
    let mut updated = inserted.clone();
    updated.insert("n", 8);
    assert_eq!(event.full_document, Some(updated));
    assert_eq!(event.document_key, Some(doc! { "_id": id }));

    drop(stream);
    let _ = watcher.database(&db).drop().await;
    watcher.shutdown().await;
    writer.shutdown().await;
}

#[tokio::test]
async fn document_key_keeps_the_id_type() {
    let Some(server) = server_for(&[Capability::ChangeStreams]).await else {
        return;
    };
    let db = common::unique_name("cs_key");
    let client = common::client(&server).await;
    let coll = client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! { "_id": 0 }).await.expect("seed");
    let mut stream = coll.watch().await.expect("watch");
    coll.insert_one(doc! { "_id": 1, "v": "int id" })
        .await
        .expect("insert");
    let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("event within 10 s")
        .expect("stream not ended")
        .expect("event decodes");
    // Without the launcher's patch 4 nx-27017 sends {"_id": "1"} (a string).
    assert_eq!(event.document_key, Some(doc! { "_id": 1 }));
    drop(stream);
    let _ = client.database(&db).drop().await;
    client.shutdown().await;
}
