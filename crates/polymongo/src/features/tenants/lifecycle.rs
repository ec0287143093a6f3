//! A tenant's life after creation: archive (fence, export, verify, drop), restore (place,
//! import, verify, serve), delete (fence, drop, forget), and the repair of place counts.
//! Every step is recorded in the directory before the next begins, so any of them cut
//! anywhere (a crash, a dropped future) is finished by calling it again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mongodb::bson::doc;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::{now_ms, Placement, TenantError, TenantInfo, TenantState, Tenants};
use crate::features::bulk::{
    drop_on, export_on, import_on, verify_stream, DumpSummary, ExportOptions, ImportOptions,
    Progress, ProgressFn,
};
use crate::floor::error::{Error, Result};
use crate::registry::DbLease;

/// Options of [`Tenants::archive`].
#[derive(Clone)]
pub struct ArchiveTenant {
    folder: PathBuf,
    settle: Option<Duration>,
    progress: Option<ProgressFn>,
}

impl std::fmt::Debug for ArchiveTenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveTenant")
            .field("folder", &self.folder)
            .field("settle", &self.settle)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl ArchiveTenant {
    /// Archive files go to `folder` (created if missing), one gzip dump per archive, named
    /// `<tenant>.<start ms>.dump.gz`.
    pub fn to_folder(folder: impl Into<PathBuf>) -> Self {
        Self {
            folder: folder.into(),
            settle: None,
            progress: None,
        }
    }

    /// How long to wait after fencing the tenant before reading it, so that no instance
    /// still routes it (default: the directory's `refresh` plus one second, its bound).
    pub fn settle(mut self, wait: Duration) -> Self {
        self.settle = Some(wait);
        self
    }

    /// Called as the export goes (documents and bytes written so far).
    pub fn progress(mut self, f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(std::sync::Arc::new(f));
        self
    }
}

/// Options of [`Tenants::restore`].
#[derive(Clone, Default)]
pub struct RestoreTenant {
    placement: Placement,
    progress: Option<ProgressFn>,
}

impl std::fmt::Debug for RestoreTenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreTenant")
            .field("placement", &self.placement)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl RestoreTenant {
    /// Default: placed by [`Placement::LeastTenants`].
    pub fn new() -> Self {
        Self::default()
    }

    /// How the cluster it is restored to is chosen (capacities respected).
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Called as the import goes (documents written so far).
    pub fn progress(mut self, f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(std::sync::Arc::new(f));
        self
    }
}

/// Options of [`Tenants::delete`]: the confirmation, which must name the tenant again.
#[derive(Debug, Clone)]
pub struct DeleteTenant {
    confirm: String,
    settle: Option<Duration>,
}

impl DeleteTenant {
    /// Confirms the delete of tenant `id` (a delete whose confirmation names another id is
    /// refused).
    pub fn confirming(id: impl Into<String>) -> Self {
        Self {
            confirm: id.into(),
            settle: None,
        }
    }

    /// As [`ArchiveTenant::settle`].
    pub fn settle(mut self, wait: Duration) -> Self {
        self.settle = Some(wait);
        self
    }
}

/// What [`Tenants::delete`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", content = "tenant", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Deleted {
    /// The tenant was deleted (its database dropped unless it was archived); its entry as
    /// it was last. An archive file is kept: its path is in [`TenantInfo::archive`].
    Removed(Box<TenantInfo>),
    /// The directory has no such tenant (deleted already?).
    NotFound,
}

impl Tenants {
    /// Archives tenant `id`: fences it (state `archiving`: not served; every instance
    /// refuses it within the directory's bound, which the archive waits for), exports its
    /// database to a gzip dump in the folder, reads the file back whole and checks it
    /// against the database (every record sound, documents per collection equal), records
    /// the verified archive (path, SHA-256, size, counts), drops the database, and marks it
    /// `archived`, giving its cluster place back.
    ///
    /// Idempotent and resumable: an `archiving` tenant (a crash, a dropped future) is
    /// finished from its last recorded step — a verified archive is never written again;
    /// an unverified one is exported again, to a new file in the folder given now (the
    /// unverified file is removed); an `archived` tenant is returned as it is.
    /// Operations another instance started before the fence finish on their own; the
    /// settle wait is for them and for the instances' caches.
    ///
    /// # Errors
    /// [`TenantError::WrongState`] from `creating`, `restoring` or `deleting`,
    /// [`TenantError::ArchiveMismatch`] when the file read back differs from the database
    /// (nothing dropped; the tenant stays `archiving`; archive again to retry),
    /// [`TenantError::Unknown`], [`Error::Io`] for the file, driver errors.
    pub async fn archive(&self, id: &str, options: ArchiveTenant) -> Result<TenantInfo> {
        let store = self.dir.store(&self.registry).await?;
        let mut info = self.get(id).await?;
        let resumable = |i: &TenantInfo| {
            i.state == TenantState::Archiving && i.archive.as_ref().is_some_and(|a| a.verified)
        };
        match info.state {
            TenantState::Archived => return Ok(info),
            _ if resumable(&info) => {}
            // Not yet verified (a first archive, or one cut before its file was checked):
            // a new file in the folder asked now.
            TenantState::Active | TenantState::Suspended | TenantState::Archiving => {
                if let Some(old) = info.archive.as_ref().filter(|a| !a.verified) {
                    // Never trusted, never the only copy (the database was not dropped).
                    let _ = tokio::fs::remove_file(&old.path).await;
                    let _ = tokio::fs::remove_file(format!("{}.partial", old.path)).await;
                }
                let started = now_ms();
                let file = options
                    .folder
                    .join(format!("{}.{started}.dump.gz", info.id));
                let record = super::ArchiveRecord {
                    path: file.to_string_lossy().into_owned(),
                    verified: false,
                    sha256: String::new(),
                    file_bytes: 0,
                    collections: Vec::new(),
                    from_cluster: info.cluster.clone(),
                    started_at_ms: started,
                };
                let fields = doc! { "state": "archiving", "archive": record.to_document() };
                let from = ["active", "suspended", "archiving"];
                info = self.step(id, &from, fields, "archive").await?;
            }
            _ => return Err(self.wrong_state(&info, "archive")),
        }
        let record = info
            .archive
            .clone()
            .ok_or_else(|| TenantError::InvalidRecord {
                tenant: id.to_owned(),
                field: "archive".into(),
                problem: "missing on an archiving tenant".into(),
            })?;
        let lease = self.lease_of(&info)?;
        if !record.verified {
            self.settle(&info, options.settle).await;
            let summary = write_archive(&lease, &info, &record, options.progress.clone()).await?;
            check_against_database(&lease, &info, &record.path, &summary).await?;
            let verified = super::ArchiveRecord {
                verified: true,
                sha256: summary.sha256.clone(),
                file_bytes: summary.file_bytes,
                collections: counted(&summary),
                ..record
            };
            info = self
                .step(
                    id,
                    &["archiving"],
                    doc! { "archive": verified.to_document() },
                    "archive",
                )
                .await?;
        }
        drop_on(&lease).await?;
        drop(lease);
        self.registry.forget(&info.database);
        // The last two writes go together, whatever becomes of the caller: a cut between
        // them would leave the place taken (see `recount_places`).
        let this = self.clone();
        let (id, cluster) = (id.to_owned(), info.cluster.clone());
        detached(async move {
            let done = this
                .step(&id, &["archiving"], doc! { "state": "archived" }, "archive")
                .await?;
            store.release(&cluster).await?;
            tracing::info!(tenant = %id, cluster = %cluster, "tenant archived");
            Ok(done)
        })
        .await
    }

    /// Restores an archived tenant: checks its archive file against the record (SHA-256),
    /// places it on a cluster by `options`' placement (capacities respected), imports the
    /// archive into a fresh database there, checks every collection's document count
    /// against the archive's, and makes it `active`.
    ///
    /// Idempotent and resumable: a `restoring` tenant is finished on the cluster it was
    /// placed on (its database dropped and imported again); an `active` tenant that has an
    /// archive is returned as it is.
    ///
    /// # Errors
    /// [`TenantError::NoArchive`] without a verified archive, [`TenantError::ArchiveMismatch`]
    /// for a file that is missing, changed or imports differently (the tenant stays
    /// `restoring` until restored again), [`TenantError::FleetFull`],
    /// [`TenantError::UnknownCluster`], [`TenantError::WrongState`], [`Error::Import`],
    /// [`Error::Io`], driver errors.
    pub async fn restore(&self, id: &str, options: RestoreTenant) -> Result<TenantInfo> {
        let store = self.dir.store(&self.registry).await?;
        let mut info = self.get(id).await?;
        let record = match &info.archive {
            Some(a) if a.verified => a.clone(),
            _ => {
                return Err(TenantError::NoArchive {
                    tenant: id.to_owned(),
                }
                .into())
            }
        };
        match info.state {
            TenantState::Active => return Ok(info),
            TenantState::Restoring => {}
            TenantState::Archived => {
                check_file(&info, &record).await?;
                let cluster = self.take_place(&store, &options.placement).await?;
                let placed = self
                    .step(
                        id,
                        &["archived"],
                        doc! { "state": "restoring", "cluster": &cluster },
                        "restore",
                    )
                    .await;
                match placed {
                    Ok(placed) => info = placed,
                    Err(e) => {
                        store.release(&cluster).await?;
                        return Err(e);
                    }
                }
            }
            _ => return Err(self.wrong_state(&info, "restore")),
        }
        let lease = self.lease_of(&info)?;
        let file = tokio::fs::File::open(&record.path)
            .await
            .map_err(|e| mismatch(&info, &record.path, format!("cannot open it: {e}")))?;
        let mut import = ImportOptions::default().drop_target_first(true);
        import.progress = options.progress.clone();
        import_on(&lease, &info.database, file, import).await?;
        for (collection, expected) in &record.collections {
            let found = lease
                .entry
                .database
                .collection::<mongodb::bson::Document>(collection)
                .count_documents(doc! {})
                .await
                .map_err(|e| Error::from_driver(e, lease.entry.pool.label()))?;
            if found != *expected {
                return Err(mismatch(
                    &info,
                    &record.path,
                    format!("{collection}: {found} documents restored, the archive has {expected}"),
                ));
            }
        }
        drop(lease);
        let done = self
            .step(id, &["restoring"], doc! { "state": "active" }, "restore")
            .await?;
        self.registry.forget(&done.database);
        tracing::info!(tenant = %id, cluster = %done.cluster, "tenant restored");
        Ok(done)
    }

    /// Deletes tenant `id` for good: `options` must confirm it by naming it again. Fences it (state
    /// `deleting`; the settle wait as for [`archive`](Self::archive)), drops its database
    /// (an archived tenant has none), removes its entry and gives its place back. Its
    /// archive file, if any, is kept (its path is in the returned entry).
    ///
    /// Idempotent and resumable: a `deleting` tenant is finished; an unknown one is
    /// [`Deleted::NotFound`].
    ///
    /// # Errors
    /// [`TenantError::NotConfirmed`], [`TenantError::InvalidId`], driver errors.
    pub async fn delete(&self, id: &str, options: DeleteTenant) -> Result<Deleted> {
        if options.confirm != id {
            return Err(TenantError::NotConfirmed {
                tenant: id.to_owned(),
                given: options.confirm.clone(),
            }
            .into());
        }
        let store = self.dir.store(&self.registry).await?;
        let mut info = match self.get(id).await {
            Ok(info) => info,
            Err(Error::Tenant(t)) if matches!(*t, TenantError::Unknown { .. }) => {
                return Ok(Deleted::NotFound)
            }
            Err(e) => return Err(e),
        };
        if info.state == TenantState::Archived {
            return Ok(match store.remove(id, "archived").await? {
                Some(d) => Deleted::Removed(Box::new(self.dir.decode(&d)?)),
                // Changed meanwhile (restored, deleted): say what it is now.
                None => return Box::pin(self.delete(id, options)).await,
            });
        }
        if info.state != TenantState::Deleting {
            let from = ["creating", "active", "suspended", "archiving", "restoring"];
            info = self
                .step(id, &from, doc! { "state": "deleting" }, "delete")
                .await?;
        }
        self.settle(&info, options.settle).await;
        let lease = self.lease_of(&info)?;
        drop_on(&lease).await?;
        drop(lease);
        self.registry.forget(&info.database);
        let this = self.clone();
        let (id, cluster) = (id.to_owned(), info.cluster.clone());
        detached(async move {
            match store.remove(&id, "deleting").await? {
                Some(d) => {
                    store.release(&cluster).await?;
                    tracing::info!(tenant = %id, cluster = %cluster, "tenant deleted");
                    Ok(Deleted::Removed(Box::new(this.dir.decode(&d)?)))
                }
                None => Ok(Deleted::NotFound),
            }
        })
        .await
    }

    /// Sets every cluster's place count to the tenants the directory records on it in a
    /// state that holds a place (all but `archived`), and returns the counts. Repairs the
    /// places a crash leaked between taking a place and recording the tenant (or between
    /// archiving it and giving the place back): such a leak only ever makes a cluster look
    /// fuller than it is. Run it while no create, archive, restore or delete is under way:
    /// one that lands between its count and its write is not counted.
    ///
    /// # Errors
    /// Driver errors.
    pub async fn recount_places(&self) -> Result<BTreeMap<String, u64>> {
        let store = self.dir.store(&self.registry).await?;
        let mut places: BTreeMap<String, u64> =
            self.dir.clusters.keys().map(|c| (c.clone(), 0)).collect();
        for (cluster, state, n) in store
            .states(&TenantState::ALL.map(TenantState::as_str))
            .await?
        {
            let holds = TenantState::parse(&state).is_none_or(TenantState::holds_place);
            if holds {
                *places.entry(cluster).or_insert(0) += n;
            }
        }
        store.set_places(&places).await?;
        Ok(places)
    }

    /// Records one change of tenant `id` (from one of `from`), with its version and a new
    /// sequence; refused with [`TenantError::WrongState`] when it is elsewhere.
    async fn step(
        &self,
        id: &str,
        from: &[&str],
        fields: mongodb::bson::Document,
        wanted: &'static str,
    ) -> Result<TenantInfo> {
        let store = self.dir.store(&self.registry).await?;
        let seq = store.next_seq().await?;
        match store.transition(id, from, fields, seq, now_ms()).await? {
            Some(d) => {
                let info = self.dir.decode(&d)?;
                self.registry.forget(&info.database);
                Ok(info)
            }
            None => {
                let now = self.get(id).await?;
                Err(self.wrong_state(&now, wanted))
            }
        }
    }

    fn wrong_state(&self, info: &TenantInfo, wanted: &'static str) -> Error {
        TenantError::WrongState {
            tenant: info.id.clone(),
            state: info.state.as_str().to_owned(),
            wanted,
        }
        .into()
    }

    /// The tenant's database on its cluster, for the lifecycle's own use (not cached as a
    /// route: the state is not `active`).
    fn lease_of(&self, info: &TenantInfo) -> Result<DbLease> {
        let pool = self.dir.pool_of(&info.cluster)?;
        let tag: std::sync::Arc<dyn std::any::Any + Send + Sync> = self.dir.routed(info.clone());
        self.registry.place(&info.database, pool, tag)
    }

    /// Waits until `wait` (default: the directory's bound) has passed since the fence was
    /// recorded: by then no instance routes the tenant on an older entry.
    async fn settle(&self, fenced: &TenantInfo, wait: Option<Duration>) {
        let wait = wait.unwrap_or(self.dir.config.refresh + Duration::from_secs(1));
        let since = u64::try_from(now_ms().saturating_sub(fenced.updated_at_ms)).unwrap_or(0);
        if let Some(left) = wait.checked_sub(Duration::from_millis(since)) {
            tokio::time::sleep(left).await;
        }
    }
}

/// Runs `work` as a task of its own: dropping the caller's future does not cut it.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    match tokio::spawn(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Error::Closed),
    }
}

fn mismatch(info: &TenantInfo, path: &str, problem: String) -> Error {
    TenantError::ArchiveMismatch {
        tenant: info.id.clone(),
        path: path.to_owned(),
        problem,
    }
    .into()
}

/// Collections with documents (views have none), with their counts.
fn counted(summary: &DumpSummary) -> Vec<(String, u64)> {
    summary
        .collections
        .iter()
        .filter(|c| c.kind != "view")
        .map(|c| (c.name.clone(), c.documents))
        .collect()
}

/// Exports the database to `<path>.partial`, makes it durable, renames it to `path`, and
/// reads it back whole.
async fn write_archive(
    lease: &DbLease,
    info: &TenantInfo,
    record: &super::ArchiveRecord,
    progress: Option<ProgressFn>,
) -> Result<DumpSummary> {
    let path = Path::new(&record.path);
    let io = |during: &'static str| {
        move |e: std::io::Error| Error::Io {
            during,
            source: std::sync::Arc::new(e),
        }
    };
    if let Some(folder) = path.parent() {
        tokio::fs::create_dir_all(folder)
            .await
            .map_err(io("creating the archive folder"))?;
    }
    let partial = PathBuf::from(format!("{}.partial", record.path));
    let file = tokio::fs::File::create(&partial)
        .await
        .map_err(io("creating the archive file"))?;
    let mut out = tokio::io::BufWriter::new(file);
    let mut export = ExportOptions::default().gzip(true);
    export.progress = progress;
    let report = export_on(lease, &info.database, &mut out, export).await?;
    out.flush().await.map_err(io("writing the archive file"))?;
    out.get_mut()
        .sync_all()
        .await
        .map_err(io("writing the archive file"))?;
    drop(out);
    tokio::fs::rename(&partial, path)
        .await
        .map_err(io("naming the archive file"))?;
    let summary = read_back(info, &record.path).await?;
    if summary.documents != report.documents {
        return Err(mismatch(
            info,
            &record.path,
            format!(
                "{} documents exported, {} read back",
                report.documents, summary.documents
            ),
        ));
    }
    Ok(summary)
}

async fn read_back(info: &TenantInfo, path: &str) -> Result<DumpSummary> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| mismatch(info, path, format!("cannot open it: {e}")))?;
    verify_stream(tokio::io::BufReader::new(file))
        .await
        .map_err(|e| match e {
            Error::Dump { line, problem } => {
                mismatch(info, path, format!("line {line}: {problem}"))
            }
            other => other,
        })
}

/// The archive holds exactly the database: the same collections, each with as many
/// documents (the tenant is fenced, so nothing writes meanwhile).
async fn check_against_database(
    lease: &DbLease,
    info: &TenantInfo,
    path: &str,
    summary: &DumpSummary,
) -> Result<()> {
    let database = &lease.entry.database;
    let driver = |e| Error::from_driver(e, lease.entry.pool.label());
    let mut live: Vec<String> = database
        .list_collection_names()
        .await
        .map_err(driver)?
        .into_iter()
        .filter(|n| !n.starts_with("system."))
        .collect();
    live.sort();
    let mut archived: Vec<String> = summary.collections.iter().map(|c| c.name.clone()).collect();
    archived.sort();
    if live != archived {
        return Err(mismatch(
            info,
            path,
            format!("the database has collections {live:?}, the archive {archived:?}"),
        ));
    }
    for (name, documents) in counted(summary) {
        let found = database
            .collection::<mongodb::bson::Document>(&name)
            .count_documents(doc! {})
            .await
            .map_err(driver)?;
        if found != documents {
            return Err(mismatch(
                info,
                path,
                format!("{name}: the database has {found} documents, the archive {documents}"),
            ));
        }
    }
    Ok(())
}

/// The archive file is there and is the one recorded.
async fn check_file(info: &TenantInfo, record: &super::ArchiveRecord) -> Result<()> {
    let summary = read_back(info, &record.path).await?;
    if summary.sha256 != record.sha256 {
        return Err(mismatch(
            info,
            &record.path,
            format!(
                "SHA-256 {} differs from the recorded {}",
                summary.sha256, record.sha256
            ),
        ));
    }
    Ok(())
}
