//! Managed change streams: watch a tenant's collection, keep the resume token, close the
//! tenant's streams from elsewhere, and resume where the consumer stopped.
//!
//! Uses `MONGODB_URI` when it is set; otherwise starts a local test server.
//!
//! ```text
//! cargo run --example change_streams
//! ```

use std::time::Duration;

use futures_util::StreamExt;
use mongodb::options::ChangeStreamOptions;
use polymongo::{Model, PolyMongo};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Message {
    text: String,
}
impl Model for Message {
    const COLLECTION: &'static str = "messages";
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (uri, _server) = polymongo_testkit::uri_from_env_or_start().await?;
    let poly = PolyMongo::builder().uri(&uri).build().await?;
    let messages = poly.model::<Message>();
    let inbox = messages.db("tenant_7")?;

    // A consumer task prints events until the manager closes its stream, and reports each
    // one it has handled.
    let stream = inbox.watch().await?;
    let (handled, mut progress) = tokio::sync::mpsc::unbounded_channel();
    let consumer = tokio::spawn(async move {
        let mut stream = stream;
        let mut last = None;
        while let Some(event) = stream.next().await {
            let event = event?;
            println!(
                "event: {:?} {:?}",
                event.operation_type,
                event.full_document.map(|m| m.text)
            );
            last = stream.resume_token();
            let _ = handled.send(());
        }
        println!("stream ended (closed by the manager)");
        Ok::<_, polymongo::Error>(last)
    });

    for text in ["hello", "world"] {
        inbox
            .insert_one(Message {
                text: text.to_owned(),
            })
            .await?;
    }
    // Once both events are handled, the tenant's streams are closed from here.
    for _ in 0..2 {
        progress.recv().await;
    }
    println!(
        "closed {} stream(s) of tenant_7",
        poly.close_db_streams("tenant_7")
    );
    let token = consumer.await??;
    println!("open streams now: {}", poly.open_change_streams());

    // Later (say after a restart) carry on from the token.
    inbox
        .insert_one(Message {
            text: "while nobody listened".into(),
        })
        .await?;
    if let Some(token) = token {
        let options = ChangeStreamOptions::builder().resume_after(token).build();
        let mut resumed = inbox.watch_with([], options).await?;
        if let Some(event) = resumed.next().await {
            println!("resumed: {:?}", event?.full_document.map(|m| m.text));
        }
    }

    let report = poly.close_all(Duration::from_secs(5)).await;
    println!("closed: {report:?}");
    Ok(())
}
