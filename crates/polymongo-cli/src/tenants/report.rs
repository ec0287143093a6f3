//! What the tenant commands print: a tenant, a row of `ls`, an invalid entry, the census.

use polymongo::mongodb::bson::{Bson, DateTime, Document};
use polymongo::tenants::{ClusterCensus, DirectoryConfig, TenantError, TenantInfo};
use serde::Serialize;

use crate::commands::human_bytes;
use crate::out::{self, Stop};

/// An invalid directory entry, as `--json` gives it: the tenant and field when the library
/// names them, and the whole message.
#[derive(Debug, Serialize)]
pub struct Problem {
    tenant: Option<String>,
    field: Option<String>,
    problem: Option<String>,
    message: String,
}

impl Problem {
    pub fn of(e: &TenantError) -> Self {
        let message = e.to_string();
        match e {
            TenantError::InvalidRecord {
                tenant,
                field,
                problem,
            } => Problem {
                tenant: Some(tenant.clone()),
                field: Some(field.clone()),
                problem: Some(problem.clone()),
                message,
            },
            _ => Problem {
                tenant: None,
                field: None,
                problem: None,
                message,
            },
        }
    }
}

/// An invalid entry in the text of `ls`.
pub fn problem_line(e: &TenantError) -> Result<(), Stop> {
    out::line(format_args!("invalid: {e}"))
}

/// `key=value, …`; a value that is not a string in relaxed Extended JSON.
fn labels(d: &Document) -> String {
    d.iter()
        .map(|(k, v)| match v {
            Bson::String(s) => format!("{k}={s}"),
            other => format!("{k}={}", other.clone().into_relaxed_extjson()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn time(ms: i64) -> String {
    if ms == 0 {
        return "-".to_owned();
    }
    let t = DateTime::from_millis(ms);
    t.try_to_rfc3339_string().unwrap_or_else(|_| ms.to_string())
}

/// Column widths of the `ls` table; they only grow, so the pages of `--all` line up as far
/// as their ids allow.
#[derive(Debug)]
pub struct Columns {
    id: usize,
    cluster: usize,
    state: usize,
    database: usize,
}

impl Default for Columns {
    fn default() -> Self {
        Self {
            id: "tenant".len(),
            cluster: "cluster".len(),
            state: "suspended".len(),
            database: "database".len(),
        }
    }
}

impl Columns {
    pub fn fit(&mut self, tenants: &[TenantInfo]) {
        for t in tenants {
            self.id = self.id.max(t.id.len());
            self.cluster = self.cluster.max(t.cluster.len());
            self.state = self.state.max(t.state.as_str().len());
            self.database = self.database.max(t.database.len());
        }
    }

    pub fn header(&self) -> Result<(), Stop> {
        self.line("tenant", "cluster", "state", "database", "labels")
    }

    pub fn row(&self, t: &TenantInfo) -> Result<(), Stop> {
        self.line(
            &t.id,
            &t.cluster,
            t.state.as_str(),
            &t.database,
            &labels(&t.labels),
        )
    }

    fn line(
        &self,
        id: &str,
        cluster: &str,
        state: &str,
        database: &str,
        labels: &str,
    ) -> Result<(), Stop> {
        let text = format!(
            "{id:iw$}  {cluster:cw$}  {state:sw$}  {database:dw$}  {labels}",
            iw = self.id,
            cw = self.cluster,
            sw = self.state,
            dw = self.database,
        );
        out::line(text.trim_end())
    }
}

/// `tenants show`: the directory's record.
pub fn tenant(t: &TenantInfo, json: bool) -> Result<(), Stop> {
    if json {
        return out::json(t);
    }
    out::line(format_args!("tenant    {}", t.id))?;
    out::line(format_args!("database  {}", t.database))?;
    out::line(format_args!("cluster   {}", t.cluster))?;
    out::line(format_args!("state     {}", t.state.as_str()))?;
    out::line(format_args!("labels    {}", labels(&t.labels)))?;
    out::line(format_args!("version   {} (change {})", t.version, t.seq))?;
    out::line(format_args!("created   {}", time(t.created_at_ms)))?;
    out::line(format_args!("updated   {}", time(t.updated_at_ms)))?;
    if let Some(a) = &t.archive {
        out::line(format_args!(
            "archive   {} ({}; from {}, {} documents, {} bytes)",
            a.path,
            if a.verified {
                "verified"
            } else {
                "not verified"
            },
            a.from_cluster,
            a.documents(),
            a.file_bytes
        ))?;
    }
    Ok(())
}

/// `polymongo clusters --json`.
#[derive(Serialize)]
struct CensusJson<'a> {
    directory: DirectoryJson<'a>,
    clusters: &'a [ClusterCensus],
}

#[derive(Serialize)]
struct DirectoryJson<'a> {
    cluster: &'a str,
    database: &'a str,
    database_prefix: &'a str,
}

/// `polymongo clusters`: per cluster, places taken of its capacity, tenants by state, the
/// size of its tenants' databases.
pub fn census(list: &[ClusterCensus], directory: &DirectoryConfig, json: bool) -> Result<(), Stop> {
    if json {
        return out::json(&CensusJson {
            directory: DirectoryJson {
                cluster: &directory.cluster,
                database: &directory.database,
                database_prefix: &directory.database_prefix,
            },
            clusters: list,
        });
    }
    out::line(format_args!(
        "directory: database {} on cluster {}",
        directory.database, directory.cluster
    ))?;
    let rows: Vec<[String; 5]> = list
        .iter()
        .map(|c| {
            let places = match c.capacity {
                Some(cap) => format!("{}/{cap}", c.places),
                None => format!("{}/unbounded", c.places),
            };
            let states = if c.states.is_empty() {
                "-".to_owned()
            } else {
                c.states
                    .iter()
                    .map(|(state, n)| format!("{state} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let data = c.data_bytes.map_or_else(
                || "unknown".to_owned(),
                |b| human_bytes(i64::try_from(b).unwrap_or(i64::MAX)),
            );
            [c.name.clone(), places, c.weight.to_string(), data, states]
        })
        .collect();
    let head = ["cluster", "places", "weight", "data", "tenants by state"];
    let mut widths = head.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let text = format!(
            "{:w0$}  {:>w1$}  {:>w2$}  {:>w3$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        );
        out::line(text.trim_end())
    };
    line(head)?;
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3], &row[4]])?;
    }
    Ok(())
}

/// The place counts after `recount-places`.
pub fn places(places: &std::collections::BTreeMap<String, u64>, json: bool) -> Result<(), Stop> {
    if json {
        return out::json(places);
    }
    for (cluster, n) in places {
        out::line(format_args!("{cluster}: {n} places"))?;
    }
    Ok(())
}
