//! Progress bars for export, import and copy: on stderr, only when it is a terminal.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressState, ProgressStyle};

/// A bar (on a terminal) plus the last figures seen, which Ctrl-C reports.
#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    documents: Arc<AtomicU64>,
    /// The bar counts bytes of the dump (an import from a file of known size) rather than
    /// documents.
    by_bytes: bool,
}

impl Progress {
    /// A bar counting documents up to `total` (when known), shown only if stderr is a
    /// terminal and `quiet` is off.
    pub fn new(what: &str, total: Option<u64>, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = match total {
                Some(n) => ProgressBar::new(n),
                None => ProgressBar::new_spinner(),
            };
            let template = if total.is_some() {
                "{prefix} [{bar:30}] {human_pos}/{human_len} docs {rate} eta {eta} {msg}"
            } else {
                "{prefix} {spinner} {human_pos} docs {rate} {msg}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(
                    style
                        .with_key(
                            "rate",
                            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                                let _ = write!(w, "{:.0} docs/s", state.per_sec());
                            },
                        )
                        .progress_chars("=> "),
                );
            }
            bar.set_prefix(what.to_owned());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            documents: Arc::new(AtomicU64::new(0)),
            by_bytes: false,
        }
    }

    /// A bar over the `total` bytes of a dump being read (rate and ETA by bytes, documents
    /// in the message), shown only if stderr is a terminal and `quiet` is off.
    pub fn bytes(what: &str, total: u64, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total);
            let template =
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}";
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(what.to_owned());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            documents: Arc::new(AtomicU64::new(0)),
            by_bytes: true,
        }
    }

    /// The library's progress callback for this bar.
    pub fn callback(&self) -> impl Fn(polymongo::bulk::Progress) + Send + Sync + 'static {
        let (bar, documents, by_bytes) =
            (self.bar.clone(), Arc::clone(&self.documents), self.by_bytes);
        move |p| {
            documents.store(p.documents, Ordering::Relaxed);
            if let Some(bar) = &bar {
                if by_bytes {
                    bar.set_position(p.bytes);
                    bar.set_message(format!("{} docs", p.documents));
                } else {
                    bar.set_position(p.documents);
                    if p.bytes > 0 {
                        bar.set_message(HumanBytes(p.bytes).to_string());
                    }
                }
            }
        }
    }

    /// Documents reported so far.
    pub fn documents(&self) -> u64 {
        self.documents.load(Ordering::Relaxed)
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
