//! Reading the directory in bulk: pages of tenants for large fleets, and each cluster's
//! census (places, tenants by state, data size).

use std::collections::BTreeMap;

use mongodb::bson::{doc, Bson, Document};
use serde::Serialize;

use super::{TenantError, TenantInfo, TenantState, Tenants};
use crate::floor::error::{Error, Result};

/// The most tenants one [`Tenants::list`] page holds.
pub const MAX_PAGE: u32 = 10_000;

/// Which tenants [`Tenants::list`] returns, and how many at a time.
#[derive(Debug, Clone)]
pub struct ListTenants {
    after: Option<String>,
    limit: u32,
    state: Option<TenantState>,
    cluster: Option<String>,
}

impl Default for ListTenants {
    fn default() -> Self {
        Self {
            after: None,
            limit: 100,
            state: None,
            cluster: None,
        }
    }
}

impl ListTenants {
    /// The first 100 tenants by id, any state, any cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tenants whose id sorts after `id` (the previous page's [`TenantPage::next`]).
    pub fn after(mut self, id: impl Into<String>) -> Self {
        self.after = Some(id.into());
        self
    }

    /// At most `n` per page, 1 to [`MAX_PAGE`] (default 100).
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = n;
        self
    }

    /// Only tenants in `state`.
    pub fn state(mut self, state: TenantState) -> Self {
        self.state = Some(state);
        self
    }

    /// Only tenants on `cluster`.
    pub fn cluster(mut self, cluster: impl Into<String>) -> Self {
        self.cluster = Some(cluster.into());
        self
    }
}

/// One page of [`Tenants::list`].
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct TenantPage {
    /// The tenants, by id.
    pub tenants: Vec<TenantInfo>,
    /// Entries of this page that are not what the library writes (edited by hand?), each
    /// naming its tenant and field; listed, never skipped silently. The first page also
    /// lists entries whose `_id` is not a string (up to `limit` of them).
    #[serde(serialize_with = "errors_as_text")]
    pub invalid: Vec<TenantError>,
    /// The id to pass to [`ListTenants::after`] for the next page; `None` on the last one.
    pub next: Option<String>,
}

fn errors_as_text<S: serde::Serializer>(
    errors: &[TenantError],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(errors.iter().map(ToString::to_string))
}

/// One cluster as the directory counts it: [`Tenants::census`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ClusterCensus {
    /// The cluster's name.
    pub name: String,
    /// Places taken (counted against `capacity`).
    pub places: u64,
    /// Its capacity, if bounded.
    pub capacity: Option<u64>,
    /// Its placement weight.
    pub weight: u32,
    /// Tenants recorded on it, by state (`archived` ones name the cluster they were on).
    pub states: BTreeMap<String, u64>,
    /// The size on disk of its tenants' databases, as `listDatabases` reports it; `None`
    /// when the server reports no sizes.
    pub data_bytes: Option<u64>,
}

impl Tenants {
    /// One page of the directory's tenants, by id: one indexed read. Walk a fleet of any
    /// size page by page with [`TenantPage::next`].
    ///
    /// # Errors
    /// [`Error::Config`] (field `limit`) for a limit of 0 or above [`MAX_PAGE`],
    /// [`TenantError::UnknownCluster`] for a cluster filter that names none, driver errors.
    pub async fn list(&self, options: ListTenants) -> Result<TenantPage> {
        if options.limit == 0 || options.limit > MAX_PAGE {
            return Err(Error::Config {
                field: "limit",
                message: format!("{} is not between 1 and {MAX_PAGE}", options.limit),
            });
        }
        let mut filter = Document::new();
        if let Some(state) = options.state {
            filter.insert("state", state.as_str());
        }
        if let Some(cluster) = &options.cluster {
            self.dir.pool_of(cluster)?;
            filter.insert("cluster", cluster.as_str());
        }
        let store = self.dir.store(&self.registry).await?;
        let docs = store
            .page(options.after.as_deref(), options.limit, filter)
            .await?;
        let full = docs.len() == options.limit as usize;
        let next = if full {
            docs.last().and_then(|d| match d.get("_id") {
                Some(Bson::String(s)) => Some(s.clone()),
                _ => None,
            })
        } else {
            None
        };
        let mut page = TenantPage {
            tenants: Vec::with_capacity(docs.len()),
            invalid: Vec::new(),
            next,
        };
        for d in &docs {
            match self.dir.decode(d) {
                Ok(info) => page.tenants.push(info),
                Err(e) => page.invalid.push(e),
            }
        }
        // Entries whose `_id` is not a string have no place in the id order: the first page
        // lists them (up to a page's worth) as invalid, so they are never skipped silently.
        if options.after.is_none() {
            for d in store.odd_ids(options.limit).await? {
                if let Err(e) = self.dir.decode(&d) {
                    page.invalid.push(e);
                }
            }
        }
        Ok(page)
    }

    /// Every cluster the directory knows (the placeable ones, and any other a tenant is
    /// recorded on): places taken, capacity, tenants by state, and the size of its tenants'
    /// databases. One aggregation on the directory and one `listDatabases` per cluster.
    ///
    /// Data size counts the databases on the cluster whose names start with the directory's
    /// `database_prefix` (with an empty prefix, every database but `admin`, `local`,
    /// `config` and the directory's own).
    ///
    /// # Errors
    /// Driver errors.
    pub async fn census(&self) -> Result<Vec<ClusterCensus>> {
        let store = self.dir.store(&self.registry).await?;
        let places = store.counts().await?;
        let states = store
            .states(&TenantState::ALL.map(TenantState::as_str))
            .await?;
        let mut names: Vec<String> = self
            .dir
            .placeable()
            .into_iter()
            .map(str::to_owned)
            .collect();
        for (cluster, _, _) in &states {
            if !names.contains(cluster) && self.dir.clusters.contains_key(cluster) {
                names.push(cluster.clone());
            }
        }
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let Some(c) = self.dir.clusters.get(&name) else {
                continue;
            };
            let by_state = states
                .iter()
                .filter(|(cluster, _, _)| *cluster == name)
                .map(|(_, state, n)| (state.clone(), *n))
                .collect();
            out.push(ClusterCensus {
                places: places.get(&name).copied().unwrap_or(0),
                capacity: c.capacity,
                weight: c.weight,
                states: by_state,
                data_bytes: self.data_bytes(&name).await?,
                name,
            });
        }
        Ok(out)
    }

    pub(super) async fn data_bytes(&self, cluster: &str) -> Result<Option<u64>> {
        let pool = self.dir.pool_of(cluster)?;
        let (client, _) = self.registry.routes().client_of(pool)?;
        let answer = client
            .database("admin")
            .run_command(doc! { "listDatabases": 1 })
            .await?;
        let prefix = &self.dir.config.database_prefix;
        let mut total = None;
        for d in answer.get_array("databases").into_iter().flatten() {
            let Some(d) = d.as_document() else { continue };
            let Ok(name) = d.get_str("name") else {
                continue;
            };
            let ours = if prefix.is_empty() {
                !matches!(name, "admin" | "local" | "config") && name != self.dir.config.database
            } else {
                name.starts_with(prefix.as_str())
            };
            if !ours {
                continue;
            }
            let size = match d.get("sizeOnDisk") {
                Some(Bson::Int64(n)) => u64::try_from(*n).ok(),
                Some(Bson::Int32(n)) => u64::try_from(*n).ok(),
                Some(Bson::Double(f)) if *f >= 0.0 => Some(*f as u64),
                _ => None,
            };
            if let Some(size) = size {
                total = Some(total.unwrap_or(0) + size);
            }
        }
        Ok(total)
    }
}
