//! The one output path of the tool. Results go to standard output through [`line`], [`json`],
//! [`json_line`] and [`bytes`]; notes and errors go to standard error through [`note`].
//!
//! Rust ignores `SIGPIPE`, so a reader that goes away (`polymongo top --json | head -3`) makes
//! the next write fail with `EPIPE`, which `println!` turns into a panic. Here it becomes
//! [`Stop`] with [`exit::PIPE`] instead: the command ends quietly, as a Unix tool killed by
//! `SIGPIPE` would, with the status a shell reports for one (141). `main.rs` forbids
//! `print!`-style macros, so no command can write around this path.

use std::fmt::Display;
use std::io::{ErrorKind, Write};

use serde::Serialize;

use crate::exit;

/// The command must end now with this exit code: the reader of standard output went away
/// (quietly, [`exit::PIPE`]), or writing failed (reported, [`exit::OTHER`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop(pub i32);

/// What a command returns: its exit code, or an early [`Stop`].
pub type Outcome = Result<i32, Stop>;

/// Writes `text` and a newline to standard output.
pub fn line(text: impl Display) -> Result<(), Stop> {
    bytes(format!("{text}\n").as_bytes())
}

/// Writes `value` as pretty JSON (one document).
pub fn json<T: Serialize>(value: &T) -> Result<(), Stop> {
    line(encoded(serde_json::to_string_pretty(value))?)
}

/// Writes `value` as one line of JSON (a stream of them: `top`, `watch`).
pub fn json_line<T: Serialize>(value: &T) -> Result<(), Stop> {
    line(encoded(serde_json::to_string(value))?)
}

fn encoded(text: serde_json::Result<String>) -> Result<String, Stop> {
    text.map_err(|e| {
        note(format_args!(
            "polymongo: cannot encode the result as JSON: {e}"
        ));
        Stop(exit::OTHER)
    })
}

/// Writes `data` to standard output and flushes it, so a closed pipe is seen now.
pub fn bytes(data: &[u8]) -> Result<(), Stop> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(data)
        .and_then(|()| stdout.flush())
        .map_err(|e| stopped(&e))
}

/// The [`Stop`] for a failed write to standard output.
pub fn stopped(e: &std::io::Error) -> Stop {
    if e.kind() == ErrorKind::BrokenPipe {
        Stop(exit::PIPE)
    } else {
        note(format_args!("polymongo: cannot write the output: {e}"));
        Stop(exit::OTHER)
    }
}

/// Writes a note or an error (one line) to standard error. A closed standard error has no one
/// left to tell, so its failure is ignored.
pub fn note(text: impl Display) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Writes `text` to standard error without a newline (a prompt).
pub fn prompt(text: impl Display) {
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "{text}");
    let _ = stderr.flush();
}
