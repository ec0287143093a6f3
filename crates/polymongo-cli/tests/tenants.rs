//! `polymongo clusters` and `polymongo tenants ls|show|create|suspend|resume` end to end: the
//! built binary with a configuration file naming three test-kit servers (a control cluster
//! holding the directory, and two cells), effects checked with raw clients; paging over a
//! few hundred tenants; a directory entry edited by hand; bad input and its exit codes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use futures_util::{StreamExt, TryStreamExt};
use polymongo::mongodb::bson::{doc, Bson, Document};
use polymongo::mongodb::Client;
use polymongo::tenants::{CreateTenant, Placement};
use polymongo::{Options, PolyMongo, PolyMongoBuilder};
use polymongo_testkit::{ServerKind, ServerOptions, TestServer};
use serde_json::Value;

use common::run;

const DIRECTORY: &str = "polymongo_directory";

/// A control server (the main cluster, holding the directory) and two cells, with a
/// configuration file that names them.
struct Fleet {
    control: TestServer,
    a: TestServer,
    b: TestServer,
    dir: tempfile::TempDir,
    config: String,
}

/// The fleet, cell_a bounded to `cap_a` tenants and cell_b to `cap_b`.
async fn fleet_with(cap_a: Option<u64>, cap_b: Option<u64>) -> Fleet {
    fleet_of(ServerOptions::new, cap_a, cap_b)
        .await
        .expect("test servers")
}

/// [`fleet_with`] on servers started with `opts`.
async fn fleet_of(
    opts: impl Fn() -> ServerOptions,
    cap_a: Option<u64>,
    cap_b: Option<u64>,
) -> Result<Fleet, polymongo_testkit::TestKitError> {
    let control = TestServer::start_with(opts()).await?;
    let a = TestServer::start_with(opts()).await?;
    let b = TestServer::start_with(opts()).await?;
    let dir = tempfile::tempdir().expect("tempdir");
    let capacity = |c: Option<u64>| c.map(|n| format!("capacity = {n}\n")).unwrap_or_default();
    let text = format!(
        "uri = \"{}\"\n\n[clusters.cell_a]\nuri = \"{}\"\n{}\n[clusters.cell_b]\nuri = \"{}\"\n{}\n\
         [directory]\ncluster = \"main\"\ndatabase_prefix = \"t_\"\n",
        control.uri(),
        a.uri(),
        capacity(cap_a),
        b.uri(),
        capacity(cap_b),
    );
    let path = dir.path().join("polymongo.toml");
    std::fs::write(&path, text).expect("write the configuration");
    let config = path.to_str().expect("UTF-8 path").to_owned();
    Ok(Fleet {
        control,
        a,
        b,
        dir,
        config,
    })
}

async fn fleet() -> Fleet {
    fleet_with(None, None).await
}

impl Fleet {
    /// Runs the binary with this fleet's configuration: (exit code, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (i32, String, String) {
        run(&[&["-c", self.config.as_str()][..], args].concat()).await
    }

    /// A manager on the same configuration, to set up many tenants quickly.
    async fn manager(&self) -> PolyMongo {
        let text = std::fs::read_to_string(&self.config).expect("read the configuration");
        let options: Options = toml::from_str(&text).expect("valid configuration");
        PolyMongoBuilder::from_options(options)
            .build()
            .await
            .expect("manager")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

async fn raw(server: &TestServer) -> Client {
    Client::with_uri_str(server.uri())
        .await
        .expect("raw client")
}

/// Tenant databases (`t_…`) on a server, as `listDatabases` reports them.
async fn tenant_databases(server: &TestServer) -> BTreeSet<String> {
    raw(server)
        .await
        .list_database_names()
        .await
        .expect("listDatabases")
        .into_iter()
        .filter(|n| n.starts_with("t_"))
        .collect()
}

/// The directory's `tenants` collection, read raw.
async fn directory(f: &Fleet) -> Vec<Document> {
    raw(&f.control)
        .await
        .database(DIRECTORY)
        .collection::<Document>("tenants")
        .find(doc! {})
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("read the directory")
}

async fn entry(f: &Fleet, id: &str) -> Document {
    raw(&f.control)
        .await
        .database(DIRECTORY)
        .collection::<Document>("tenants")
        .find_one(doc! { "_id": id })
        .await
        .expect("find_one")
        .unwrap_or_else(|| panic!("no directory entry for {id}"))
}

/// An integer field, Int32 or Int64 (nx-27017 reads Int64 back as Int32).
fn int(b: Option<&Bson>) -> Option<u64> {
    match b? {
        Bson::Int32(n) => u64::try_from(*n).ok(),
        Bson::Int64(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// Whether the server evaluates field paths in a compound `$group` key, which
/// `Tenants::census` uses to count tenants by state. nx-27017 0.8.1 does not: it makes one
/// group whose key is the literal `{cluster: "$cluster", state: "$state"}`, so the census
/// has no states there.
async fn groups_by_compound_keys(server: &TestServer) -> bool {
    let coll = raw(server)
        .await
        .database("probe")
        .collection::<Document>("groups");
    coll.insert_many([doc! { "k": "x" }, doc! { "k": "y" }])
        .await
        .expect("insert");
    let groups: Vec<Document> = coll
        .aggregate([doc! { "$group": { "_id": { "k": "$k" }, "n": { "$sum": 1 } } }])
        .await
        .expect("aggregate")
        .try_collect()
        .await
        .expect("read the groups");
    coll.drop().await.expect("drop the probe");
    groups.len() == 2
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Creates `ids` through the library, 16 at a time, on `placement`.
async fn create_many(poly: &PolyMongo, ids: &[String], placement: Placement) {
    let tenants = poly.tenants().expect("directory");
    futures_util::stream::iter(ids.iter().cloned())
        .map(|id| {
            let tenants = tenants.clone();
            let placement = placement.clone();
            async move {
                tenants
                    .create(&id, CreateTenant::new().placement(placement))
                    .await
                    .unwrap_or_else(|e| panic!("create {id}: {e}"));
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:04}")).collect()
}

/// The ids of an `ls --json` page.
fn page_ids(page: &Value) -> Vec<String> {
    page["tenants"]
        .as_array()
        .unwrap_or_else(|| panic!("no tenants in {page}"))
        .iter()
        .map(|t| t["id"].as_str().expect("an id").to_owned())
        .collect()
}

#[tokio::test]
async fn create_on_an_explicit_cluster_lands_there_and_show_suspend_resume_report_each_state() {
    let f = fleet().await;
    let (code, out, err) = f
        .run(&[
            "--json",
            "tenants",
            "create",
            "acme",
            "--cluster",
            "cell_b",
            "--label",
            "plan=pro",
            "--label",
            "region=eu",
        ])
        .await;
    assert_eq!(code, 0, "{err}\n{out}");
    let created = json(&out);
    assert_eq!(created["id"], "acme");
    assert_eq!(created["cluster"], "cell_b");
    assert_eq!(created["database"], "t_acme");
    assert_eq!(created["state"], "active");
    assert_eq!(created["labels"]["plan"], "pro");
    assert_eq!(created["labels"]["region"], "eu");
    assert_eq!(
        tenant_databases(&f.b).await,
        BTreeSet::from(["t_acme".to_owned()])
    );
    assert!(tenant_databases(&f.a).await.is_empty());
    assert!(tenant_databases(&f.control).await.is_empty());

    let (code, out, err) = f
        .run(&["tenants", "create", "beta", "--cluster", "cell_a"])
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "created tenant beta on cell_a (database t_beta, active)"
    );
    assert_eq!(
        tenant_databases(&f.a).await,
        BTreeSet::from(["t_beta".to_owned()])
    );
    assert_eq!(entry(&f, "beta").await.get_str("cluster"), Ok("cell_a"));
    // Weighted placement (equal weights, one tenant each): the first by name.
    let (code, out, err) = f
        .run(&[
            "--json",
            "tenants",
            "create",
            "gamma",
            "--placement",
            "weighted",
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    let gamma = json(&out);
    assert_eq!(gamma["cluster"], "cell_a", "{gamma}");
    assert!(tenant_databases(&f.a).await.contains("t_gamma"));

    let (code, out, err) = f.run(&["--json", "tenants", "show", "acme"]).await;
    assert_eq!(code, 0, "{err}");
    let shown = json(&out);
    assert_eq!(shown, created, "show gives what create returned");
    let version = shown["version"].as_u64().expect("a version");

    let (code, out, err) = f.run(&["--json", "tenants", "suspend", "acme"]).await;
    assert_eq!(code, 0, "{err}");
    let suspended = json(&out);
    assert_eq!(suspended["state"], "suspended");
    assert_eq!(suspended["version"].as_u64(), Some(version + 1));
    assert_eq!(entry(&f, "acme").await.get_str("state"), Ok("suspended"));
    let (code, out, _) = f.run(&["--json", "tenants", "show", "acme"]).await;
    assert_eq!(code, 0);
    assert_eq!(json(&out)["state"], "suspended");

    // Suspending again is refused for the tenant's state, and changes nothing.
    let (code, out, err) = f.run(&["tenants", "suspend", "acme"]).await;
    assert_eq!(code, 6, "{err}\n{out}");
    assert!(
        err.contains("tenant \"acme\" is suspended: cannot suspend it"),
        "{err}"
    );
    assert_eq!(
        int(entry(&f, "acme").await.get("version")),
        Some(version + 1),
        "the refused suspend changed nothing"
    );

    let (code, out, err) = f.run(&["--json", "tenants", "resume", "acme"]).await;
    assert_eq!(code, 0, "{err}");
    let resumed = json(&out);
    assert_eq!(resumed["state"], "active");
    assert_eq!(resumed["version"].as_u64(), Some(version + 2));
    assert_eq!(entry(&f, "acme").await.get_str("state"), Ok("active"));
    let (code, _, err) = f.run(&["tenants", "resume", "acme"]).await;
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("tenant \"acme\" is active: cannot resume it"),
        "{err}"
    );

    let (code, out, err) = f.run(&["tenants", "show", "acme"]).await;
    assert_eq!(code, 0, "{err}");
    for line in [
        "tenant    acme",
        "database  t_acme",
        "cluster   cell_b",
        "state     active",
        "labels    plan=pro, region=eu",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} in\n{out}");
    }
    let (_, out, _) = f.run(&["--json", "tenants", "show", "beta"]).await;
    let beta = json(&out)["version"].as_u64().expect("a version");
    let (code, out, _) = f.run(&["tenants", "suspend", "beta"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!(
            "suspended tenant beta (now suspended, version {}; on cell_a, database t_beta)",
            beta + 1
        )
    );
}

#[tokio::test]
async fn ls_pages_list_every_tenant_exactly_once_and_all_equals_their_union() {
    let f = fleet().await;
    let poly = f.manager().await;
    let created = ids("c", 250);
    create_many(&poly, &created, Placement::LeastTenants).await;
    let suspended = ["c0007", "c0123", "c0249"];
    for id in suspended {
        poly.tenants().unwrap().suspend(id).await.expect("suspend");
    }
    poly.close_all(std::time::Duration::from_secs(5)).await;

    // Page by page with the cursor each page gives.
    let mut seen: Vec<String> = Vec::new();
    let mut sizes = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut args = vec!["--json", "tenants", "ls", "--limit", "100"];
        if let Some(a) = &after {
            args.extend(["--after", a.as_str()]);
        }
        let (code, out, err) = f.run(&args).await;
        assert_eq!(code, 0, "{err}");
        let page = json(&out);
        assert_eq!(page["invalid"], Value::Array(vec![]), "{page}");
        let ids = page_ids(&page);
        sizes.push(ids.len());
        seen.extend(ids);
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
        assert!(sizes.len() < 10, "paging does not end");
    }
    println!("pages of --limit 100 over 250 tenants: {sizes:?}");
    assert_eq!(sizes, [100, 100, 50]);
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), unique.len(), "a tenant listed twice");
    assert_eq!(unique, created.iter().cloned().collect::<BTreeSet<_>>());
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "pages come in id order"
    );

    // --all, JSON lines: the same tenants, each once, in small reads.
    let (code, out, err) = f
        .run(&["--json", "tenants", "ls", "--all", "--limit", "100"])
        .await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out.lines().map(json).collect();
    let all: Vec<String> = lines
        .iter()
        .map(|t| t["id"].as_str().expect("one tenant per line").to_owned())
        .collect();
    println!("ls --all --json: {} lines", lines.len());
    assert_eq!(all, seen, "--all is the union of the pages");

    // Text: a header, one row per tenant, the hint to the next page.
    let (code, out, err) = f.run(&["tenants", "ls", "--limit", "100"]).await;
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with('c')).collect();
    assert_eq!(rows.len(), 100, "{out}");
    assert!(
        out.lines().next().unwrap_or("").starts_with("tenant"),
        "{out}"
    );
    assert!(
        out.contains("100 tenants on this page; next page: --after c0099"),
        "{out}"
    );
    let (code, out, _) = f.run(&["tenants", "ls", "--all", "--limit", "64"]).await;
    assert_eq!(code, 0);
    assert_eq!(out.lines().filter(|l| l.starts_with('c')).count(), 250);
    assert_eq!(out.lines().last(), Some("250 tenants"), "{out}");

    // Filters: by state, by cluster, as the directory has them.
    let (code, out, err) = f
        .run(&["--json", "tenants", "ls", "--state", "suspended"])
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(page_ids(&json(&out)), suspended);
    let docs = directory(&f).await;
    for cluster in ["cell_a", "cell_b"] {
        let expected: BTreeSet<String> = docs
            .iter()
            .filter(|d| d.get_str("cluster") == Ok(cluster))
            .filter_map(|d| d.get_str("_id").ok().map(str::to_owned))
            .collect();
        let (code, out, err) = f
            .run(&["--json", "tenants", "ls", "--all", "--cluster", cluster])
            .await;
        assert_eq!(code, 0, "{err}");
        let listed: BTreeSet<String> = out
            .lines()
            .map(|l| json(l)["id"].as_str().expect("an id").to_owned())
            .collect();
        println!("{cluster}: {} tenants", listed.len());
        assert!(!expected.is_empty());
        assert_eq!(listed, expected, "{cluster}");
    }
}

#[tokio::test]
async fn a_hand_edited_entry_is_listed_as_a_problem_naming_its_tenant_and_field_and_exits_5() {
    let f = fleet().await;
    let poly = f.manager().await;
    create_many(&poly, &ids("h", 5), Placement::LeastTenants).await;
    poly.close_all(std::time::Duration::from_secs(5)).await;
    let tenants = raw(&f.control)
        .await
        .database(DIRECTORY)
        .collection::<Document>("tenants");
    tenants
        .update_one(
            doc! { "_id": "h0001" },
            doc! { "$set": { "state": "paused" } },
        )
        .await
        .expect("edit by hand");
    tenants
        .update_one(
            doc! { "_id": "h0003" },
            doc! { "$set": { "cluster": "cell_z" } },
        )
        .await
        .expect("edit by hand");

    let (code, out, err) = f.run(&["--json", "tenants", "ls"]).await;
    assert_eq!(code, 5, "{err}\n{out}");
    let page = json(&out);
    assert_eq!(page_ids(&page), ["h0000", "h0002", "h0004"]);
    let problems: BTreeMap<String, String> = page["invalid"]
        .as_array()
        .expect("invalid entries")
        .iter()
        .map(|p| {
            (
                p["tenant"].as_str().expect("a tenant").to_owned(),
                p["field"].as_str().expect("a field").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        BTreeMap::from([
            ("h0001".to_owned(), "state".to_owned()),
            ("h0003".to_owned(), "cluster".to_owned()),
        ])
    );

    let (code, out, _) = f.run(&["tenants", "ls"]).await;
    assert_eq!(code, 5, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("h0001"))
        .unwrap_or_else(|| panic!("h0001 not listed in\n{out}"));
    assert!(
        line.starts_with("invalid: ")
            && line.contains("field \"state\"")
            && line.contains("unknown state \"paused\""),
        "{line}"
    );
    assert!(out.contains("2 invalid directory entries"), "{out}");
    println!("{out}");

    // Across pages of 2, streamed: every entry once, the invalid ones as problems.
    let (code, out, _) = f
        .run(&["--json", "tenants", "ls", "--all", "--limit", "2"])
        .await;
    assert_eq!(code, 5, "{out}");
    let lines: Vec<Value> = out.lines().map(json).collect();
    let valid = lines.iter().filter(|l| l.get("id").is_some()).count();
    let invalid: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["invalid"]["tenant"].as_str())
        .collect();
    assert_eq!((valid, invalid.len()), (3, 2), "{out}");
    assert_eq!(invalid, ["h0001", "h0003"]);

    // show names the field too; the entry cannot be shown as a tenant.
    let (code, out, err) = f.run(&["tenants", "show", "h0003"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("tenant \"h0003\", field \"cluster\"") && err.contains("cell_z"),
        "{err}"
    );
}

#[tokio::test]
async fn clusters_counts_places_and_states_as_the_directory_has_them() {
    let mut f = fleet_with(Some(50), None).await;
    if !groups_by_compound_keys(&f.control).await {
        // nx-27017: the library's census cannot count states there; mongoeco can.
        match fleet_of(
            || ServerOptions::new().kind(ServerKind::MongoEco),
            Some(50),
            None,
        )
        .await
        {
            Ok(other) => f = other,
            Err(e) => {
                polymongo_testkit::record_skip(&format!(
                    "the server does not evaluate compound $group keys (census states), and \
                     mongoeco is unavailable: {e}"
                ));
                return;
            }
        }
    }
    println!("servers: {:?}", f.control.kind());
    let poly = f.manager().await;
    create_many(&poly, &ids("a", 12), Placement::On("cell_a".into())).await;
    create_many(&poly, &ids("b", 7), Placement::On("cell_b".into())).await;
    for id in ["a0000", "a0001", "b0003"] {
        poly.tenants().unwrap().suspend(id).await.expect("suspend");
    }
    poly.close_all(std::time::Duration::from_secs(5)).await;
    // Some data in each tenant's database, so that sizes are not all zero.
    for (server, prefix, n) in [(&f.a, "a", 12), (&f.b, "b", 7)] {
        let client = raw(server).await;
        for id in ids(prefix, n) {
            client
                .database(&format!("t_{id}"))
                .collection::<Document>("notes")
                .insert_many((0..20).map(|i| doc! { "i": i, "text": "x".repeat(100) }))
                .await
                .expect("insert");
        }
    }

    let (code, out, err) = f.run(&["--json", "clusters"]).await;
    assert_eq!(code, 0, "{err}");
    let report = json(&out);
    println!("{report}");
    assert_eq!(report["directory"]["cluster"], "main");
    assert_eq!(report["directory"]["database"], DIRECTORY);
    let clusters = report["clusters"].as_array().expect("clusters");
    let by_name: BTreeMap<&str, &Value> = clusters
        .iter()
        .map(|c| (c["name"].as_str().expect("a name"), c))
        .collect();
    assert_eq!(
        by_name.keys().copied().collect::<Vec<_>>(),
        ["cell_a", "cell_b"]
    );
    // What the directory records, counted raw.
    let mut recorded: BTreeMap<(String, String), u64> = BTreeMap::new();
    for d in directory(&f).await {
        let key = (
            d.get_str("cluster").unwrap().to_owned(),
            d.get_str("state").unwrap().to_owned(),
        );
        *recorded.entry(key).or_default() += 1;
    }
    for (name, places, capacity, active, suspended, server) in [
        ("cell_a", 12, Some(50), 10, 2, &f.a),
        ("cell_b", 7, None, 6, 1, &f.b),
    ] {
        let c = by_name[name];
        assert_eq!(c["places"], places, "{c}");
        assert_eq!(c["capacity"].as_u64(), capacity, "{c}");
        assert_eq!(c["weight"], 1, "{c}");
        assert_eq!(c["states"]["active"], active, "{c}");
        assert_eq!(c["states"]["suspended"], suspended, "{c}");
        for (state, n) in c["states"].as_object().expect("states") {
            assert_eq!(
                recorded.get(&(name.to_owned(), state.clone())).copied(),
                n.as_u64(),
                "{name} {state}"
            );
        }
        // The size is that of the tenant databases on that server.
        let sizes: u64 = raw(server)
            .await
            .list_databases()
            .await
            .unwrap()
            .iter()
            .filter(|d| d.name.starts_with("t_"))
            .map(|d| d.size_on_disk)
            .sum();
        assert!(sizes > 0, "{name}: the server reports no sizes");
        assert_eq!(c["data_bytes"].as_u64(), Some(sizes), "{c}");
    }

    let (code, out, err) = f.run(&["clusters"]).await;
    assert_eq!(code, 0, "{err}");
    println!("{out}");
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not in\n{out}"))
            .to_owned()
    };
    assert!(row("cell_a").contains("12/50"), "{out}");
    assert!(row("cell_a").contains("active 10, suspended 2"), "{out}");
    assert!(row("cell_b").contains("7/unbounded"), "{out}");
    assert!(row("cell_b").contains("active 6, suspended 1"), "{out}");
}

#[tokio::test]
async fn bad_input_exits_with_the_documented_code_naming_what_was_wrong() {
    let f = fleet_with(Some(1), Some(1)).await;
    for (case, args, code, says) in [
        (
            "unknown cluster",
            vec!["tenants", "create", "acme", "--cluster", "cell_z"],
            3,
            "unknown cluster \"cell_z\"",
        ),
        (
            "unknown cluster filter",
            vec!["tenants", "ls", "--cluster", "cell_z"],
            3,
            "unknown cluster \"cell_z\"",
        ),
        (
            "invalid id",
            vec!["tenants", "create", "a/b"],
            3,
            "tenant id \"a/b\" cannot be used",
        ),
        (
            "empty id",
            vec!["tenants", "show", ""],
            3,
            "tenant id \"\" cannot be used",
        ),
        (
            "unknown tenant",
            vec!["tenants", "show", "nobody"],
            3,
            "unknown tenant \"nobody\"",
        ),
        (
            "unknown tenant suspended",
            vec!["tenants", "suspend", "nobody"],
            3,
            "unknown tenant \"nobody\"",
        ),
        (
            "limit out of range",
            vec!["tenants", "ls", "--limit", "0"],
            2,
            "--limit",
        ),
        (
            "unknown state",
            vec!["tenants", "ls", "--state", "paused"],
            2,
            "paused",
        ),
        (
            "label without a value",
            vec!["tenants", "create", "acme", "--label", "plan"],
            2,
            "not KEY=VALUE",
        ),
        (
            "cluster and placement",
            vec![
                "tenants",
                "create",
                "acme",
                "--cluster",
                "cell_a",
                "--placement",
                "weighted",
            ],
            2,
            "cannot be used with",
        ),
    ] {
        let (got, out, err) = f.run(&args).await;
        assert_eq!(got, code, "{case}: {err}\n{out}");
        assert!(err.contains(says), "{case}: {err}");
        println!("{case}: exit {got}: {}", err.lines().next().unwrap_or(""));
    }
    assert!(directory(&f).await.is_empty(), "nothing was recorded");
    assert!(tenant_databases(&f.a).await.is_empty());
    assert!(tenant_databases(&f.b).await.is_empty());

    // Capacity 1 each: two tenants fill the fleet; a third is refused, and so is an id
    // that exists.
    for id in ["one", "two"] {
        let (code, _, err) = f.run(&["tenants", "create", id]).await;
        assert_eq!(code, 0, "{id}: {err}");
    }
    let (code, _, err) = f.run(&["tenants", "create", "three"]).await;
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("every cluster is at its capacity (cell_a, cell_b)"),
        "{err}"
    );
    let (code, _, err) = f.run(&["tenants", "create", "one"]).await;
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("tenant \"one\" exists already (active)"),
        "{err}"
    );
    let docs = directory(&f).await;
    assert_eq!(docs.len(), 2, "{docs:?}");
    assert_eq!(
        tenant_databases(&f.a).await.len() + tenant_databases(&f.b).await.len(),
        2
    );

    // Without a directory: said before connecting, naming the missing key.
    let bare = f.path("bare.toml");
    std::fs::write(&bare, format!("uri = \"{}\"\n", f.control.uri())).unwrap();
    let bare = bare.to_str().unwrap();
    for args in [
        vec!["-c", bare, "tenants", "ls"],
        vec!["-c", bare, "clusters"],
        vec!["-c", bare, "tenants", "create", "acme"],
    ] {
        let (code, out, err) = run(&args).await;
        assert_eq!(code, 3, "{args:?}: {err}\n{out}");
        assert!(
            err.contains("no tenant directory is configured")
                && err.contains("has no [directory] section")
                && err.contains("`directory` key"),
            "{err}"
        );
        assert!(out.is_empty(), "{out}");
    }
    let (code, _, err) = run(&["--uri", f.control.uri(), "clusters"]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no configuration file was given"), "{err}");
}

#[tokio::test]
async fn an_unreachable_directory_cluster_exits_4_naming_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("polymongo.toml");
    let uri = format!(
        "mongodb://ops:S3cretPw@127.0.0.1:{}/?directConnection=true&serverSelectionTimeoutMS=200",
        common::free_port()
    );
    std::fs::write(
        &path,
        format!("uri = \"{uri}\"\n\n[directory]\ncluster = \"main\"\n"),
    )
    .unwrap();
    let path = path.to_str().unwrap();
    for args in [
        vec!["tenants", "ls"],
        vec!["clusters"],
        vec!["tenants", "show", "acme"],
    ] {
        let (code, _, err) = run(&[&["-c", path][..], &args].concat()).await;
        assert_eq!(code, 4, "{args:?}: {err}");
        assert!(
            err.contains("cannot reach the cluster") && err.contains("ops:***@"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("S3cretPw"), "{err}");
    }
}

#[tokio::test]
async fn archive_restore_delete_and_recount_from_the_command_line() {
    let f = fleet().await;
    let (code, _, err) = f
        .run(&["tenants", "create", "acme", "--cluster", "cell_a"])
        .await;
    assert_eq!(code, 0, "{err}");
    let notes = raw(&f.a)
        .await
        .database("t_acme")
        .collection::<Document>("notes");
    notes
        .insert_many((0..300).map(|i| doc! { "_id": i, "text": format!("note {i}") }))
        .await
        .unwrap();
    let folder = f.path("archives");
    let folder = folder.to_str().unwrap();
    let (code, out, err) = f
        .run(&[
            "--json",
            "tenants",
            "archive",
            "acme",
            "--to",
            folder,
            "--settle-ms",
            "50",
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    let archived = json(&out);
    assert_eq!(archived["state"], "archived");
    let path = archived["archive"]["path"].as_str().unwrap().to_owned();
    assert!(path.starts_with(folder), "{path}");
    assert!(std::path::Path::new(&path).is_file());
    assert_eq!(archived["archive"]["verified"], true);
    assert!(
        tenant_databases(&f.a).await.is_empty(),
        "dropped from cell_a"
    );
    // Archiving again changes nothing and says so the same way.
    let (code, again, _) = f
        .run(&["--json", "tenants", "archive", "acme", "--to", folder])
        .await;
    assert_eq!((code, json(&again)), (0, archived.clone()));
    // `show` names the archive.
    let (code, shown, _) = f.run(&["tenants", "show", "acme"]).await;
    assert_eq!(code, 0);
    assert!(
        shown.contains(&format!(
            "archive   {path} (verified; from cell_a, 300 documents"
        )),
        "{shown}"
    );

    let (code, out, err) = f
        .run(&["tenants", "restore", "acme", "--cluster", "cell_b"])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "restored tenant acme onto cell_b (database t_acme, 300 documents, now active)"
        ),
        "{out}"
    );
    let restored = raw(&f.b)
        .await
        .database("t_acme")
        .collection::<Document>("notes");
    assert_eq!(restored.count_documents(doc! {}).await.unwrap(), 300);
    assert_eq!(
        restored.find_one(doc! { "_id": 299 }).await.unwrap(),
        Some(doc! { "_id": 299, "text": "note 299" })
    );

    // Delete: refused (exit 6) unless confirmed with the same id; nothing changes.
    let (code, _, err) = f
        .run(&["tenants", "delete", "acme", "--confirm", "acm"])
        .await;
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("not confirmed"), "{err}");
    assert!(tenant_databases(&f.b).await.contains("t_acme"));
    let (code, out, err) = f
        .run(&["tenants", "delete", "acme", "--confirm", "acme"])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("deleted tenant acme (database t_acme on cell_b); its archive"),
        "{out}"
    );
    assert!(tenant_databases(&f.b).await.is_empty());
    assert!(directory(&f).await.is_empty());
    let (code, _, err) = f
        .run(&["tenants", "delete", "acme", "--confirm", "acme"])
        .await;
    assert_eq!(code, 3, "{err}");
    // Restore without an archive: refused, exit 6.
    f.run(&["tenants", "create", "beta"]).await;
    let (code, _, err) = f.run(&["tenants", "restore", "beta"]).await;
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("no verified archive"), "{err}");
    let (code, out, _) = f.run(&["--json", "tenants", "recount-places"]).await;
    assert_eq!(code, 0);
    let places = json(&out);
    assert_eq!(
        places["cell_a"].as_u64().unwrap() + places["cell_b"].as_u64().unwrap(),
        1,
        "{places}"
    );
}
