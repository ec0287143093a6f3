//! What can go wrong with migrations before or around their steps: an invalid migration set,
//! a database whose ledger disagrees with the definitions, a lock held by another runner.
//! Carried by [`Error::Migration`](crate::Error::Migration). A step that fails is not an error
//! of this kind: it is recorded in the run's report (except on a database's first use in
//! lazy mode: [`MigrationError::Failed`]).

use std::fmt;

/// Why a migration set or a migration run was refused. Every variant names the version (or
/// the database) at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MigrationError {
    /// Version 0 is reserved for "nothing applied".
    ZeroVersion {
        /// The migration's name.
        name: String,
    },
    /// Two migrations share a version.
    DuplicateVersion {
        /// The version given twice.
        version: u64,
    },
    /// Versions skip a number: versions must be consecutive, so a lost migration (a file
    /// not copied, a merge that dropped one) is caught before it is skipped everywhere.
    VersionGap {
        /// The last version before the gap.
        after: u64,
        /// The next version defined.
        next: u64,
    },
    /// A migration file could not be used: unreadable, not Extended JSON, a field missing,
    /// unknown or of the wrong type, or a badly formed file name.
    File {
        /// The file's path.
        file: String,
        /// The field at fault (`up[2].createIndexes`, `name`…); empty when the file as a
        /// whole is (unreadable, not JSON, a bad file name).
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// A rollback would pass a version that has no down steps: nothing is rolled back.
    NoDownSteps {
        /// The database.
        database: String,
        /// The version without down steps.
        version: u64,
    },
    /// A migration's name is empty.
    EmptyName {
        /// The migration's version.
        version: u64,
    },
    /// A migration has no steps.
    NoSteps {
        /// The migration's version.
        version: u64,
    },
    /// A migration with code steps has no `code_version`: code cannot be hashed, so its
    /// author has to say when it changes.
    MissingCodeVersion {
        /// The migration's version.
        version: u64,
    },
    /// A declarative step's command is not on the allow-list (or the document is empty).
    CommandNotAllowed {
        /// The migration's version.
        version: u64,
        /// The command's name (its first key), empty for an empty document.
        command: String,
    },
    /// A declarative step names another database (`$db`, a `db` field of a namespace, an
    /// `$out` / `$merge` stage) or a value of the wrong type where a collection name belongs.
    CrossDatabase {
        /// The migration's version.
        version: u64,
        /// The command's name.
        command: String,
        /// The field that was refused.
        field: String,
    },
    /// The ledger says a version was applied with another definition than the one given.
    ChecksumMismatch {
        /// The database.
        database: String,
        /// The version.
        version: u64,
        /// The checksum in the ledger.
        applied: String,
        /// The checksum of the definition given.
        defined: String,
    },
    /// The ledger holds a version the definitions do not know (applied by a newer binary).
    UnknownVersion {
        /// The database.
        database: String,
        /// The version.
        version: u64,
    },
    /// Another runner holds the database's migration lock, and it did not become free
    /// within the wait.
    LockHeld {
        /// The database.
        database: String,
        /// The lock's owner (host, process and run).
        owner: String,
        /// When the lock expires, RFC 3339.
        expires_at: String,
    },
    /// The lock was taken over by another runner while this one was working (it expired:
    /// a step ran longer than the lock's time to live without a renewal getting through).
    LockLost {
        /// The database.
        database: String,
        /// The version being applied.
        version: u64,
    },
    /// A database could not be brought to the latest version before its first use (lazy
    /// mode): a step failed. The versions before it stay applied; the next first use tries
    /// again.
    Failed {
        /// The database.
        database: String,
        /// The failing version.
        version: u64,
        /// Its name.
        name: String,
        /// The failing step's index (from 0).
        step: usize,
        /// What the step returned.
        message: String,
    },
    /// A ledger document could not be read.
    Ledger {
        /// The database.
        database: String,
        /// What is wrong.
        problem: String,
    },
}

impl fmt::Display for MigrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroVersion { name } => {
                write!(f, "migration {name:?} has version 0; versions start at 1")
            }
            Self::DuplicateVersion { version } => {
                write!(f, "migration version {version} is defined twice")
            }
            Self::VersionGap { after, next } => write!(
                f,
                "migration versions jump from {after} to {next}; versions must be consecutive"
            ),
            Self::File {
                file,
                field,
                problem,
            } => {
                if field.is_empty() {
                    write!(f, "migration file {file}: {problem}")
                } else {
                    write!(f, "migration file {file}, field {field}: {problem}")
                }
            }
            Self::NoDownSteps { database, version } => write!(
                f,
                "database {database:?}: migration {version} has no down steps, so it cannot be \
                 rolled back; nothing was rolled back"
            ),
            Self::EmptyName { version } => write!(f, "migration {version} has an empty name"),
            Self::NoSteps { version } => write!(f, "migration {version} has no steps"),
            Self::MissingCodeVersion { version } => write!(
                f,
                "migration {version} has code steps but no code_version (code cannot be hashed)"
            ),
            Self::CommandNotAllowed { version, command } => write!(
                f,
                "migration {version}: command {command:?} is not allowed in a migration"
            ),
            Self::CrossDatabase {
                version,
                command,
                field,
            } => write!(
                f,
                "migration {version}: command {command:?} may only address the tenant's own \
                 database (field {field:?})"
            ),
            Self::ChecksumMismatch {
                database,
                version,
                applied,
                defined,
            } => write!(
                f,
                "database {database:?}: migration {version} was applied with checksum {applied} \
                 but is now defined with {defined}; a migration must not change once applied"
            ),
            Self::UnknownVersion { database, version } => write!(
                f,
                "database {database:?}: migration {version} is in the ledger but not defined \
                 here (applied by a newer release?)"
            ),
            Self::LockHeld {
                database,
                owner,
                expires_at,
            } => write!(
                f,
                "database {database:?}: migrations are locked by {owner} until {expires_at}"
            ),
            Self::LockLost { database, version } => write!(
                f,
                "database {database:?}: the migration lock was lost while applying version \
                 {version}"
            ),
            Self::Failed {
                database,
                version,
                name,
                step,
                message,
            } => write!(
                f,
                "database {database:?}: migration {version} ({name}) failed at step {step}: \
                 {message}"
            ),
            Self::Ledger { database, problem } => {
                write!(
                    f,
                    "database {database:?}: unreadable migration ledger: {problem}"
                )
            }
        }
    }
}
