//! `polymongo stats` without a database: what an operator needs about each cluster the
//! configuration names — the server's own connection figures, its databases by size — read
//! from the servers themselves. (The tool's own pools are a few seconds old and always empty;
//! a running application's live pool figures are its `/metrics`, not this process's.)

use polymongo::mongodb::bson::{doc, Bson, Document};
use polymongo::mongodb::Client;
use polymongo::{Error, PolyMongo};
use serde::Serialize;

/// Databases listed per cluster, largest first.
const LARGEST: usize = 10;

/// One cluster, as its server reports it.
#[derive(Debug, Serialize)]
pub struct ClusterFigures {
    /// The cluster's URI, password hidden.
    pub cluster: String,
    /// Databases of the configuration routed there (`(main)` for the main cluster).
    pub routed: Vec<String>,
    /// The server's process and version (`mongod 7.0.12`).
    pub server: String,
    /// Connections the server has open now (this tool's included).
    pub connections_current: i64,
    /// Connections the server could still accept.
    pub connections_available: i64,
    /// Connections the server accepted since it started.
    pub connections_total_created: i64,
    /// Databases on the cluster.
    pub databases: usize,
    /// Their total size on disk, in bytes.
    pub size_on_disk: i64,
    /// The largest, with their sizes in bytes.
    pub largest: Vec<(String, i64)>,
}

/// Every cluster of the configuration: the main one, then each other `uri` of a database
/// section, once each.
pub async fn overview(poly: &PolyMongo) -> Result<Vec<ClusterFigures>, Error> {
    let options = poly.options();
    let main_label = polymongo::redact_uri(&options.uri);
    let mut clusters: Vec<(String, String, Vec<String>)> = vec![(
        main_label,
        poly.default_db_name().to_owned(),
        vec!["(main)".to_owned()],
    )];
    for (name, config) in &options.databases {
        let Some(uri) = &config.uri else { continue };
        let label = polymongo::redact_uri(uri);
        match clusters.iter_mut().find(|(l, _, _)| *l == label) {
            Some((_, _, routed)) => routed.push(name.clone()),
            None => clusters.push((label, name.clone(), vec![name.clone()])),
        }
    }
    let mut figures = Vec::with_capacity(clusters.len());
    for (cluster, database, routed) in clusters {
        let client = poly.client_for(&database)?;
        figures.push(figures_of(&client, cluster, routed).await?);
    }
    Ok(figures)
}

async fn figures_of(
    client: &Client,
    cluster: String,
    routed: Vec<String>,
) -> Result<ClusterFigures, Error> {
    let status = client
        .database("admin")
        .run_command(doc! { "serverStatus": 1 })
        .await?;
    let connections = status.get_document("connections").ok();
    let count = |key| connections.map_or(0, |c| number(c, key));
    let mut databases: Vec<(String, i64)> = client
        .list_databases()
        .await?
        .into_iter()
        .map(|d| (d.name, i64::try_from(d.size_on_disk).unwrap_or(i64::MAX)))
        .collect();
    databases.sort_by_key(|d| std::cmp::Reverse(d.1));
    Ok(ClusterFigures {
        cluster,
        routed,
        server: format!(
            "{} {}",
            status.get_str("process").unwrap_or("server"),
            status.get_str("version").unwrap_or("(version unknown)")
        ),
        connections_current: count("current"),
        connections_available: count("available"),
        connections_total_created: count("totalCreated"),
        databases: databases.len(),
        // A server's figures are not trusted to add up within an i64.
        size_on_disk: databases
            .iter()
            .fold(0i64, |sum, d| sum.saturating_add(d.1)),
        largest: databases.into_iter().take(LARGEST).collect(),
    })
}

/// A number the server may send as Int32, Int64 or Double.
pub fn number(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(f)) => *f as i64,
        _ => 0,
    }
}
