//! Tracing spans of `DbHandle::run`.
//!
//! Alone in its own test binary: `tracing` caches per call site whether anyone listens, and a
//! thread-scoped subscriber set while other tests on other threads reach the same call sites
//! can miss spans.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use mongodb::bson::doc;
use polymongo::Model;
use serde::{Deserialize, Serialize};

use common::server;

#[derive(Debug, Serialize, Deserialize)]
struct Event {
    n: i64,
}
impl Model for Event {
    const COLLECTION: &'static str = "events";
}

/// Records the `polymongo.op` spans opened on this thread, as "database/op".
#[derive(Clone, Default)]
struct OpSpans(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for OpSpans {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Fields(BTreeMap<String, String>);
        impl tracing::field::Visit for Fields {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.insert(field.name().to_owned(), value.to_owned());
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.insert(field.name().to_owned(), format!("{value:?}"));
            }
        }
        if attrs.metadata().name() != "polymongo.op" {
            return;
        }
        let mut fields = Fields(BTreeMap::new());
        attrs.record(&mut fields);
        let f = |k: &str| fields.0.get(k).cloned().unwrap_or_default();
        self.0
            .lock()
            .unwrap()
            .push(format!("{}/{}/{}", f("database"), f("collection"), f("op")));
    }
}

#[tokio::test]
async fn every_run_opens_one_span_naming_database_and_operation() {
    use tracing_subscriber::layer::SubscriberExt;
    let spans = OpSpans::default();
    // The default (current-thread) test runtime polls everything on this thread.
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let server = server().await;
    let poly = common::manager(&server, 2).await;
    let h = poly.model::<Event>().db("spans").unwrap();
    h.run(|c| c.insert_one(Event { n: 1 })).await.unwrap();
    h.run(|c| c.count_documents(doc! {})).await.unwrap();
    h.find_one(doc! {}).await.unwrap();
    assert_eq!(
        *spans.0.lock().unwrap(),
        ["spans/events/insert", "spans/events/count"]
    );
    poly.close_all(Duration::from_secs(5)).await;
}
