//! The tenant directory from the command line: `polymongo clusters` (each cluster's places,
//! tenants by state and data size) and `polymongo tenants ls | show | create | suspend |
//! resume | archive | restore | delete | recount-places`.
//!
//! Both need the `directory` option (a `[directory]` section of the configuration file, with
//! the `[clusters.NAME]` sections tenants are placed on); without it they say so and exit 3,
//! before connecting. The tool routes no tenant, so its manager does not watch the directory
//! for changes (`directory.watch` is turned off for the tool's own process).
//!
//! Exit codes (`src/exit.rs`): 0 done; 3 no directory configured, an invalid tenant id, an
//! unknown tenant or cluster (nothing changed); 4 a cluster unreachable; 5 `ls` listed
//! invalid directory entries (each named, with its field); 6 the directory refused the
//! change (wrong state, exists already, every cluster full; nothing changed); 1 any other
//! failure (a `show` of an entry edited into an invalid one included).

mod lifecycle;
mod listing;
mod report;

use clap::{Args, Subcommand, ValueEnum};
use polymongo::mongodb::bson::Document;
use polymongo::tenants::{
    CreateTenant, Placement, TenantInfo, TenantState, Tenants, MAIN_CLUSTER, MAX_PAGE,
};
use polymongo::{Options, PolyMongo};

use crate::commands::{self, fail, reachable};
use crate::exit;
use crate::out::{self, Outcome, Stop};
use crate::Global;

/// The `--help` footer of the tenant commands.
pub const HELP: &str = "\
Needs a [directory] section in the configuration file (and [clusters.NAME] sections for the \
clusters tenants are placed on). Exit codes: 0 done, 1 other failure (an archive that does \
not match its database or record included), 2 bad usage, 3 no directory configured, an \
invalid tenant id, an unknown tenant or cluster (nothing changed), 4 cluster unreachable, 5 \
`ls` found invalid directory entries (each listed with its field), 6 refused by the \
directory: wrong state, exists already, every cluster full, no archive to restore, a delete \
not confirmed (nothing changed), 130 interrupted (archive and restore: run again to \
finish).";

/// Tenants per page of `ls` unless `--limit` says otherwise.
pub const PAGE: u32 = 100;

/// Tenants per read of `ls --all` unless `--limit` says otherwise.
pub const ALL_PAGE: u32 = 1_000;

/// Longest `archive --settle-ms`: an hour. The tenant is fenced (refused everywhere) while
/// the command waits, so a longer wait is a mistake, not a setting.
pub const MAX_SETTLE_MS: u64 = 3_600_000;

/// `polymongo tenants`.
#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Tenants by id, one page at a time (100 unless --limit), with the id to continue
    /// after; --all walks every page. Invalid directory entries are listed as problems
    /// (exit 5), never skipped.
    #[command(after_help = HELP)]
    Ls(LsArgs),
    /// One tenant as the directory has it: database, cluster, state, labels, version,
    /// times.
    #[command(after_help = HELP)]
    Show {
        /// The tenant id.
        id: String,
    },
    /// Creates a tenant: places it (on --cluster, or by --placement, capacities
    /// respected), records it, creates its database there, makes it active. Finishes a
    /// create left half done.
    #[command(after_help = HELP)]
    Create(CreateArgs),
    /// Suspends an active tenant: every application instance refuses it within the
    /// directory's refresh.
    #[command(after_help = HELP)]
    Suspend {
        /// The tenant id.
        id: String,
    },
    /// Resumes a suspended tenant.
    #[command(after_help = HELP)]
    Resume {
        /// The tenant id.
        id: String,
    },
    /// Archives a tenant: fences it (not served), waits the directory's bound, exports its
    /// database to a gzip dump in --to, reads the file back and compares it with the
    /// database, records the verified archive, drops the database, gives its place back.
    /// Run again after an interruption to finish it.
    #[command(after_help = HELP)]
    Archive(ArchiveArgs),
    /// Restores an archived tenant from its recorded archive (checked against its SHA-256)
    /// onto a cluster chosen by --cluster or --placement, checks the counts, serves it.
    /// Run again after an interruption to finish it.
    #[command(after_help = HELP)]
    Restore(RestoreArgs),
    /// Deletes a tenant for good (its database and its entry; an archive file is kept):
    /// --confirm must repeat the id.
    #[command(after_help = HELP)]
    Delete {
        /// The tenant id.
        id: String,
        /// The tenant id again.
        #[arg(long, value_name = "ID")]
        confirm: String,
    },
    /// Sets every cluster's place count to the tenants recorded on it (repairs places a
    /// crash leaked between taking a place and recording the tenant). Run it while no
    /// create, archive, restore or delete is under way.
    #[command(after_help = HELP)]
    RecountPlaces,
}

/// `tenants archive`.
#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// The tenant id.
    id: String,
    /// The folder archive files go to (created if missing).
    #[arg(long = "to", value_name = "FOLDER")]
    folder: std::path::PathBuf,
    /// How long to wait after fencing before reading, in milliseconds, 0 to 3600000 (an
    /// hour; default: the directory's refresh plus one second, its bound).
    #[arg(long, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(0..=MAX_SETTLE_MS))]
    settle_ms: Option<u64>,
}

/// `tenants restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The tenant id.
    id: String,
    /// Restore onto this cluster.
    #[arg(long, value_name = "NAME", conflicts_with = "placement")]
    cluster: Option<String>,
    /// How to choose its cluster among those with room.
    #[arg(long, value_enum, default_value_t = PlacementArg::LeastTenants)]
    placement: PlacementArg,
}

/// `tenants ls`: filters and paging.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only tenants in this state.
    #[arg(long, value_name = "STATE", value_parser = state_parser())]
    state: Option<TenantState>,
    /// Only tenants on this cluster (a name of [clusters.NAME], or "main").
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
    /// Start after this tenant id (the `next` of the previous page).
    #[arg(long, value_name = "ID")]
    after: Option<String>,
    /// Tenants per page, 1 to 10000 (default 100; with --all, 1000 per read).
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PAGE)))]
    limit: Option<u32>,
    /// Every page, each printed as it is read (memory stays bounded whatever the fleet's
    /// size). With --json: JSON lines, one tenant per line, an invalid entry as
    /// {"invalid": {...}}; without --all, --json is one document {tenants, invalid, next}.
    #[arg(long)]
    all: bool,
}

/// `tenants create`: the id, where it goes, its labels.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The tenant id (its database is the directory's database_prefix followed by the id).
    id: String,
    /// Place it on this cluster (a name of [clusters.NAME], or "main").
    #[arg(long, value_name = "NAME", conflicts_with = "placement")]
    cluster: Option<String>,
    /// How to choose its cluster among those with room.
    #[arg(long, value_enum, default_value_t = PlacementArg::LeastTenants)]
    placement: PlacementArg,
    /// A label stored with the tenant, KEY=VALUE (repeatable; a key given twice keeps its
    /// last value). Values are strings.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = label)]
    labels: Vec<(String, String)>,
}

/// `--placement`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlacementArg {
    /// The cluster with the fewest tenants.
    LeastTenants,
    /// The cluster furthest below its share by weight.
    Weighted,
    /// The cluster whose tenants' databases take the least space.
    LeastData,
}

/// A change of a tenant's state that is one write (the lifecycle's longer steps are in
/// `lifecycle.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Suspend,
    Resume,
}

impl Change {
    /// The past participle, for the text output.
    fn done(self) -> &'static str {
        match self {
            Change::Suspend => "suspended",
            Change::Resume => "resumed",
        }
    }

    async fn apply(self, tenants: &Tenants, id: &str) -> polymongo::Result<TenantInfo> {
        match self {
            Change::Suspend => tenants.suspend(id).await,
            Change::Resume => tenants.resume(id).await,
        }
    }
}

fn state_parser() -> impl clap::builder::TypedValueParser<Value = TenantState> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(TenantState::ALL.map(TenantState::as_str))
        .try_map(|s: String| TenantState::parse(&s).ok_or(format!("unknown state {s:?}")))
}

/// `KEY=VALUE`, the key non-empty, without `.` and not starting with `$` (they would be
/// paths and operators in the stored document).
fn label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    if key.is_empty() || key.contains('.') || key.starts_with('$') {
        return Err(format!(
            "label key {key:?}: must be non-empty, without '.', and not start with '$'"
        ));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// `polymongo clusters`.
pub(crate) async fn clusters(g: &Global) -> i32 {
    with_directory(g, |poly, tenants| async move {
        let census = tenants.census().await.map_err(|e| Stop(fail(&e)))?;
        let directory = poly.options().directory.clone().unwrap_or_default();
        report::census(&census, &directory, g.json)?;
        Ok(exit::OK)
    })
    .await
}

/// `polymongo tenants …`.
pub(crate) async fn tool(g: &Global, command: TenantsCommand) -> i32 {
    with_directory(g, |_, tenants| async move {
        match command {
            TenantsCommand::Ls(args) => listing::ls(&tenants, &args, g.json).await,
            TenantsCommand::Show { id } => {
                let info = tenants.get(&id).await.map_err(|e| Stop(fail(&e)))?;
                report::tenant(&info, g.json)?;
                Ok(exit::OK)
            }
            TenantsCommand::Create(args) => create(&tenants, args, g.json).await,
            TenantsCommand::Suspend { id } => change(&tenants, Change::Suspend, &id, g.json).await,
            TenantsCommand::Resume { id } => change(&tenants, Change::Resume, &id, g.json).await,
            TenantsCommand::Archive(args) => lifecycle::archive(g, &tenants, args).await,
            TenantsCommand::Restore(args) => lifecycle::restore(g, &tenants, args).await,
            TenantsCommand::Delete { id, confirm } => {
                lifecycle::delete(g, &tenants, &id, confirm).await
            }
            TenantsCommand::RecountPlaces => lifecycle::recount(g, &tenants).await,
        }
    })
    .await
}

/// The options, refused before connecting when they have no directory; the manager; `work`
/// with the directory's operations, after a ping of the directory's cluster when it is the
/// main one; the manager closed.
async fn with_directory<F, W>(g: &Global, work: W) -> i32
where
    W: FnOnce(PolyMongo, Tenants) -> F,
    F: std::future::Future<Output = Outcome>,
{
    let options = match directory_options(g) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let on_main = options
        .directory
        .as_ref()
        .map(|d| (d.cluster == MAIN_CLUSTER).then(|| d.database.clone()));
    let poly = match commands::build(options).await {
        Ok(poly) => poly,
        Err(code) => return code,
    };
    let outcome = async {
        if let Some(Some(database)) = &on_main {
            reachable(&poly, &[database]).await?;
        }
        let tenants = poly.tenants().map_err(|e| Stop(fail(&e)))?;
        work(poly.clone(), tenants).await
    }
    .await;
    poly.close_all(commands::CLOSE_DEADLINE).await;
    outcome.unwrap_or_else(|Stop(code)| code)
}

/// The tool's options, which must configure a directory.
fn directory_options(g: &Global) -> Result<Options, i32> {
    let mut options = commands::options(g)?;
    let Some(directory) = options.directory.as_mut() else {
        let file = match &g.config {
            Some(path) => format!("{} has no [directory] section", path.display()),
            None => "no configuration file was given (--config or POLYMONGO_CONFIG)".to_owned(),
        };
        out::note(format_args!(
            "polymongo: no tenant directory is configured: {file}. The tenant commands need the \
             `directory` key (a [directory] section: cluster = \"main\" or a name of \
             [clusters.NAME], database_prefix = \"…\")"
        ));
        return Err(exit::CONFIG);
    };
    // The tool routes no tenant: a change stream kept open for its cache would be work for
    // the control cluster and nothing for the tool.
    directory.watch = false;
    Ok(options)
}

/// `--cluster` or `--placement`, as a placement.
fn placement_of(cluster: Option<String>, placement: PlacementArg) -> Placement {
    match (cluster, placement) {
        (Some(name), _) => Placement::On(name),
        (None, PlacementArg::LeastTenants) => Placement::LeastTenants,
        (None, PlacementArg::Weighted) => Placement::Weighted,
        (None, PlacementArg::LeastData) => Placement::LeastData,
    }
}

async fn create(tenants: &Tenants, args: CreateArgs, json: bool) -> Outcome {
    let placement = placement_of(args.cluster, args.placement);
    let mut labels = Document::new();
    for (key, value) in args.labels {
        labels.insert(key, value);
    }
    let options = CreateTenant::new().placement(placement).labels(labels);
    let info = tenants
        .create(&args.id, options)
        .await
        .map_err(|e| Stop(fail(&e)))?;
    if json {
        out::json(&info)?;
    } else {
        out::line(format_args!(
            "created tenant {} on {} (database {}, {})",
            info.id,
            info.cluster,
            info.database,
            info.state.as_str()
        ))?;
    }
    Ok(exit::OK)
}

async fn change(tenants: &Tenants, change: Change, id: &str, json: bool) -> Outcome {
    let info = change
        .apply(tenants, id)
        .await
        .map_err(|e| Stop(fail(&e)))?;
    if json {
        out::json(&info)?;
    } else {
        out::line(format_args!(
            "{} tenant {} (now {}, version {}; on {}, database {})",
            change.done(),
            info.id,
            info.state.as_str(),
            info.version,
            info.cluster,
            info.database
        ))?;
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn labels_are_key_value_with_a_plain_key() {
        assert_eq!(label("plan=pro"), Ok(("plan".into(), "pro".into())));
        assert_eq!(label("note=a=b"), Ok(("note".into(), "a=b".into())));
        assert_eq!(label("empty="), Ok(("empty".into(), String::new())));
        for bad in ["plan", "=pro", "a.b=1", "$set=1"] {
            assert!(label(bad).is_err(), "{bad}");
        }
    }
}
