//! A notes service whose tenants are routed through polymongo's tenant directory: each
//! tenant's database is on the cluster the directory placed it on, and a tenant suspended in
//! the directory (by any instance, or the command-line tool) is refused with 403.
//!
//! ```sh
//! cargo run -p polymongo-axum --example tenant-directory              # three local test servers
//! MONGODB_URI=mongodb://control:27017 CELL_A_URI=mongodb://a:27017 CELL_B_URI=mongodb://b:27017 \
//!     cargo run -p polymongo-axum --example tenant-directory
//! curl -H 'X-Tenant: acme' -H 'content-type: application/json' -d '{"text":"hi"}' \
//!      http://127.0.0.1:3000/notes
//! curl -H 'X-Tenant: acme' http://127.0.0.1:3000/whoami     # {"tenant":"acme","cluster":"cell_a",...}
//! curl -H 'X-Tenant: initech' http://127.0.0.1:3000/notes   # 403 suspended_tenant
//! curl -H 'X-Tenant: nobody' http://127.0.0.1:3000/notes    # 404 unknown_tenant
//! ```
//!
//! Without `MONGODB_URI`, the test kit starts three local servers (a control cluster for the
//! directory and two cells), which live as long as the service. With it, `CELL_A_URI` and
//! `CELL_B_URI` name the cells (default: the same cluster). It seeds three tenants — `acme` on
//! `cell_a`, `globex` on `cell_b`, `initech` suspended — and serves on `ADDR` (default
//! `127.0.0.1:3000`) until Ctrl-C or SIGTERM.

use std::time::Duration;

use axum::http::{HeaderName, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::TryStreamExt;
use polymongo::mongodb::bson::doc;
use polymongo::tenants::{CreateTenant, Placement, TenantError as DirectoryError};
use polymongo::{ClusterConfig, DirectoryConfig, Model, PolyMongo};
use polymongo_axum::{DbError, Tenancy, Tenant};
use polymongo_testkit::TestServer;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Note {
    text: String,
}

impl Model for Note {
    const COLLECTION: &'static str = "notes";
}

async fn list(notes: Tenant<Note>) -> Result<Json<Vec<Note>>, DbError> {
    let cursor = notes
        .run(|c| c.find(doc! {}).projection(doc! { "_id": 0 }).limit(100))
        .await?;
    Ok(Json(cursor.try_collect().await?))
}

async fn create(notes: Tenant<Note>, Json(note): Json<Note>) -> Result<StatusCode, DbError> {
    notes.run(|c| c.insert_one(&note)).await?;
    Ok(StatusCode::CREATED)
}

/// The directory's entry for the request's tenant, as this instance has it (no round trip).
async fn whoami(notes: Tenant<Note>) -> Json<serde_json::Value> {
    let record = notes.record();
    Json(serde_json::json!({
        "tenant": notes.name(),
        "database": notes.database(),
        "cluster": record.map(|r| r.cluster.as_str()),
        "state": record.map(|r| r.state.as_str()),
    }))
}

/// Creates `id` on `cluster` unless it exists (a second run on the same servers).
async fn seed(poly: &PolyMongo, id: &str, cluster: &str) -> polymongo::Result<()> {
    let created = poly
        .tenants()?
        .create(
            id,
            CreateTenant::new().placement(Placement::On(cluster.into())),
        )
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(polymongo::Error::Tenant(t)) if matches!(*t, DirectoryError::AlreadyExists { .. }) => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

async fn run(
    control: String,
    cell_a: String,
    cell_b: String,
) -> Result<(), Box<dyn std::error::Error>> {
    let poly = PolyMongo::builder()
        .uri(&control)
        .max_pool_size(10)
        .cluster("cell_a", ClusterConfig::new(cell_a))
        .cluster("cell_b", ClusterConfig::new(cell_b))
        .directory(
            DirectoryConfig::on("main")
                .database_prefix("t_")
                .refresh(Duration::from_secs(1)),
        )
        .build()
        .await?;
    seed(&poly, "acme", "cell_a").await?;
    seed(&poly, "globex", "cell_b").await?;
    seed(&poly, "initech", "cell_a").await?;
    // A suspension is seen by every instance within the directory's refresh plus one read.
    let _ = poly.tenants()?.suspend("initech").await;

    let tenancy = Tenancy::builder(poly.clone())
        .header(HeaderName::from_static("x-tenant")) // first: the X-Tenant header
        .path_param("tenant") // else: /t/{tenant}/notes
        .directory() // the directory says where, and whether it is served
        .queue_timeout(Duration::from_millis(500))
        .request_timeout(Duration::from_secs(5))
        .build()?;
    let app = Router::new()
        .route("/notes", get(list).post(create))
        .route("/t/{tenant}/notes", get(list).post(create))
        .route("/whoami", get(whoami))
        .route("/healthz", polymongo_axum::health(poly.clone()))
        .layer(tenancy.layer())
        .with_state(tenancy);
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "listening on http://{} — tenants acme (cell_a), globex (cell_b), initech (suspended)",
        listener.local_addr()?
    );
    let report = polymongo_axum::serve(
        listener,
        app,
        poly,
        polymongo_axum::shutdown_signal(),
        polymongo_axum::ShutdownDeadlines {
            drain: Duration::from_secs(6),
            close: Duration::from_secs(5),
        },
    )
    .await?;
    eprintln!("stopped: {report:?}");
    Ok(())
}

#[tokio::main]
async fn main() {
    // Without a URI, three local test servers live as long as we do.
    let mut servers = Vec::new();
    let (control, cell_a, cell_b) = match std::env::var("MONGODB_URI") {
        Ok(uri) if !uri.is_empty() => {
            let cell = |name: &str| std::env::var(name).unwrap_or_else(|_| uri.clone());
            (uri.clone(), cell("CELL_A_URI"), cell("CELL_B_URI"))
        }
        _ => {
            for _ in 0..3 {
                match TestServer::start().await {
                    Ok(server) => servers.push(server),
                    Err(e) => {
                        eprintln!("cannot start a local test server: {e}");
                        std::process::exit(1);
                    }
                }
            }
            let uris: Vec<String> = servers.iter().map(|s| s.uri().to_owned()).collect();
            eprintln!(
                "no MONGODB_URI: started local test servers (control {}, cell_a {}, cell_b {})",
                uris[0], uris[1], uris[2]
            );
            (uris[0].clone(), uris[1].clone(), uris[2].clone())
        }
    };
    if let Err(e) = run(control, cell_a, cell_b).await {
        eprintln!("tenant-directory: {e}");
        std::process::exit(1);
    }
}
