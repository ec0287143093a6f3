//! Cost of getting a collection handle for a database, side by side:
//!
//! - `raw`: the driver's `client.database(name).collection(coll)`;
//! - `polymongo_warm`: `model.db(name)` for a database already used;
//! - `polymongo_database`: `poly.database(name)` (routing only);
//!
//! each over 10, 1 000 and 10 000 databases in use (so the map is really that big), plus one
//! operation (`find_one` by `_id`) through polymongo and through the raw driver on the same
//! test-kit server, to show the handle adds nothing to an operation.
//!
//! ```text
//! cargo bench -p polymongo --bench routing
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mongodb::bson::{doc, Document};
use polymongo::{Model, PolyMongo};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct User {
    name: String,
}

impl Model for User {
    const COLLECTION: &'static str = "users";
}

fn handles(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // No I/O is measured here: an address nothing answers on is enough for handles.
    let uri = "mongodb://127.0.0.1:9/?directConnection=true";
    let (poly, raw) = rt.block_on(async {
        let poly = PolyMongo::builder().uri(uri).build().await.expect("build");
        let raw = mongodb::Client::with_uri_str(uri).await.expect("client");
        (poly, raw)
    });
    let users = poly.model::<User>();

    let mut group = c.benchmark_group("db_handle");
    for count in [10usize, 1_000, 10_000] {
        let names: Vec<String> = (0..count).map(|i| format!("tenant_{i:05}")).collect();
        {
            let _in_rt = rt.enter();
            for n in &names {
                users.db(n).expect("warm");
            }
        }
        let mut i = 0;
        group.bench_function(BenchmarkId::new("raw", count), |b| {
            b.iter(|| {
                i = (i + 1) % count;
                black_box(raw.database(&names[i]).collection::<User>("users"))
            })
        });
        group.bench_function(BenchmarkId::new("polymongo_warm", count), |b| {
            b.iter(|| {
                i = (i + 1) % count;
                black_box(users.db(&names[i]).expect("warm"))
            })
        });
        group.bench_function(BenchmarkId::new("polymongo_database", count), |b| {
            b.iter(|| {
                i = (i + 1) % count;
                black_box(poly.database(&names[i]).expect("warm"))
            })
        });
    }
    group.finish();
    rt.block_on(async {
        poly.close_all(Duration::from_secs(1)).await;
        raw.shutdown().immediate(true).await;
    });
}

fn operation(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (server, poly, raw) = rt.block_on(async {
        let server = polymongo_testkit::TestServer::start()
            .await
            .expect("test server");
        let poly = PolyMongo::builder()
            .uri(server.uri())
            .max_pool_size(4)
            .build()
            .await
            .expect("build");
        let raw = mongodb::Client::with_uri_str(server.uri())
            .await
            .expect("client");
        raw.database("bench")
            .collection::<Document>("users")
            .insert_one(doc! { "_id": 1, "name": "ada" })
            .await
            .expect("seed");
        (server, poly, raw)
    });
    let users = poly.model::<User>();
    let mut group = c.benchmark_group("find_one_by_id");
    group.bench_function("raw", |b| {
        b.to_async(&rt).iter(|| async {
            raw.database("bench")
                .collection::<User>("users")
                .find_one(doc! { "_id": 1 })
                .await
                .expect("find")
        })
    });
    group.bench_function("polymongo", |b| {
        b.to_async(&rt).iter(|| async {
            users
                .db("bench")
                .expect("db")
                .find_one(doc! { "_id": 1 })
                .await
                .expect("find")
        })
    });
    group.finish();
    rt.block_on(async {
        poly.close_all(Duration::from_secs(1)).await;
        raw.shutdown().await;
    });
    drop(server);
}

criterion_group!(benches, handles, operation);
criterion_main!(benches);
