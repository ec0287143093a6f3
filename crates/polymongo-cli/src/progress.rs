//! Progress bars for export, import, copy and migration runs: on stderr, only when it is a
//! terminal and `--quiet` is off.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{
    HumanBytes, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle, TermLike,
};

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

/// The bar of a migration run over many databases: done/total, failed, rate and ETA.
#[derive(Clone)]
pub struct FleetBar {
    bar: Option<ProgressBar>,
}

/// Standard error as indicatif draws on it, two columns narrower than the terminal.
/// indicatif pads a bar's last line to the full width, leaving the cursor at the edge, so the
/// `^C` a terminal echoes when Ctrl-C is typed wraps onto a new line and the bar is then
/// drawn (and at the end cleared) one line below a stale copy of itself. With two columns
/// spare, the echo fits on the bar's line and is overwritten by the next draw.
#[derive(Debug)]
struct Margin(console::Term);

impl TermLike for Margin {
    fn width(&self) -> u16 {
        self.0.size().1.saturating_sub(2).max(1)
    }
    fn height(&self) -> u16 {
        self.0.size().0
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_up(n)
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_down(n)
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_right(n)
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_left(n)
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.0.write_line(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.0.write_str(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.0.clear_line()
    }
    fn flush(&self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl FleetBar {
    /// A bar over `total` databases, shown only if stderr is a terminal and `quiet` is off.
    pub fn new(what: &str, total: usize, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(total as u64),
                ProgressDrawTarget::term_like_with_hz(
                    Box::new(Margin(console::Term::buffered_stderr())),
                    20,
                ),
            );
            let template =
                "{prefix} [{bar:30}] {pos}/{len} databases, {msg} failed, {rate} eta {eta}";
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(
                    style
                        .with_key(
                            "rate",
                            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                                let _ = write!(w, "{:.1} db/s", state.per_sec());
                            },
                        )
                        .progress_chars("=> "),
                );
            }
            bar.set_prefix(what.to_owned());
            bar.set_message("0");
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self { bar }
    }

    /// The library's progress callback for this bar.
    pub fn callback(&self) -> impl Fn(&polymongo::migrate::FleetProgress) + Send + Sync + 'static {
        let bar = self.bar.clone();
        move |p| {
            if let Some(bar) = &bar {
                bar.set_length(p.total as u64);
                bar.set_position(p.done as u64);
                bar.set_message(p.failed.to_string());
            }
        }
    }

    /// Writes a note to stderr without tearing the bar.
    pub fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => crate::out::note(text),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
