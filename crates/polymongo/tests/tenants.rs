//! The tenant directory over three test-kit servers (a control cluster and two cells), with
//! several manager instances: placement and capacity, data only on its cluster, suspension
//! seen by another instance within the documented bound, concurrent creates, resumed
//! creates, bad input. Effects checked with raw clients.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mongodb::bson::{doc, Document};
use mongodb::Client;
use polymongo::tenants::{CreateTenant, Placement, TenantError};
use polymongo::{ClusterConfig, DirectoryConfig, Error, Model, PolyMongo};
use polymongo_testkit::TestServer;
use serde::{Deserialize, Serialize};

use common::{raw, server};

#[derive(Debug, Serialize, Deserialize)]
struct Note {
    tenant: String,
}

impl Model for Note {
    const COLLECTION: &'static str = "notes";
}

struct Fleet {
    control: TestServer,
    a: TestServer,
    b: TestServer,
}

async fn fleet() -> Fleet {
    Fleet {
        control: server().await,
        a: server().await,
        b: server().await,
    }
}

/// A manager on the fleet: directory on the control (main) cluster, tenants on cells a
/// (capacity `cap_a`) and b.
async fn instance(f: &Fleet, cap_a: Option<u64>, refresh: Duration) -> PolyMongo {
    instance_with(f, cap_a, refresh, true).await
}

/// [`instance`], with or without the directory's change stream.
async fn instance_with(f: &Fleet, cap_a: Option<u64>, refresh: Duration, watch: bool) -> PolyMongo {
    let mut a = ClusterConfig::new(f.a.uri());
    a.capacity = cap_a;
    PolyMongo::builder()
        .uri(f.control.uri())
        .max_pool_size(16)
        .cluster("cell_a", a)
        .cluster("cell_b", ClusterConfig::new(f.b.uri()))
        .directory(
            DirectoryConfig::on("main")
                .database_prefix("t_")
                .refresh(refresh)
                .watch(watch)
                // A refresh of an hour stands for "no polling" in some measurements.
                .max_staleness(Some((refresh * 2).max(Duration::from_secs(60)))),
        )
        .build()
        .await
        .expect("manager")
}

/// Two instances on the fleet that learn of changes by polling only.
async fn polling_pair(f: &Fleet, refresh: Duration) -> (PolyMongo, PolyMongo) {
    (
        instance_with(f, None, refresh, false).await,
        instance_with(f, None, refresh, false).await,
    )
}

fn tenant_error(e: &Error) -> &TenantError {
    match e {
        Error::Tenant(t) => t,
        other => panic!("expected a tenant error, got {other}"),
    }
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

async fn directory_docs(f: &Fleet) -> Vec<Document> {
    let raw = raw(&f.control).await;
    let cursor = raw
        .database("polymongo_directory")
        .collection::<Document>("tenants")
        .find(doc! {})
        .await
        .unwrap();
    futures_util::TryStreamExt::try_collect(cursor)
        .await
        .unwrap()
}

/// Places taken on every cluster, from the directory's `clusters` collection.
async fn places_taken(f: &Fleet) -> i64 {
    let raw = raw(&f.control).await;
    let cursor = raw
        .database("polymongo_directory")
        .collection::<Document>("clusters")
        .find(doc! {})
        .await
        .unwrap();
    let counts: Vec<Document> = futures_util::TryStreamExt::try_collect(cursor)
        .await
        .unwrap();
    counts
        .iter()
        .map(|d| {
            let t = d.get("tenants").unwrap();
            t.as_i64().or(t.as_i32().map(i64::from)).unwrap()
        })
        .sum()
}

#[tokio::test]
async fn placement_spreads_new_tenants_respects_capacity_and_data_stays_on_its_cluster() {
    let f = fleet().await;
    let poly = instance(&f, Some(300), Duration::from_secs(1)).await;
    let ids: Vec<String> = (0..1000).map(|i| format!("c{i:04}")).collect();
    let created: Vec<_> = futures_util::stream::iter(ids.iter())
        .map(|id| {
            let poly = poly.clone();
            async move {
                let info = poly.tenants()?.create(id, CreateTenant::new()).await?;
                let note = poly.tenant(id).await?.model::<Note>()?;
                note.insert_one(Note { tenant: id.clone() }).await?;
                Ok::<_, Error>(info)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut by_cluster: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for info in created {
        let info = info.expect("created and written");
        by_cluster
            .entry(info.cluster)
            .or_default()
            .insert(info.database);
    }
    let on_a = by_cluster.get("cell_a").cloned().unwrap_or_default();
    let on_b = by_cluster.get("cell_b").cloned().unwrap_or_default();
    assert_eq!(
        (on_a.len(), on_b.len()),
        (300, 700),
        "capacity 300 on a, the rest on b"
    );
    // Each tenant's database exists on its cluster only.
    assert_eq!(databases(&raw(&f.a).await).await, on_a);
    assert_eq!(databases(&raw(&f.b).await).await, on_b);
    assert!(databases(&raw(&f.control).await).await.is_empty());
    let docs = directory_docs(&f).await;
    assert_eq!(docs.len(), 1000);
    assert!(docs.iter().all(|d| d.get_str("state") == Ok("active")));
    // The next tenant does not fit on a: b.
    let next = poly
        .tenants()
        .unwrap()
        .create("c1000", CreateTenant::new())
        .await
        .unwrap();
    assert_eq!(next.cluster, "cell_b");
    let full = poly
        .tenants()
        .unwrap()
        .create(
            "c1001",
            CreateTenant::new().placement(Placement::On("cell_a".into())),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(tenant_error(&full), TenantError::FleetFull { .. }),
        "{full}"
    );
}

#[tokio::test]
async fn a_suspension_made_through_one_instance_is_refused_by_another_within_the_bound() {
    let f = fleet().await;
    let refresh = Duration::from_millis(200);
    // Polling only: the bound is the refresh plus one read.
    let (a, b) = polling_pair(&f, refresh).await;
    a.tenants()
        .unwrap()
        .create("acme", CreateTenant::new())
        .await
        .unwrap();
    // B routes it: its entry is cached from now on.
    b.tenant("acme").await.unwrap();
    let suspended_at = Instant::now();
    a.tenants().unwrap().suspend("acme").await.unwrap();
    // A refuses at once.
    let e = a.tenant("acme").await.unwrap_err();
    assert!(
        matches!(tenant_error(&e), TenantError::Suspended { .. }),
        "{e}"
    );
    // B within the documented bound: refresh plus one read of the directory (a generous
    // second for that read on a loaded machine).
    let bound = refresh + Duration::from_secs(1);
    let seen = loop {
        match b.tenant("acme").await {
            Err(Error::Tenant(t)) if matches!(*t, TenantError::Suspended { .. }) => {
                break suspended_at.elapsed()
            }
            Ok(_) => {}
            Err(other) => panic!("{other}"),
        }
        assert!(
            suspended_at.elapsed() < bound * 5,
            "B still serves the suspended tenant after {:?}",
            suspended_at.elapsed()
        );
        tokio::task::yield_now().await;
    };
    assert!(seen <= bound, "B refused after {seen:?}, bound {bound:?}");
    assert!(!b.tenants().unwrap().stats().stream_open, "polling only");
    println!("polling only: B refused the suspended tenant after {seen:?} (bound {bound:?})");
    a.tenants().unwrap().resume("acme").await.unwrap();
    let deadline = Instant::now() + bound * 5;
    while b.tenant("acme").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "B never served the resumed tenant"
        );
        tokio::task::yield_now().await;
    }
    let twice = a.tenants().unwrap().resume("acme").await.unwrap_err();
    assert!(
        matches!(tenant_error(&twice), TenantError::WrongState { .. }),
        "{twice}"
    );
}

#[tokio::test]
async fn concurrent_creates_of_the_same_tenants_by_two_instances_leave_one_entry_each() {
    let f = fleet().await;
    let (a, b) = (
        instance(&f, None, Duration::from_secs(1)).await,
        instance(&f, None, Duration::from_secs(1)).await,
    );
    let ids: Vec<String> = (0..20).map(|i| format!("dup{i}")).collect();
    let both = ids.iter().flat_map(|id| {
        [&a, &b].map(|p| {
            let (p, id) = (p.clone(), id.clone());
            async move { p.tenants().unwrap().create(&id, CreateTenant::new()).await }
        })
    });
    for r in futures_util::future::join_all(both).await {
        match r {
            Ok(info) => assert_eq!(info.state, polymongo::tenants::TenantState::Active),
            Err(e) => assert!(
                matches!(tenant_error(&e), TenantError::AlreadyExists { .. }),
                "{e}"
            ),
        }
    }
    let docs = directory_docs(&f).await;
    assert_eq!(docs.len(), 20, "one entry per tenant");
    // The places taken match the tenants recorded (a loser gives its place back).
    let total = places_taken(&f).await;
    assert_eq!(total, 20);
}

#[tokio::test]
async fn a_create_left_half_done_is_not_served_and_the_next_create_finishes_it() {
    let f = fleet().await;
    let poly = instance(&f, None, Duration::from_secs(1)).await;
    // What a crash after the record leaves: a `creating` entry.
    let raw_control = raw(&f.control).await;
    raw_control
        .database("polymongo_directory")
        .collection::<Document>("tenants")
        .insert_one(doc! {
            "_id": "half", "database": "t_half", "cluster": "cell_b", "state": "creating",
            "version": 1_i64, "seq": 0_i64, "labels": {}, "created_at_ms": 0_i64,
            "updated_at_ms": 0_i64,
        })
        .await
        .unwrap();
    let e = poly.tenant("half").await.unwrap_err();
    assert!(
        matches!(tenant_error(&e), TenantError::NotServing { .. }),
        "{e}"
    );
    let info = poly
        .tenants()
        .unwrap()
        .create("half", CreateTenant::new())
        .await
        .unwrap();
    assert_eq!(
        (info.state, info.cluster.as_str()),
        (polymongo::tenants::TenantState::Active, "cell_b")
    );
    poly.tenant("half")
        .await
        .unwrap()
        .model::<Note>()
        .unwrap()
        .insert_one(Note {
            tenant: "half".into(),
        })
        .await
        .unwrap();
    assert!(databases(&raw(&f.b).await).await.contains("t_half"));
    let again = poly
        .tenants()
        .unwrap()
        .create("half", CreateTenant::new())
        .await
        .unwrap_err();
    assert!(
        matches!(tenant_error(&again), TenantError::AlreadyExists { .. }),
        "{again}"
    );
}

#[tokio::test]
async fn bad_input_gets_a_typed_error_naming_what_is_wrong() {
    let f = fleet().await;
    // Options.
    let bad_cluster = PolyMongo::builder()
        .uri(f.control.uri())
        .directory(DirectoryConfig::on("nowhere"))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            bad_cluster,
            Error::Config {
                field: "directory.cluster",
                ..
            }
        ),
        "{bad_cluster}"
    );
    let zero = PolyMongo::builder()
        .uri(f.control.uri())
        .cluster("cell_a", ClusterConfig::new(f.a.uri()).capacity(0))
        .build()
        .await
        .unwrap_err();
    assert!(
        zero.to_string().contains("capacity must be at least 1"),
        "{zero}"
    );
    let no_dir = PolyMongo::builder()
        .uri(f.control.uri())
        .build()
        .await
        .unwrap();
    assert!(
        matches!(no_dir.tenant("x").await.unwrap_err(), Error::Tenant(t) if *t == TenantError::NoDirectory)
    );

    let poly = instance(&f, None, Duration::from_secs(1)).await;
    let tenants = poly.tenants().unwrap();
    for id in ["", "a/b", "a.b c", "x\0"] {
        let e = tenants.create(id, CreateTenant::new()).await.unwrap_err();
        assert!(
            matches!(tenant_error(&e), TenantError::InvalidId { .. }),
            "{id:?}: {e}"
        );
    }
    let unknown = poly.tenant("ghost").await.unwrap_err();
    assert!(
        matches!(tenant_error(&unknown), TenantError::Unknown { .. }),
        "{unknown}"
    );
    let nowhere = tenants
        .create(
            "x1",
            CreateTenant::new().placement(Placement::On("cell_z".into())),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(tenant_error(&nowhere), TenantError::UnknownCluster { .. }),
        "{nowhere}"
    );

    // An entry edited by hand into an invalid state: named, never a panic.
    tenants.create("edited", CreateTenant::new()).await.unwrap();
    raw(&f.control)
        .await
        .database("polymongo_directory")
        .collection::<Document>("tenants")
        .update_one(
            doc! { "_id": "edited" },
            doc! { "$set": { "state": "paused" } },
        )
        .await
        .unwrap();
    let fresh = instance(&f, None, Duration::from_secs(1)).await;
    let e = fresh.tenant("edited").await.unwrap_err();
    match tenant_error(&e) {
        TenantError::InvalidRecord { tenant, field, .. } => {
            assert_eq!((tenant.as_str(), field.as_str()), ("edited", "state"))
        }
        other => panic!("{other}"),
    }
    // Reserved names: with no prefix, an id mapping onto admin or the directory's database.
    let bare = PolyMongo::builder()
        .uri(f.control.uri())
        .directory(DirectoryConfig::on("main"))
        .build()
        .await
        .unwrap();
    for id in ["admin", "local", "config", "polymongo_directory"] {
        let e = bare
            .tenants()
            .unwrap()
            .create(id, CreateTenant::new())
            .await
            .unwrap_err();
        assert!(
            matches!(tenant_error(&e), TenantError::InvalidId { .. }),
            "{id}: {e}"
        );
    }
}

#[tokio::test]
async fn a_warm_route_reads_nothing() {
    let f = fleet().await;
    let poly = instance(&f, None, Duration::from_secs(3600)).await;
    poly.tenants()
        .unwrap()
        .create("warm", CreateTenant::new())
        .await
        .unwrap();
    let routes = (0..50).map(|_| poly.tenant("warm"));
    for r in futures_util::future::join_all(routes).await {
        r.unwrap();
    }
    // With the directory gone, only a read would notice: the warm route does not.
    raw(&f.control)
        .await
        .database("polymongo_directory")
        .drop()
        .await
        .unwrap();
    let t = poly.tenant("warm").await.unwrap();
    assert_eq!(t.info().database, "t_warm");
}

#[tokio::test]
async fn creates_cut_at_growing_delays_still_finish_and_leak_no_place() {
    let f = fleet().await;
    let poly = instance(&f, None, Duration::from_secs(1)).await;
    let delays = [0_u64, 1, 2, 3, 5, 8, 13, 21, 34];
    for (i, ms) in delays.iter().enumerate() {
        let _ = tokio::time::timeout(
            Duration::from_millis(*ms),
            poly.tenants()
                .unwrap()
                .create(&format!("cut{i}"), CreateTenant::new()),
        )
        .await;
    }
    // Each create goes on after its caller left: every tenant ends active.
    common::eventually("every cut create finished", Duration::from_secs(30), || {
        let f = &f;
        async move {
            let docs = directory_docs(f).await;
            (docs.len() == delays.len() && docs.iter().all(|d| d.get_str("state") == Ok("active")))
                .then_some(())
        }
    })
    .await;
    let taken = places_taken(&f).await;
    assert_eq!(
        taken,
        delays.len() as i64,
        "places taken = tenants recorded"
    );
}

#[tokio::test]
async fn routes_dropped_halfway_leave_no_state_for_a_hundred_thousand_names() {
    use futures_util::FutureExt;
    // A directory that does not answer: each route starts its read (its entry in the
    // in-flight map is made) and waits for a server; it is dropped there.
    let silent = PolyMongo::builder()
        .uri("mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=600000")
        .directory(DirectoryConfig::on("main"))
        .build()
        .await
        .unwrap();
    let tenants = silent.tenants().unwrap();
    let notes = silent.model::<Note>();
    for i in 0..100_000 {
        assert!(tenants.route(&format!("gone{i}")).now_or_never().is_none());
        assert!(notes.tenant(&format!("gone{i}")).now_or_never().is_none());
    }
    assert_eq!(tenants.reads_in_flight(), 0);
    assert_eq!(
        silent.cached_databases(),
        0,
        "unknown names make no registry entries"
    );

    // Against a real read, cut at growing delays.
    let f = fleet().await;
    let poly = instance(&f, None, Duration::from_secs(1)).await;
    let tenants = poly.tenants().unwrap();
    create_on(&tenants, &[("kept", "cell_b")]).await;
    for ms in [0_u64, 1, 2, 5, 10] {
        let _ = tokio::time::timeout(Duration::from_millis(ms), poly.tenant("kept")).await;
        assert_eq!(tenants.reads_in_flight(), 0, "after a cut at {ms} ms");
    }
    assert_eq!(poly.tenant("kept").await.unwrap().info().id, "kept");

    // `model.tenant(id)` cut the same way on a second instance (its own cold read): nothing
    // left in flight, and the next call writes to the tenant's database on its cluster.
    let other = instance(&f, None, Duration::from_secs(1)).await;
    let notes = other.model::<Note>();
    let other_tenants = other.tenants().unwrap();
    for ms in [0_u64, 1, 2, 5, 10] {
        let _ = tokio::time::timeout(Duration::from_millis(ms), notes.tenant("kept")).await;
        assert_eq!(other_tenants.reads_in_flight(), 0, "after a cut at {ms} ms");
    }
    let kept = Note {
        tenant: "kept".into(),
    };
    notes
        .tenant("kept")
        .await
        .unwrap()
        .insert_one(kept)
        .await
        .unwrap();
    let n = raw(&f.b)
        .await
        .database("t_kept")
        .collection::<Document>("notes")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn with_a_change_stream_a_suspension_arrives_without_waiting_for_the_poll() {
    let Some(control) =
        polymongo_testkit::server_for(&[polymongo_testkit::Capability::ChangeStreams]).await
    else {
        return; // reported as a skip by the kit
    };
    let f = Fleet {
        control,
        a: server().await,
        b: server().await,
    };
    // Polling once an hour: only the stream can bring the change in time.
    let hour = Duration::from_secs(3600);
    let (a, b) = (
        instance(&f, None, hour).await,
        instance(&f, None, hour).await,
    );
    a.tenants()
        .unwrap()
        .create("streamed", CreateTenant::new())
        .await
        .unwrap();
    b.tenant("streamed").await.unwrap();
    common::eventually("B's change stream open", Duration::from_secs(20), || {
        let open = b.tenants().unwrap().stats().stream_open;
        async move { open.then_some(()) }
    })
    .await;
    let suspended_at = Instant::now();
    a.tenants().unwrap().suspend("streamed").await.unwrap();
    let bound = Duration::from_secs(2);
    loop {
        match b.tenant("streamed").await {
            Err(Error::Tenant(t)) if matches!(*t, TenantError::Suspended { .. }) => {
                println!(
                    "with the stream: B refused the suspended tenant after {:?}",
                    suspended_at.elapsed()
                );
                break;
            }
            Ok(_) => {}
            Err(other) => panic!("{other}"),
        }
        assert!(
            suspended_at.elapsed() < bound,
            "B still serves after {:?} with the stream open",
            suspended_at.elapsed()
        );
        tokio::task::yield_now().await;
    }
    let stats = b.tenants().unwrap().stats();
    assert!(
        stats.stream_events >= 1 && stats.invalidations >= 1,
        "{stats:?}"
    );
    assert!(
        stats.cache_hits >= 1 && stats.cache_misses >= 1,
        "{stats:?}"
    );
}

#[tokio::test]
async fn suspends_cut_at_growing_delays_leave_a_consistent_tenant() {
    let f = fleet().await;
    let refresh = Duration::from_millis(100);
    let (a, b) = polling_pair(&f, refresh).await;
    a.tenants()
        .unwrap()
        .create("flip", CreateTenant::new())
        .await
        .unwrap();
    for ms in [0_u64, 1, 2, 3, 5, 8, 13] {
        let _ = tokio::time::timeout(
            Duration::from_millis(ms),
            a.tenants().unwrap().suspend("flip"),
        )
        .await;
        // Whatever the cut left, the directory says one state and both instances agree
        // with it within the bound.
        let state = a.tenants().unwrap().get("flip").await.unwrap().state;
        let deadline = Instant::now() + refresh + Duration::from_secs(1);
        for p in [&a, &b] {
            loop {
                let served = p.tenant("flip").await.is_ok();
                if served == (state == polymongo::tenants::TenantState::Active) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "an instance disagrees with {state:?}"
                );
                tokio::task::yield_now().await;
            }
        }
        if state != polymongo::tenants::TenantState::Active {
            a.tenants().unwrap().resume("flip").await.unwrap();
        }
    }
    // A change refused for its state takes no sequence number: readers see no gap.
    let control = raw(&f.control).await;
    let counters = control
        .database("polymongo_directory")
        .collection::<Document>("counters");
    let seq = || async {
        let d = counters
            .find_one(doc! { "_id": "seq" })
            .await
            .unwrap()
            .unwrap();
        d.get("value").map(ToString::to_string)
    };
    let before = seq().await;
    let e = a.tenants().unwrap().resume("flip").await.unwrap_err();
    assert!(
        matches!(tenant_error(&e), TenantError::WrongState { .. }),
        "{e}"
    );
    assert_eq!(seq().await, before);
}

/// An instance whose way to the control cluster goes through `proxy` (cells direct), polling
/// every `refresh`, refusing cached tenants past `max_staleness`.
async fn instance_through(
    f: &Fleet,
    proxy: &polymongo_testkit::FaultProxy,
    refresh: Duration,
    max_staleness: Option<Duration>,
) -> PolyMongo {
    PolyMongo::builder()
        .uri(proxy.uri_for(f.control.uri()))
        .max_pool_size(16)
        .server_selection_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(1))
        .heartbeat_frequency(Duration::from_millis(500))
        .cluster("cell_a", ClusterConfig::new(f.a.uri()))
        .cluster("cell_b", ClusterConfig::new(f.b.uri()))
        .directory(
            DirectoryConfig::on("main")
                .database_prefix("t_")
                .refresh(refresh)
                .watch(false)
                .max_staleness(max_staleness),
        )
        .build()
        .await
        .expect("manager")
}

#[tokio::test]
async fn with_the_directory_black_holed_cached_tenants_are_served_no_longer_than_max_staleness() {
    let f = fleet().await;
    let proxy = polymongo_testkit::FaultProxy::start(&format!(
        "127.0.0.1:{}",
        f.control.port().expect("a local server")
    ))
    .await
    .expect("proxy");
    let (refresh, bound) = (Duration::from_millis(100), Duration::from_millis(1500));
    let a = instance(&f, None, refresh).await;
    let b = instance_through(&f, &proxy, refresh, Some(bound)).await;
    let open = instance_through(&f, &proxy, refresh, None).await;
    a.tenants()
        .unwrap()
        .create("acme", CreateTenant::new())
        .await
        .unwrap();
    b.tenant("acme").await.unwrap();
    open.tenant("acme").await.unwrap();
    proxy.black_hole();
    let cut = Instant::now();
    // While B serves the tenant, its last successful read of the changes began no longer
    // than the bound ago; then it refuses, naming the staleness.
    let (served, since) = loop {
        let age = b.tenants().unwrap().stats().changes_read_ago;
        match b.tenant("acme").await {
            Ok(_) => assert!(age <= bound, "served with changes read {age:?} ago"),
            Err(Error::Tenant(t)) => match *t {
                TenantError::Stale { since, .. } => break (cut.elapsed(), since),
                other => panic!("{other}"),
            },
            Err(other) => panic!("{other}"),
        }
        assert!(cut.elapsed() < bound * 10, "B never refused");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(since > bound, "{since:?}");
    // A suspension made meanwhile is not lost: once the directory answers again, B refuses
    // the tenant as suspended (not as stale), within refresh plus one read.
    a.tenants().unwrap().suspend("acme").await.unwrap();
    // The instance that chose availability still serves it (without the suspension).
    open.tenant("acme")
        .await
        .expect("max_staleness None serves through the outage");
    proxy.pass_through();
    let healed = Instant::now();
    loop {
        match b.tenant("acme").await {
            Err(Error::Tenant(t)) if matches!(*t, TenantError::Suspended { .. }) => break,
            Err(Error::Tenant(t)) if matches!(*t, TenantError::Stale { .. }) => {}
            Ok(_) => panic!("B served a tenant suspended during the outage"),
            Err(other) => {
                // The pool's connections were cut by the black hole: a read may fail while
                // the driver reconnects.
                let _ = other;
            }
        }
        assert!(
            healed.elapsed() < Duration::from_secs(20),
            "B never caught up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let caught_up = healed.elapsed();
    common::eventually("the open instance sees the suspension", Duration::from_secs(20), || async {
        matches!(open.tenant("acme").await, Err(Error::Tenant(t)) if matches!(*t, TenantError::Suspended { .. })).then_some(())
    })
    .await;
    println!(
        "black hole: B served for {served:?} (refused after {since:?} without a read, bound \
         {bound:?}); after healing it refused the suspended tenant within {caught_up:?}"
    );
}

#[tokio::test]
async fn over_a_slow_network_a_suspension_arrives_within_refresh_plus_one_slow_read() {
    let f = fleet().await;
    let proxy = polymongo_testkit::FaultProxy::start(&format!(
        "127.0.0.1:{}",
        f.control.port().expect("a local server")
    ))
    .await
    .expect("proxy");
    let refresh = Duration::from_millis(200);
    let a = instance(&f, None, refresh).await;
    let b = instance_through(&f, &proxy, refresh, Some(Duration::from_secs(10))).await;
    a.tenants()
        .unwrap()
        .create("acme", CreateTenant::new())
        .await
        .unwrap();
    b.tenant("acme").await.unwrap();
    let latency = Duration::from_millis(150);
    proxy.set_latency(latency);
    // One read of the changes through the proxy, timed with a raw client on the same path.
    let raw_slow = Client::with_uri_str(proxy.uri_for(f.control.uri()))
        .await
        .unwrap();
    let coll = raw_slow
        .database("polymongo_directory")
        .collection::<Document>("tenants");
    coll.find_one(doc! {}).await.unwrap();
    let timed = Instant::now();
    coll.find(doc! { "seq": { "$gt": 0 } })
        .await
        .unwrap()
        .collect::<Vec<_>>()
        .await;
    let one_read = timed.elapsed();
    let suspended = Instant::now();
    a.tenants().unwrap().suspend("acme").await.unwrap();
    let seen = loop {
        match b.tenant("acme").await {
            Err(Error::Tenant(t)) if matches!(*t, TenantError::Suspended { .. }) => {
                break suspended.elapsed()
            }
            Ok(_) => {}
            Err(other) => panic!("{other}"),
        }
        assert!(
            suspended.elapsed() < Duration::from_secs(30),
            "B never refused"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // The bound: a read under way when the change landed (it missed it), the refresh, then
    // the read that sees it — plus a read's worth of slack for the loaded machine.
    let bound = refresh + one_read * 3;
    assert!(
        seen <= bound,
        "B refused after {seen:?}, bound {bound:?} (one read {one_read:?})"
    );
    println!("latency {latency:?} each way: one read {one_read:?}; B refused the suspended tenant after {seen:?} (bound {bound:?})");
}

#[tokio::test]
async fn routing_figures_are_counted_per_cluster_and_scraped() {
    let f = fleet().await;
    let a = instance(&f, None, Duration::from_millis(100)).await;
    let b = instance_with(&f, None, Duration::from_millis(100), false).await;
    let tenants = a.tenants().unwrap();
    create_on(
        &tenants,
        &[("x1", "cell_a"), ("x2", "cell_b"), ("x3", "cell_b")],
    )
    .await;
    for id in ["x1", "x2", "x3"] {
        for _ in 0..4 {
            b.tenant(id).await.unwrap();
        }
    }
    tenants.suspend("x3").await.unwrap();
    common::eventually("B invalidates x3", Duration::from_secs(10), || async {
        b.tenant("x3").await.is_err().then_some(())
    })
    .await;
    let by: BTreeMap<String, polymongo::tenants::ClusterRouting> = b
        .tenants()
        .unwrap()
        .cluster_stats()
        .into_iter()
        .map(|c| (c.cluster.clone(), c))
        .collect();
    let figures = |c: &str| (by[c].cache_hits, by[c].cache_misses, by[c].invalidations);
    assert_eq!(figures("cell_a"), (3, 1, 0));
    // x3: 1 read, 3 hits, invalidated once, then read again (suspended, cached as such).
    // x2 and x3 warm 3 times each, and x3 again while the suspension travels.
    assert!(figures("cell_b").0 >= 6, "{:?}", figures("cell_b"));
    assert_eq!(figures("cell_b").2, 1);
    assert!(figures("cell_b").1 >= 3, "{:?}", figures("cell_b"));
    assert_eq!(figures("main"), (0, 0, 0));
    // The same figures in the scrape (feature `metrics`).
    #[cfg(feature = "metrics")]
    {
        let text = polymongo::metrics::render(&b);
        for line in [
            "polymongo_directory_routes_total{cluster=\"cell_a\",result=\"hit\"} 3",
            "polymongo_directory_routes_total{cluster=\"cell_a\",result=\"miss\"} 1",
            "polymongo_directory_invalidations_total{cluster=\"cell_b\"} 1",
            "polymongo_directory_stream_open 0",
            "polymongo_directory_reads_in_flight 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.contains("polymongo_directory_changes_read_age_seconds "));
    }
}

#[tokio::test]
async fn each_cluster_pool_has_the_size_its_configuration_gives() {
    let f = fleet().await;
    let poly = PolyMongo::builder()
        .uri(f.control.uri())
        .max_pool_size(16)
        .cluster("cell_a", ClusterConfig::new(f.a.uri()).connections(1, 3))
        .cluster("cell_b", ClusterConfig::new(f.b.uri()))
        .directory(DirectoryConfig::on("main").database_prefix("t_"))
        .build()
        .await
        .unwrap();
    let tenants = poly.tenants().unwrap();
    create_on(&tenants, &[("pa", "cell_a"), ("pb", "cell_b")]).await;
    for id in ["pa", "pb"] {
        poly.tenant(id)
            .await
            .unwrap()
            .model::<Note>()
            .unwrap()
            .insert_one(Note { tenant: id.into() })
            .await
            .unwrap();
    }
    let general = poly.stats().general();
    let sizes: BTreeMap<String, (u32, u32)> = std::iter::once(&general.primary)
        .chain(&general.other_clusters)
        .map(|p| (p.cluster.clone(), (p.stats.min_size, p.stats.max_size)))
        .collect();
    let port = |s: &TestServer| format!(":{}", s.port().unwrap());
    let of = |s: &TestServer| {
        sizes
            .iter()
            .find(|(label, _)| label.contains(&port(s)))
            .map(|(_, v)| *v)
    };
    assert_eq!(of(&f.a), Some((1, 3)), "{sizes:?}");
    assert_eq!(of(&f.b), Some((0, 16)), "{sizes:?}");
}

/// Creates each tenant on the cluster named beside it.
async fn create_on(tenants: &polymongo::tenants::Tenants, placed: &[(&str, &str)]) {
    for (id, cell) in placed {
        tenants
            .create(
                id,
                CreateTenant::new().placement(Placement::On((*cell).into())),
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn least_data_placement_goes_where_the_tenants_hold_least() {
    let f = fleet().await;
    let poly = instance(&f, None, Duration::from_secs(1)).await;
    let tenants = poly.tenants().unwrap();
    create_on(&tenants, &[("big", "cell_a"), ("small", "cell_b")]).await;
    // In batches: one 1 MB insert can outlast the driver's monitor timeout on mongoeco
    // under load (QUIRKS.md).
    let blobs = raw(&f.a)
        .await
        .database("t_big")
        .collection::<Document>("blobs");
    for batch in 0..8 {
        blobs
            .insert_many(
                (batch * 250..(batch + 1) * 250).map(|i| doc! { "_id": i, "pad": "x".repeat(500) }),
            )
            .await
            .unwrap();
    }
    let census = tenants.census().await.unwrap();
    let size = |c: &str| {
        census
            .iter()
            .find(|x| x.name == c)
            .and_then(|x| x.data_bytes)
    };
    let placed = tenants
        .create("next", CreateTenant::new().placement(Placement::LeastData))
        .await
        .unwrap();
    // Where the server reports sizes, the cell holding less; where it reports none (or the
    // same), the fewest tenants, then the first name.
    let expected = match (size("cell_a"), size("cell_b")) {
        (Some(a), Some(b)) if a > b => "cell_b",
        (Some(a), Some(b)) if a < b => "cell_a",
        _ => "cell_a",
    };
    assert_eq!(
        placed.cluster,
        expected,
        "sizes {:?} / {:?}",
        size("cell_a"),
        size("cell_b")
    );
    println!(
        "data sizes reported: cell_a {:?}, cell_b {:?}; placed on {}",
        size("cell_a"),
        size("cell_b"),
        placed.cluster
    );
}

#[tokio::test]
async fn tenant_change_hooks_hear_each_change_once_and_not_the_first_read() {
    let f = fleet().await;
    let a = instance(&f, None, Duration::from_millis(100)).await;
    create_on(&a.tenants().unwrap(), &[("h1", "cell_a"), ("h2", "cell_b")]).await;
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&heard);
    let b = PolyMongo::builder()
        .uri(f.control.uri())
        .cluster("cell_a", ClusterConfig::new(f.a.uri()))
        .cluster("cell_b", ClusterConfig::new(f.b.uri()))
        .directory(
            DirectoryConfig::on("main")
                .database_prefix("t_")
                .refresh(Duration::from_millis(100))
                .watch(false),
        )
        .on_tenant_change(move |e| {
            sink.lock().unwrap().push((
                e.tenant.clone(),
                e.cluster.clone(),
                e.state.clone(),
                e.invalidated,
            ));
        })
        .build()
        .await
        .unwrap();
    // The tenants created before B was built are not told.
    common::eventually("B read the changes", Duration::from_secs(10), || async {
        (b.tenants().unwrap().stats().change_reads >= 1).then_some(())
    })
    .await;
    b.tenant("h1").await.unwrap();
    a.tenants().unwrap().suspend("h1").await.unwrap();
    a.tenants().unwrap().suspend("h2").await.unwrap();
    let events = common::eventually("B's hook hears both", Duration::from_secs(10), || async {
        let got = heard.lock().unwrap().clone();
        (got.len() >= 2).then_some(got)
    })
    .await;
    // Three more reads: nothing is told twice.
    let reads = b.tenants().unwrap().stats().change_reads;
    common::eventually("three more reads", Duration::from_secs(10), || async {
        (b.tenants().unwrap().stats().change_reads >= reads + 3).then_some(())
    })
    .await;
    let all = heard.lock().unwrap().clone();
    assert_eq!(all, events, "each change is told once");
    assert_eq!(
        all,
        vec![
            (
                "h1".to_owned(),
                "cell_a".to_owned(),
                "suspended".to_owned(),
                true
            ),
            (
                "h2".to_owned(),
                "cell_b".to_owned(),
                "suspended".to_owned(),
                false
            ),
        ]
    );
    assert_eq!(b.tenants().unwrap().stats().hook_events_dropped, 0);
}

#[tokio::test]
async fn pages_list_every_tenant_once_and_entries_with_odd_ids_as_invalid() {
    let f = fleet().await;
    let poly = instance(&f, None, Duration::from_secs(1)).await;
    let tenants = poly.tenants().unwrap();
    for id in ["p1", "p2", "p3", "p4", "p5"] {
        tenants.create(id, CreateTenant::new()).await.unwrap();
    }
    // Entries no library writes: ids that are not strings.
    raw(&f.control)
        .await
        .database("polymongo_directory")
        .collection::<Document>("tenants")
        .insert_many([
            doc! { "_id": 7, "database": "t_7", "cluster": "cell_a", "state": "active" },
            // (An ObjectId too where `$type: "objectId"` finds one: not nx-27017, QUIRKS.md.)
            doc! { "_id": 8.5, "state": "active" },
        ])
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut invalid = Vec::new();
    let mut options = polymongo::tenants::ListTenants::new().limit(2);
    loop {
        let page = tenants.list(options.clone()).await.unwrap();
        seen.extend(page.tenants.iter().map(|t| t.id.clone()));
        invalid.extend(page.invalid.iter().cloned());
        match page.next {
            Some(next) => options = options.after(next),
            None => break,
        }
    }
    assert_eq!(seen, ["p1", "p2", "p3", "p4", "p5"]);
    assert_eq!(invalid.len(), 2, "{invalid:?}");
    assert!(invalid
        .iter()
        .all(|e| matches!(e, TenantError::InvalidRecord { field, .. } if field == "_id")));
}

#[tokio::test]
async fn a_tenant_databases_own_configuration_holds_on_its_cluster_and_one_choosing_a_pool_is_refused(
) {
    use mongodb::options::WriteConcern;
    use polymongo::DbConfig;

    let f = fleet().await;
    // A manager without per-database configuration creates the tenants.
    let plain = instance(&f, None, Duration::from_secs(1)).await;
    let tenants = plain.tenants().unwrap();
    create_on(&tenants, &[("capped", "cell_a"), ("elsewhere", "cell_b")]).await;

    let configured = |extra: DbConfig| {
        PolyMongo::builder()
            .uri(f.control.uri())
            .cluster("cell_a", ClusterConfig::new(f.a.uri()))
            .cluster("cell_b", ClusterConfig::new(f.b.uri()))
            .directory(DirectoryConfig::on("main").database_prefix("t_"))
            .db(
                "t_capped",
                DbConfig::new()
                    .max_concurrent_ops(1)
                    .queue_timeout(Duration::from_millis(150))
                    .write_concern(WriteConcern::majority()),
            )
            .db("t_elsewhere", extra)
            .db("t_new", DbConfig::new().max_connections(4))
            .build()
    };
    let poly = configured(DbConfig::new().uri(format!(
        "mongodb://user:s3cret@127.0.0.1:{}/",
        f.a.port().unwrap()
    )))
    .await
    .unwrap();

    // The database's own settings hold on the entry the directory placed on cell a.
    let capped = poly.tenant("capped").await.unwrap();
    assert_eq!(
        capped.database().write_concern(),
        Some(&WriteConcern::majority())
    );
    let first = capped.model::<Note>().unwrap();
    let second = capped.model::<Note>().unwrap_err();
    assert!(
        matches!(&second, Error::Saturated { database, limit: 1, .. } if database == "t_capped"),
        "{second:?}"
    );
    let waited = capped.acquire::<Note>().await.unwrap_err();
    assert!(
        matches!(&waited, Error::Saturated { waited, .. } if *waited >= Duration::from_millis(150)),
        "{waited:?}"
    );
    first
        .insert_one(Note {
            tenant: "capped".into(),
        })
        .await
        .unwrap();
    drop(first);
    capped.model::<Note>().unwrap();
    let on_a = raw(&f.a)
        .await
        .database("t_capped")
        .collection::<Document>("notes")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(on_a, 1, "the note is on cell a");
    assert!(!databases(&raw(&f.b).await).await.contains("t_capped"));

    // A configuration that would choose the pool is refused, naming the database and the
    // field, without the URI's password; nothing is placed.
    let e = poly.tenant("elsewhere").await.unwrap_err();
    match &e {
        Error::DbConfig {
            database, field, ..
        } => assert_eq!((database.as_str(), *field), ("t_elsewhere", "uri")),
        other => panic!("expected DbConfig, got {other:?}"),
    }
    assert!(!format!("{e} {e:?}").contains("s3cret"), "{e:?}");
    // So is a create with one, before anything is written.
    let before = directory_docs(&f).await.len();
    let e = poly
        .tenants()
        .unwrap()
        .create("new", CreateTenant::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::DbConfig { database, field: "max_connections", .. } if database == "t_new"),
        "{e:?}"
    );
    assert_eq!(directory_docs(&f).await.len(), before);
    assert_eq!(places_taken(&f).await, 2);
    poly.close_all(Duration::from_secs(5)).await;

    // Without the conflicting setting the same tenant routes to its own cluster.
    let fixed = configured(DbConfig::new().read_concern(mongodb::options::ReadConcern::majority()))
        .await
        .unwrap();
    let t = fixed.tenant("elsewhere").await.unwrap();
    assert_eq!(t.info().cluster, "cell_b");
    assert_eq!(
        t.database().read_concern(),
        Some(&mongodb::options::ReadConcern::majority())
    );
    fixed.close_all(Duration::from_secs(5)).await;
    plain.close_all(Duration::from_secs(5)).await;
}

#[derive(Debug, Serialize, Deserialize)]
struct BadName {
    x: i32,
}

impl Model for BadName {
    const COLLECTION: &'static str = "bad$name";
}

#[tokio::test]
async fn model_tenant_routes_a_model_to_the_tenants_cluster_and_refuses_as_the_route_does() {
    let f = fleet().await;
    let poly = instance(&f, None, Duration::from_secs(3600)).await;
    let tenants = poly.tenants().unwrap();
    create_on(&tenants, &[("on_a", "cell_a"), ("on_b", "cell_b")]).await;
    let notes = poly.model::<Note>();

    // Cold (a directory read), then warm (a cache hit, no read).
    let before = tenants.stats();
    for id in ["on_a", "on_b"] {
        notes
            .tenant(id)
            .await
            .unwrap()
            .insert_one(Note { tenant: id.into() })
            .await
            .unwrap();
    }
    let cold = tenants.stats();
    assert_eq!(cold.cache_misses - before.cache_misses, 2);
    for id in ["on_a", "on_b"] {
        let handle = notes.tenant(id).await.unwrap();
        assert_eq!(handle.namespace().db, format!("t_{id}"));
        handle.insert_one(Note { tenant: id.into() }).await.unwrap();
    }
    let warm = tenants.stats();
    assert_eq!(
        warm.cache_misses, cold.cache_misses,
        "warm routes read nothing"
    );
    assert_eq!(warm.cache_hits - cold.cache_hits, 2);

    // Each tenant's documents are on its own cluster only (raw clients).
    let (a, b) = (raw(&f.a).await, raw(&f.b).await);
    for (id, home, other) in [("on_a", &a, &b), ("on_b", &b, &a)] {
        let name = format!("t_{id}");
        let n = home
            .database(&name)
            .collection::<Document>("notes")
            .count_documents(doc! { "tenant": id })
            .await
            .unwrap();
        assert_eq!(n, 2, "{id} on its cluster");
        assert!(
            !databases(other).await.contains(&name),
            "{id} only on its cluster"
        );
    }

    // Refusals: the same typed errors as `poly.tenant(id)`.
    tenants.suspend("on_b").await.unwrap();
    let e = notes.tenant("on_b").await.unwrap_err();
    assert!(matches!(tenant_error(&e), TenantError::Suspended { tenant } if tenant == "on_b"));
    let e = notes.tenant("nobody").await.unwrap_err();
    assert!(matches!(tenant_error(&e), TenantError::Unknown { tenant } if tenant == "nobody"));
    let e = notes.tenant("bad/id").await.unwrap_err();
    assert!(
        matches!(tenant_error(&e), TenantError::InvalidId { tenant, .. } if tenant == "bad/id")
    );

    // A model whose collection name is invalid is refused on a warm tenant, and through
    // `.db(name)` on a database another model made warm.
    let e = poly.model::<BadName>().tenant("on_a").await.unwrap_err();
    assert!(matches!(e, Error::InvalidName { .. }), "{e}");
    poly.model::<Note>().db("warm_by_notes").unwrap();
    let e = poly.model::<BadName>().db("warm_by_notes").unwrap_err();
    assert!(matches!(e, Error::InvalidName { .. }), "{e}");

    // Without a directory: a typed error, not a panic.
    let plain = PolyMongo::builder().uri(f.a.uri()).build().await.unwrap();
    let e = plain.model::<Note>().tenant("on_a").await.unwrap_err();
    assert!(matches!(tenant_error(&e), TenantError::NoDirectory));
}

#[tokio::test]
async fn a_routed_tenant_kept_past_its_manager_is_refused_as_closed() {
    let f = fleet().await;
    let poly = instance(&f, None, Duration::from_secs(3600)).await;
    create_on(&poly.tenants().unwrap(), &[("kept", "cell_a")]).await;
    let t = poly.tenant("kept").await.unwrap();
    t.acquire::<Note>().await.unwrap();
    drop(poly);
    // The tenant holds its entry, not the manager: once the manager is gone (its background
    // tasks end when they see it dropped), nothing may start.
    let e = common::eventually(
        "the manager's registry dropped",
        Duration::from_secs(10),
        || {
            let t = &t;
            async move { t.acquire::<Note>().await.err() }
        },
    )
    .await;
    assert!(matches!(e, Error::Closed), "{e}");
}
