//! The failures of an import or copy, summarised: counts by reason and the first few, however
//! many there are (a million duplicate keys make a few lines, not a million). Every failure
//! goes, one JSON line each, to the `--report FILE` when one is given; `--json` prints the
//! library's report (its first failures, the count of the rest) with the counts by reason.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use polymongo::bulk::{Failure, ImportReport};
use serde::Serialize;

use crate::out;

/// Failures shown on the terminal.
const SHOWN: usize = 5;
/// Distinct reasons counted; the rest are counted together, so a dump crafted with a
/// different reason on every line cannot grow the table.
const MAX_REASONS: usize = 20;
/// The reason under which the others are counted.
const OTHER_REASONS: &str = "(other reasons)";
/// Longest reason kept.
const MAX_REASON_CHARS: usize = 80;

/// Counts by reason, and the report file; fed by the library's `on_failure` callback.
#[derive(Clone, Default)]
pub struct Failures {
    inner: Arc<Mutex<Tally>>,
}

#[derive(Default)]
struct Tally {
    by_reason: BTreeMap<String, u64>,
    file: Option<BufWriter<File>>,
    file_error: Option<String>,
}

/// The summary added to `--json` output.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    /// The library's report.
    #[serde(flatten)]
    pub report: &'a ImportReport,
    /// Failures by reason, all of them counted.
    pub failures_by_reason: BTreeMap<String, u64>,
}

impl Failures {
    /// Counts failures, and writes every one to `report` when given.
    ///
    /// # Errors
    /// The report file cannot be created (reported; exit 1).
    pub fn new(report: Option<&Path>) -> Result<Self, out::Stop> {
        let file = match report {
            Some(path) => Some(BufWriter::new(File::create(path).map_err(|e| {
                out::note(format_args!(
                    "polymongo: cannot create the report {}: {e}",
                    path.display()
                ));
                out::Stop(crate::exit::OTHER)
            })?)),
            None => None,
        };
        Ok(Failures {
            inner: Arc::new(Mutex::new(Tally {
                file,
                ..Tally::default()
            })),
        })
    }

    /// The callback for [`ImportOptions::on_failure`](polymongo::bulk::ImportOptions::on_failure).
    pub fn callback(&self) -> impl Fn(&Failure) + Send + Sync + 'static {
        let inner = Arc::clone(&self.inner);
        move |failure| {
            let mut tally = inner.lock().unwrap_or_else(|p| p.into_inner());
            let reason = reason_of(failure);
            let known =
                tally.by_reason.len() < MAX_REASONS || tally.by_reason.contains_key(&reason);
            let key = if known {
                reason
            } else {
                OTHER_REASONS.to_owned()
            };
            *tally.by_reason.entry(key).or_insert(0) += 1;
            if let Some(file) = &mut tally.file {
                let written = serde_json::to_writer(&mut *file, failure)
                    .map_err(std::io::Error::from)
                    .and_then(|()| file.write_all(b"\n"));
                if let Err(e) = written {
                    tally.file_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }

    /// Counts by reason so far.
    fn by_reason(&self) -> BTreeMap<String, u64> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_reason
            .clone()
    }

    /// Flushes the report file; its first write error, if any.
    fn finish_file(&self) -> Option<String> {
        let mut tally = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = &mut tally.file {
            if let Err(e) = file.flush() {
                tally.file_error.get_or_insert_with(|| e.to_string());
            }
        }
        tally.file_error.clone()
    }

    /// Reports `report`: as JSON with the counts by reason, or as a summary on standard
    /// error (the report's line, counts by reason, the first failures, where the rest are).
    pub fn report(&self, report: &ImportReport, json: bool, file: Option<&Path>) -> out::Outcome {
        if let Some(e) = self.finish_file() {
            out::note(format_args!(
                "polymongo: writing the report file failed: {e}"
            ));
        }
        if json {
            out::json(&Summary {
                report,
                failures_by_reason: self.by_reason(),
            })?;
            return Ok(crate::commands::import_code(report));
        }
        out::note(report);
        let by_reason = self.by_reason();
        if !by_reason.is_empty() {
            out::note("failures by reason:");
            for (reason, count) in &by_reason {
                out::note(format_args!("  {count:>8}  {reason}"));
            }
            let total = report.failures.len() as u64 + report.failures_dropped;
            let shown = report.failures.len().min(SHOWN);
            out::note(format_args!("first {shown} of {total}:"));
            for f in report.failures.iter().take(SHOWN) {
                out::note(format_args!("  {}", describe(f)));
            }
            match file {
                Some(path) => out::note(format_args!(
                    "every failure is in {} (one JSON line each)",
                    path.display()
                )),
                None if total > shown as u64 => out::note(
                    "the full list: --report FILE (every failure), or --json (the first 1000)",
                ),
                None => {}
            }
        }
        Ok(crate::commands::import_code(report))
    }
}

/// What a failure is counted under: its stage and the start of its message (up to the first
/// `:`), which names the kind of problem without the details of one record — for a document
/// the server refused, the server's code (`refused by the server (11000)`).
fn reason_of(f: &Failure) -> String {
    let head = f.message.split(':').next().unwrap_or("").trim();
    let reason = format!("{:?}: {head}", f.stage).to_lowercase();
    reason.chars().take(MAX_REASON_CHARS).collect()
}

/// One failure on one line: where, what, which collection.
fn describe(f: &Failure) -> String {
    let place = match (f.line, f.lines) {
        (Some(line), _) => format!("line {line}"),
        (None, Some((a, b))) => format!("lines {a}-{b}"),
        _ => "-".to_owned(),
    };
    format!(
        "{place}: {:?} {}: {}",
        f.stage,
        f.collection.as_deref().unwrap_or("-"),
        f.message
    )
}
