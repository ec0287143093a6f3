//! Exit codes, and the message each failure is reported with.
//!
//! | code | meaning |
//! |---:|---|
//! | 0 | success |
//! | 1 | any other failure (a server error, an I/O error) |
//! | 2 | bad command line (from the argument parser) |
//! | 3 | configuration invalid (file, environment or flags), an invalid migration folder, a database name that is not valid, a rollback past a version without down steps; tenant commands: no directory configured, an invalid tenant id, an unknown tenant or cluster |
//! | 4 | the cluster could not be reached, or refused the credentials; `top --app` printing once: no application answered |
//! | 5 | partial: an import or copy stopped early or skipped records (the report says which); a migration run left databases failed or not started; `migrate status`/`plan` could not read some database; `tenants ls` listed invalid directory entries |
//! | 6 | refused: `drop` without confirmation; a tenant change the directory refused (wrong state, exists already, every cluster full) |
//! | 130 | interrupted by Ctrl-C (what was written, or which databases were migrated, is reported) |
//! | 141 | the reader of standard output went away (`… | head`): stopped quietly |

use polymongo::migrate::MigrationError;
use polymongo::mongodb::error::ErrorKind as DriverKind;
use polymongo::tenants::TenantError;
use polymongo::{Error, ErrorKind};

pub const OK: i32 = 0;
pub const OTHER: i32 = 1;
pub const CONFIG: i32 = 3;
pub const CONNECTION: i32 = 4;
pub const PARTIAL: i32 = 5;
pub const REFUSED: i32 = 6;
pub const INTERRUPTED: i32 = 130;
/// 128 + `SIGPIPE`: what a shell reports for a tool a closed pipe ended.
pub const PIPE: i32 = 141;

/// The `--help` footer.
pub const HELP: &str = "\
Exit codes: 0 ok, 1 other failure, 2 bad usage, 3 invalid configuration (also: an invalid \
migration folder, an invalid database name, a rollback past a version without down steps, no \
tenant directory configured, an invalid tenant id, an unknown tenant or cluster), 4 cluster \
unreachable or credentials refused (top --app printing once: no application answered), 5 \
partial (an import or copy skipped or stopped, a migration run left databases failed or not \
started, migrate status/plan could not read a database, tenants ls found invalid directory \
entries; the report says which), 6 refused (drop without confirmation; a tenant change refused \
for the tenant's state, an id that exists already, every cluster full), 130 interrupted, 141 \
output pipe closed by its reader.

Examples:
  polymongo --uri mongodb://127.0.0.1:27017 dbs
  polymongo -c polymongo.toml stats shop --json
  polymongo export shop -o shop.ndjson.gz --gzip
  polymongo import shop_restore -i shop.ndjson.gz --continue-on-error --report failures.jsonl
  polymongo copy shop shop_archive --to-uri mongodb://archive:27017
  polymongo config check polymongo.toml
  polymongo migrate status --dir migrations --prefix tenant_
  polymongo migrate apply --dir migrations --prefix tenant_ --canary 3 --max-failures 5
  polymongo migrate rollback --dir migrations --to 4 --databases-from tenants.txt --json
  polymongo -c polymongo.toml clusters
  polymongo -c polymongo.toml tenants create acme --cluster cell_a --label plan=pro
  polymongo -c polymongo.toml tenants ls --state suspended --all --json
  polymongo top --app http://10.0.0.5:3000,http://10.0.0.6:3000";

/// Why the cluster could not be used, when that is the failure.
enum Unreachable {
    /// No server answered (or the connection broke).
    Network(&'static str),
    /// The server refused the credentials.
    Credentials,
}

/// The exit code for a library error, and the message to report it with. Connection failures
/// and refused credentials are told in a sentence of our own (the driver's text describes its
/// topology, not what an operator should check), whether the library classified them or they
/// came from a driver call made directly.
pub fn of(error: &Error) -> (i32, String) {
    let cluster = match error {
        Error::Connection { cluster, .. } | Error::Authentication { cluster, .. } => {
            format!(" {cluster}")
        }
        _ => String::new(),
    };
    match unreachable(error) {
        Some(Unreachable::Network(why)) => (
            CONNECTION,
            format!(
                "cannot reach the cluster{cluster}: {why}; check the URI, the network and that \
                 the server is running"
            ),
        ),
        Some(Unreachable::Credentials) => (
            CONNECTION,
            format!(
                "the cluster{cluster} refused the credentials; check the user name, the \
                 password and authSource"
            ),
        ),
        None => {
            let code = match error.kind() {
                ErrorKind::Config | ErrorKind::InvalidName => CONFIG,
                ErrorKind::Migration if is_definition_error(error) => CONFIG,
                ErrorKind::Bulk => PARTIAL,
                ErrorKind::Tenant => tenant_code(error),
                _ => OTHER,
            };
            (code, error.to_string())
        }
    }
}

/// Whether a migration error is about the migrations given (a file, the set, a rollback
/// target past a version without down steps) rather than about a database's state.
fn is_definition_error(error: &Error) -> bool {
    let Error::Migration(m) = error else {
        return false;
    };
    matches!(
        **m,
        MigrationError::File { .. }
            | MigrationError::VersionGap { .. }
            | MigrationError::DuplicateVersion { .. }
            | MigrationError::ZeroVersion { .. }
            | MigrationError::EmptyName { .. }
            | MigrationError::NoSteps { .. }
            | MigrationError::MissingCodeVersion { .. }
            | MigrationError::CommandNotAllowed { .. }
            | MigrationError::CrossDatabase { .. }
            | MigrationError::NoDownSteps { .. }
    )
}

/// A tenant error: the request at fault (3: no directory, an invalid id, an unknown tenant
/// or cluster), the directory refusing a valid request (6: the tenant's state, an id taken,
/// no room), or anything else (1: an entry edited into an invalid one). Nothing was changed
/// in the first two cases.
fn tenant_code(error: &Error) -> i32 {
    let Error::Tenant(t) = error else {
        return OTHER;
    };
    match **t {
        TenantError::NoDirectory
        | TenantError::InvalidId { .. }
        | TenantError::Unknown { .. }
        | TenantError::UnknownCluster { .. } => CONFIG,
        TenantError::WrongState { .. }
        | TenantError::AlreadyExists { .. }
        | TenantError::FleetFull { .. }
        | TenantError::Suspended { .. }
        | TenantError::NotServing { .. }
        | TenantError::NotConfirmed { .. }
        | TenantError::NoArchive { .. } => REFUSED,
        _ => OTHER,
    }
}

fn unreachable(error: &Error) -> Option<Unreachable> {
    if error.kind() == ErrorKind::Authentication {
        return Some(Unreachable::Credentials);
    }
    let driver = error.driver_error()?;
    match &*driver.kind {
        DriverKind::Authentication { .. } => Some(Unreachable::Credentials),
        DriverKind::ServerSelection { .. } => Some(Unreachable::Network(
            "no server answered within the server selection timeout",
        )),
        DriverKind::Io(_) => Some(Unreachable::Network("the connection failed")),
        DriverKind::ConnectionPoolCleared { .. } => {
            Some(Unreachable::Network("the connection pool was cleared"))
        }
        _ if error.kind() == ErrorKind::Connection => {
            Some(Unreachable::Network("the connection failed"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_login_from_a_direct_driver_call_exits_4() {
        let driver = polymongo::mongodb::error::Error::custom("x");
        assert_eq!(of(&Error::Driver(driver)).0, OTHER);
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let (code, message) = of(&Error::Driver(io.into()));
        assert_eq!(code, CONNECTION);
        assert!(message.starts_with("cannot reach the cluster"), "{message}");
    }

    #[test]
    fn tenant_errors_exit_3_for_the_request_6_for_a_refusal_and_1_otherwise() {
        let tenant = || "acme".to_owned();
        for (e, code) in [
            (TenantError::NoDirectory, CONFIG),
            (
                TenantError::InvalidId {
                    tenant: tenant(),
                    problem: "empty".into(),
                },
                CONFIG,
            ),
            (TenantError::Unknown { tenant: tenant() }, CONFIG),
            (
                TenantError::UnknownCluster {
                    cluster: "cell_z".into(),
                },
                CONFIG,
            ),
            (
                TenantError::WrongState {
                    tenant: tenant(),
                    state: "suspended".into(),
                    wanted: "suspend",
                },
                REFUSED,
            ),
            (
                TenantError::AlreadyExists {
                    tenant: tenant(),
                    state: "active".into(),
                },
                REFUSED,
            ),
            (TenantError::FleetFull { clusters: vec![] }, REFUSED),
            (
                TenantError::InvalidRecord {
                    tenant: tenant(),
                    field: "state".into(),
                    problem: "unknown state".into(),
                },
                OTHER,
            ),
        ] {
            let message = e.to_string();
            assert_eq!(of(&Error::from(e)), (code, message));
        }
    }
}
