//! Cost of getting a collection handle for a database, side by side:
//!
//! - `raw`: the driver's `client.database(name).collection(coll)`;
//! - `polymongo_warm`: `model.db(name)` for a database already used;
//! - `polymongo_database`: `poly.database(name)` (routing only);
//!
//! each over 10, 1 000 and 10 000 databases in use (so the map is really that big), plus
//! operations (`find_one` by `_id`, a 100-document `find`) through the raw driver, through
//! polymongo's counted `run` (usage analytics from operations), and through polymongo with usage
//! analytics off, on the same test-kit server: the cost of the handle and of monitoring, side
//! by side.
//!
//! ```text
//! cargo bench -p polymongo --bench routing
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mongodb::bson::{doc, Document};
use polymongo::{Model, PolyMongo, UsageAnalytics};
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
    let (server, poly, quiet, raw) = rt.block_on(async {
        let server = polymongo_testkit::TestServer::start()
            .await
            .expect("test server");
        let build = |analytics| {
            PolyMongo::builder()
                .uri(server.uri())
                .max_pool_size(4)
                .usage_analytics(analytics)
                .build()
        };
        let poly = build(UsageAnalytics::Operations).await.expect("build");
        let quiet = build(UsageAnalytics::Off).await.expect("build");
        let raw = mongodb::Client::with_uri_str(server.uri())
            .await
            .expect("client");
        let coll = raw.database("bench").collection::<Document>("users");
        coll.insert_one(doc! { "_id": 1, "name": "ada" })
            .await
            .expect("seed");
        coll.insert_many(
            (2..102)
                .map(|i| doc! { "_id": i, "name": format!("user {i}"), "pad": "x".repeat(200) }),
        )
        .await
        .expect("seed");
        (server, poly, quiet, raw)
    });
    let users = poly.model::<User>();
    let quiet_users = quiet.model::<User>();
    let raw_users = raw.database("bench").collection::<User>("users");

    // One small command: `find_one` by `_id`.
    let mut group = c.benchmark_group("find_one_by_id");
    group.bench_function("raw", |b| {
        b.to_async(&rt)
            .iter(|| async { raw_users.find_one(doc! { "_id": 1 }).await.expect("find") })
    });
    group.bench_function("polymongo", |b| {
        b.to_async(&rt).iter(|| async {
            users
                .db("bench")
                .expect("db")
                .run(|c| c.find_one(doc! { "_id": 1 }))
                .await
                .expect("find")
        })
    });
    group.bench_function("polymongo_no_analytics", |b| {
        b.to_async(&rt).iter(|| async {
            quiet_users
                .db("bench")
                .expect("db")
                .find_one(doc! { "_id": 1 })
                .await
                .expect("find")
        })
    });
    group.finish();

    // A larger reply (100 documents of ~230 bytes): the driver copies replies into the
    // command events it hands to our usage handler, so this is where monitoring could cost.
    let mut group = c.benchmark_group("find_100_docs");
    let all = || doc! { "_id": { "$gte": 2 } };
    group.bench_function("raw", |b| {
        b.to_async(&rt).iter(|| async {
            let mut cursor = raw_users.find(all()).await.expect("find");
            let mut n = 0;
            while cursor.advance().await.expect("next") {
                n += 1;
            }
            n
        })
    });
    group.bench_function("polymongo", |b| {
        b.to_async(&rt).iter(|| async {
            let h = users.db("bench").expect("db");
            let mut cursor = h.run(|c| c.find(all())).await.expect("find");
            let mut n = 0;
            while cursor.advance().await.expect("next") {
                n += 1;
            }
            n
        })
    });
    group.bench_function("polymongo_no_analytics", |b| {
        b.to_async(&rt).iter(|| async {
            let h = quiet_users.db("bench").expect("db");
            let mut cursor = h.find(all()).await.expect("find");
            let mut n = 0;
            while cursor.advance().await.expect("next") {
                n += 1;
            }
            n
        })
    });
    group.finish();
    rt.block_on(async {
        poly.close_all(Duration::from_secs(1)).await;
        quiet.close_all(Duration::from_secs(1)).await;
        raw.shutdown().await;
    });
    drop(server);
}

criterion_group!(benches, handles, operation);
criterion_main!(benches);
