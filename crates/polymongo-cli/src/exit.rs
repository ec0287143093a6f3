//! Exit codes.
//!
//! | code | meaning |
//! |---:|---|
//! | 0 | success |
//! | 1 | any other failure (a server error, an I/O error) |
//! | 2 | bad command line (from the argument parser) |
//! | 3 | configuration invalid (file, environment or flags) |
//! | 4 | the cluster could not be reached, or refused the credentials |
//! | 5 | partial: an import or copy stopped early or skipped records (the report says which) |
//! | 6 | refused: `drop` without confirmation |
//! | 130 | interrupted by Ctrl-C (what was written is reported) |

use polymongo::{Error, ErrorKind};

pub const OK: i32 = 0;
pub const OTHER: i32 = 1;
pub const CONFIG: i32 = 3;
pub const CONNECTION: i32 = 4;
pub const PARTIAL: i32 = 5;
pub const REFUSED: i32 = 6;
pub const INTERRUPTED: i32 = 130;

/// The `--help` footer.
pub const HELP: &str = "\
Exit codes: 0 ok, 1 other failure, 2 bad usage, 3 invalid configuration, 4 cluster \
unreachable or credentials refused, 5 partial (an import or copy skipped or stopped; the \
report says what was written), 6 refused (drop without confirmation), 130 interrupted.

Examples:
  polymongo --uri mongodb://127.0.0.1:27017 dbs
  polymongo -c polymongo.toml stats shop --json
  polymongo export shop -o shop.ndjson.gz --gzip
  polymongo import shop_restore -i shop.ndjson.gz --continue-on-error
  polymongo copy shop shop_archive --to-uri mongodb://archive:27017
  polymongo config check polymongo.toml";

/// The exit code for a library error.
pub fn of(error: &Error) -> i32 {
    match error.kind() {
        ErrorKind::Config | ErrorKind::InvalidName => CONFIG,
        ErrorKind::Connection | ErrorKind::Authentication => CONNECTION,
        ErrorKind::Bulk => PARTIAL,
        _ => OTHER,
    }
}
