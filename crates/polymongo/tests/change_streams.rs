//! Managed change streams: events in order, closing by database, by manager and by
//! `close_all`, registration and stats, resume tokens. Writes come from a raw client.

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use mongodb::bson::{doc, Document};
use mongodb::change_stream::event::OperationType;
use mongodb::options::ChangeStreamOptions;
use polymongo::{ManagedStream, Model};
use serde::{Deserialize, Serialize};

use common::raw;
use polymongo_testkit::{server_for, Capability};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Note {
    _id: i32,
    text: String,
}
impl Model for Note {
    const COLLECTION: &'static str = "notes";
}

/// Bound on waiting for one event; a hang fails the test instead of blocking the suite.
const EVENT_WAIT: Duration = Duration::from_secs(10);

async fn next<E>(stream: &mut ManagedStream<E>) -> Option<polymongo::Result<E>>
where
    E: serde::de::DeserializeOwned + Unpin + Send + Sync,
{
    tokio::time::timeout(EVENT_WAIT, stream.next())
        .await
        .expect("the stream neither yielded nor ended in time")
}

/// Spawns a consumer parked on the stream's next item; its join handle yields what it got.
fn park<E>(mut stream: ManagedStream<E>) -> tokio::task::JoinHandle<Option<polymongo::Result<E>>>
where
    E: serde::de::DeserializeOwned + Unpin + Send + Sync + 'static,
{
    tokio::spawn(async move { stream.next().await })
}

async fn ended<T: std::fmt::Debug>(consumer: tokio::task::JoinHandle<Option<T>>) {
    let got = tokio::time::timeout(EVENT_WAIT, consumer)
        .await
        .expect("a closed stream must end its consumer's wait")
        .expect("consumer task");
    assert!(got.is_none(), "expected the end of the stream, got {got:?}");
}

#[tokio::test]
async fn insert_update_delete_arrive_in_order() {
    let Some(server) = server_for(&[Capability::ChangeStreams]).await else {
        return;
    };
    let poly = common::manager(&server, 4).await;
    let notes = poly.model::<Note>();
    let mut stream = notes.db("cs_order").unwrap().watch().await.unwrap();
    let raw = raw(&server).await;
    let coll = raw.database("cs_order").collection::<Document>("notes");
    coll.insert_one(doc! { "_id": 1, "text": "a" })
        .await
        .unwrap();
    coll.update_one(doc! { "_id": 1 }, doc! { "$set": { "text": "b" } })
        .await
        .unwrap();
    coll.insert_one(doc! { "_id": 2, "text": "c" })
        .await
        .unwrap();
    coll.delete_one(doc! { "_id": 1 }).await.unwrap();

    let mut seen = Vec::new();
    for _ in 0..4 {
        let event = next(&mut stream).await.unwrap().unwrap();
        let id = event
            .document_key
            .as_ref()
            .and_then(|k| k.get_i32("_id").ok())
            .unwrap();
        seen.push((event.operation_type.clone(), id));
        if event.operation_type == OperationType::Insert {
            assert_eq!(event.full_document.unwrap()._id, id, "typed full document");
        }
    }
    assert_eq!(
        seen,
        [
            (OperationType::Insert, 1),
            (OperationType::Update, 1),
            (OperationType::Insert, 2),
            (OperationType::Delete, 1),
        ]
    );
    assert!(stream.resume_token().is_some());
    drop(stream);
    assert_eq!(
        poly.open_change_streams(),
        0,
        "a dropped stream unregisters"
    );
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn close_db_streams_ends_only_that_databases_streams() {
    let Some(server) = server_for(&[Capability::ChangeStreams]).await else {
        return;
    };
    let poly = common::manager(&server, 4).await;
    let notes = poly.model::<Note>();
    let a_coll = notes.db("cs_a").unwrap().watch().await.unwrap();
    let a_db = poly.watch_database("cs_a", [], None).await.unwrap();
    let mut b = notes.db("cs_b").unwrap().watch().await.unwrap();
    assert_eq!(poly.open_change_streams(), 3);
    assert_eq!(poly.stats().general().change_streams, 3);
    assert_eq!(poly.stats().db("cs_a").await.unwrap().change_streams, 2);

    // Consumers parked in `next()` when the close comes.
    let (a1, a2) = (park(a_coll), park(a_db));
    assert_eq!(poly.close_db_streams("cs_a"), 2);
    ended(a1).await;
    ended(a2).await;
    assert_eq!(poly.open_change_streams(), 1);
    assert_eq!(poly.stats().db("cs_a").await.unwrap().change_streams, 0);

    // The other database's stream still delivers.
    raw(&server)
        .await
        .database("cs_b")
        .collection::<Document>("notes")
        .insert_one(doc! { "_id": 7, "text": "still here" })
        .await
        .unwrap();
    let event = next(&mut b).await.unwrap().unwrap();
    assert_eq!(event.full_document.unwrap().text, "still here");
    assert_eq!(poly.close_db_streams("cs_a"), 0);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn close_all_watches_and_close_all_end_every_stream() {
    let Some(server) = server_for(&[Capability::ChangeStreams]).await else {
        return;
    };
    let poly = common::manager(&server, 4).await;
    let notes = poly.model::<Note>();
    let first = park(notes.db("cs_all_1").unwrap().watch().await.unwrap());
    let second = park(poly.watch_database("cs_all_2", [], None).await.unwrap());
    assert_eq!(poly.close_all_watches(), 2);
    ended(first).await;
    ended(second).await;
    assert_eq!(poly.open_change_streams(), 0);

    // `close_all` ends the streams still open, and says how many.
    let third = park(notes.db("cs_all_3").unwrap().watch().await.unwrap());
    let report = poly.close_all(Duration::from_secs(5)).await;
    assert_eq!(report.change_streams_closed, 1);
    ended(third).await;
    assert_eq!(poly.open_change_streams(), 0);
    let refused = notes.db("cs_all_3").map(|_| ());
    assert!(
        matches!(refused, Err(polymongo::Error::Closed)),
        "{refused:?}"
    );
    let refused = poly.watch_database("cs_all_3", [], None).await.map(|_| ());
    assert!(
        matches!(refused, Err(polymongo::Error::Closed)),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_resume_token_carries_on_after_a_restart_of_the_consumer() {
    let Some(server) = server_for(&[Capability::ChangeStreams]).await else {
        return;
    };
    let poly = common::manager(&server, 4).await;
    let notes = poly.model::<Note>();
    let handle = notes.db("cs_resume").unwrap();
    let mut stream = handle.watch().await.unwrap();
    let raw = raw(&server).await;
    let coll = raw.database("cs_resume").collection::<Document>("notes");
    for i in 1..=2 {
        coll.insert_one(doc! { "_id": i, "text": format!("n{i}") })
            .await
            .unwrap();
    }
    next(&mut stream).await.unwrap().unwrap();
    let token = stream.resume_token().expect("token after an event");
    // The consumer goes away after the first event; more writes happen meanwhile.
    drop(stream);
    coll.insert_one(doc! { "_id": 3, "text": "n3" })
        .await
        .unwrap();

    let options = ChangeStreamOptions::builder().resume_after(token).build();
    let mut resumed = handle.watch_with([], options).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let event = next(&mut resumed).await.unwrap().unwrap();
        ids.push(event.full_document.unwrap()._id);
    }
    assert_eq!(ids, [2, 3], "resumed right after the first event");
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_pipeline_filters_events() {
    let Some(server) = server_for(&[Capability::ChangeStreams]).await else {
        return;
    };
    let poly = common::manager(&server, 4).await;
    let notes = poly.model::<Note>();
    let mut deletes = notes
        .db("cs_pipeline")
        .unwrap()
        .watch_with([doc! { "$match": { "operationType": "delete" } }], None)
        .await
        .unwrap();
    let coll = raw(&server)
        .await
        .database("cs_pipeline")
        .collection::<Document>("notes");
    coll.insert_one(doc! { "_id": 1, "text": "x" })
        .await
        .unwrap();
    coll.delete_one(doc! { "_id": 1 }).await.unwrap();
    let event = next(&mut deletes).await.unwrap().unwrap();
    assert_eq!(event.operation_type, OperationType::Delete);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn database_and_cluster_streams_deliver_on_a_replica_set() {
    // nx-27017 opens database- and cluster-wide streams but delivers nothing on them.
    let Some(server) = server_for(&[Capability::WideChangeStreams]).await else {
        return;
    };
    let poly = common::manager(&server, 4).await;
    let mut db_stream = poly.watch_database("cs_wide", [], None).await.unwrap();
    let mut cluster = poly.watch_cluster([], None).await.unwrap();
    raw(&server)
        .await
        .database("cs_wide")
        .collection::<Document>("any")
        .insert_one(doc! { "_id": 1 })
        .await
        .unwrap();
    for stream in [&mut db_stream, &mut cluster] {
        let event = next(stream).await.unwrap().unwrap();
        assert_eq!(event.operation_type, OperationType::Insert);
        assert_eq!(event.ns.unwrap().db, "cs_wide");
    }
    poly.close_all(Duration::from_secs(5)).await;
}

/// Open cursors as the server counts them (`serverStatus.metrics.cursor.open.total`), where
/// the server reports it.
async fn open_cursors(raw: &mongodb::Client) -> Option<i64> {
    let status = raw
        .database("admin")
        .run_command(doc! { "serverStatus": 1 })
        .await
        .ok()?;
    let open = status
        .get_document("metrics")
        .and_then(|m| m.get_document("cursor"))
        .and_then(|c| c.get_document("open"))
        .ok()?;
    match open.get("total")? {
        mongodb::bson::Bson::Int32(n) => Some(i64::from(*n)),
        mongodb::bson::Bson::Int64(n) => Some(*n),
        _ => None,
    }
}

#[tokio::test]
async fn closing_kills_the_server_cursor() {
    let Some(server) = server_for(&[Capability::ChangeStreams]).await else {
        return;
    };
    let raw = raw(&server).await;
    let Some(before) = open_cursors(&raw).await else {
        polymongo_testkit::record_skip(&format!(
            "{} reports no open-cursor count in serverStatus (metrics.cursor.open.total), so \
             the kill cannot be seen from outside",
            server.kind()
        ));
        return;
    };
    let poly = common::manager(&server, 4).await;
    let stream = poly
        .model::<Note>()
        .db("cs_kill")
        .unwrap()
        .watch()
        .await
        .unwrap();
    common::eventually("the stream's cursor to open", EVENT_WAIT, || async {
        (open_cursors(&raw).await? > before).then_some(())
    })
    .await;
    assert_eq!(poly.close_db_streams("cs_kill"), 1);
    common::eventually("the stream's cursor to be killed", EVENT_WAIT, || async {
        (open_cursors(&raw).await? == before).then_some(())
    })
    .await;
    drop(stream);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_wait_given_up_by_the_consumer_does_not_lose_the_stream() {
    let Some(server) = server_for(&[Capability::ChangeStreams]).await else {
        return;
    };
    let poly = common::manager(&server, 4).await;
    let handle = poly.model::<Note>().db("cs_cancel").unwrap();
    let mut stream = handle.watch().await.unwrap();
    // A consumer waiting in `select!` with a tick gives up the wait when the tick comes first.
    let gave_up = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    assert!(gave_up.is_err(), "no event was written yet: {gave_up:?}");
    raw(&server)
        .await
        .database("cs_cancel")
        .collection::<Document>("notes")
        .insert_one(doc! { "_id": 1, "text": "after the tick" })
        .await
        .unwrap();
    let event = next(&mut stream).await.unwrap().unwrap();
    assert_eq!(event.full_document.unwrap().text, "after the tick");
    assert!(stream.resume_token().is_some());
    poly.close_all(Duration::from_secs(5)).await;
}
