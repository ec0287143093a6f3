//! `tenants archive | restore | delete | recount-places`: the library's lifecycle steps, with
//! a progress bar for the long ones and Ctrl-C leaving a state the next run finishes.

use std::time::Duration;

use polymongo::tenants::{ArchiveTenant, DeleteTenant, Deleted, RestoreTenant, Tenants};

use super::{placement_of, report, ArchiveArgs, RestoreArgs};
use crate::commands::{fail, interruptible};
use crate::exit;
use crate::out::{self, Outcome, Stop};
use crate::progress::Progress;
use crate::Global;

/// Says what an interrupted step left, and exits 130.
fn interrupted(what: &str, id: &str) -> Outcome {
    out::note(format_args!(
        "polymongo: interrupted: tenant {id} stays {what} (not served); run the same command \
         again to finish it"
    ));
    Ok(exit::INTERRUPTED)
}

pub(super) async fn archive(g: &Global, tenants: &Tenants, args: ArchiveArgs) -> Outcome {
    let progress = Progress::new("archive", None, g.quiet);
    let mut options = ArchiveTenant::to_folder(&args.folder).progress(progress.callback());
    if let Some(ms) = args.settle_ms {
        options = options.settle(Duration::from_millis(ms));
    }
    let done = interruptible(tenants.archive(&args.id, options)).await;
    progress.finish();
    let Some(result) = done else {
        return interrupted("archiving", &args.id);
    };
    let info = result.map_err(|e| Stop(fail(&e)))?;
    if g.json {
        out::json(&info)?;
    } else {
        let archive = info.archive.as_ref();
        out::line(format_args!(
            "archived tenant {} from {}: {} documents in {} ({} bytes, sha256 {})",
            info.id,
            archive.map_or("?", |a| a.from_cluster.as_str()),
            archive.map_or(0, |a| a.documents()),
            archive.map_or("?", |a| a.path.as_str()),
            archive.map_or(0, |a| a.file_bytes),
            archive.map_or("?", |a| a.sha256.as_str()),
        ))?;
    }
    Ok(exit::OK)
}

pub(super) async fn restore(g: &Global, tenants: &Tenants, args: RestoreArgs) -> Outcome {
    let total = tenants
        .get(&args.id)
        .await
        .ok()
        .and_then(|i| i.archive)
        .map(|a| a.documents());
    let progress = Progress::new("restore", total, g.quiet);
    let options = RestoreTenant::new()
        .placement(placement_of(args.cluster, args.placement))
        .progress(progress.callback());
    let done = interruptible(tenants.restore(&args.id, options)).await;
    progress.finish();
    let Some(result) = done else {
        return interrupted("restoring", &args.id);
    };
    let info = result.map_err(|e| Stop(fail(&e)))?;
    if g.json {
        out::json(&info)?;
    } else {
        out::line(format_args!(
            "restored tenant {} onto {} (database {}, {} documents, now {})",
            info.id,
            info.cluster,
            info.database,
            info.archive.as_ref().map_or(0, |a| a.documents()),
            info.state.as_str()
        ))?;
    }
    Ok(exit::OK)
}

pub(super) async fn delete(g: &Global, tenants: &Tenants, id: &str, confirm: String) -> Outcome {
    let deleted = tenants
        .delete(id, DeleteTenant::confirming(confirm))
        .await
        .map_err(|e| Stop(fail(&e)))?;
    if g.json {
        out::json(&deleted)?;
        return Ok(exit::OK);
    }
    match deleted {
        Deleted::Removed(info) => {
            out::line(format_args!(
                "deleted tenant {} (database {} on {}){}",
                info.id,
                info.database,
                info.cluster,
                info.archive
                    .as_ref()
                    .map(|a| format!("; its archive {} is kept", a.path))
                    .unwrap_or_default()
            ))?;
            Ok(exit::OK)
        }
        _ => {
            out::note(format_args!("polymongo: no tenant {id} in the directory"));
            Ok(exit::CONFIG)
        }
    }
}

pub(super) async fn recount(g: &Global, tenants: &Tenants) -> Outcome {
    let places = tenants.recount_places().await.map_err(|e| Stop(fail(&e)))?;
    report::places(&places, g.json)?;
    Ok(exit::OK)
}
