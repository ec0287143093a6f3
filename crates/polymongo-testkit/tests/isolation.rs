//! Databases are isolated in the storage modes the kit uses (nx-27017's
//! default single-file mode would share collections across databases).

mod common;

use mongodb::bson::{doc, Document};
use polymongo_testkit::{ServerKind, ServerOptions, TestServer};

async fn assert_databases_isolated(server: &TestServer) {
    let (a, b) = (common::unique_name("a"), common::unique_name("b"));
    let client = common::client(server).await;
    client
        .database(&a)
        .collection::<Document>("c")
        .insert_one(doc! { "x": 1 })
        .await
        .expect("insert a.c");
    let in_a = client
        .database(&a)
        .collection::<Document>("c")
        .count_documents(doc! {})
        .await;
    let in_b = client
        .database(&b)
        .collection::<Document>("c")
        .count_documents(doc! {})
        .await;
    assert_eq!(in_a.expect("count a.c"), 1);
    assert_eq!(
        in_b.expect("count b.c"),
        0,
        "b.c sees the document inserted into a.c"
    );
    let _ = client.database(&a).drop().await;
    client.shutdown().await;
}

#[tokio::test]
async fn default_server_isolates_databases() {
    let server = TestServer::start().await.expect("start");
    assert_databases_isolated(&server).await;
}

#[tokio::test]
async fn nx_in_memory_isolates_databases() {
    let server = TestServer::start_with(ServerOptions::new().kind(ServerKind::Nx27017))
        .await
        .expect("start nx");
    assert_databases_isolated(&server).await;
}

#[tokio::test]
async fn nx_persistent_isolates_databases() {
    let server = TestServer::start_with(
        ServerOptions::new()
            .kind(ServerKind::Nx27017)
            .persistent(true),
    )
    .await
    .expect("start persistent nx");
    assert_databases_isolated(&server).await;
}
