//! What can go wrong with the tenant directory: carried by
//! [`Error::Tenant`](crate::Error::Tenant). Every variant names the tenant (or the cluster)
//! at fault.

use std::fmt;

/// Why a tenant could not be routed, created or changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TenantError {
    /// No directory is configured (`directory` in the options).
    NoDirectory,
    /// The tenant id cannot be used: its database name would be invalid or reserved.
    InvalidId {
        /// The id as given.
        tenant: String,
        /// Why.
        problem: String,
    },
    /// The directory has no such tenant.
    Unknown {
        /// The tenant.
        tenant: String,
    },
    /// The tenant is suspended: its database is not served until it is resumed.
    Suspended {
        /// The tenant.
        tenant: String,
    },
    /// The tenant is not in a state that serves requests (being created, archived…).
    NotServing {
        /// The tenant.
        tenant: String,
        /// Its state in the directory.
        state: String,
    },
    /// A tenant with this id exists already (create), in another state or place than asked.
    AlreadyExists {
        /// The tenant.
        tenant: String,
        /// Its state in the directory.
        state: String,
    },
    /// A change asked of a tenant in a state that does not allow it (suspend a suspended
    /// tenant, resume an active one…).
    WrongState {
        /// The tenant.
        tenant: String,
        /// Its state in the directory.
        state: String,
        /// The change asked.
        wanted: &'static str,
    },
    /// A cluster name that the options do not define.
    UnknownCluster {
        /// The name.
        cluster: String,
    },
    /// Every cluster the placement could choose is at its capacity.
    FleetFull {
        /// The clusters considered.
        clusters: Vec<String>,
    },
    /// This instance has not read the directory's changes for longer than
    /// `directory.max_staleness`: it no longer vouches for its cached entry of the tenant,
    /// and refuses it until a read succeeds. Nothing was sent to the tenant's database.
    Stale {
        /// The tenant.
        tenant: String,
        /// Time since the last successful read of the changes.
        since: std::time::Duration,
    },
    /// A delete whose confirmation does not name the tenant.
    NotConfirmed {
        /// The tenant.
        tenant: String,
        /// The confirmation given.
        given: String,
    },
    /// A restore of a tenant that has no verified archive.
    NoArchive {
        /// The tenant.
        tenant: String,
    },
    /// An archive file does not match what it should hold: the database (when archiving:
    /// the database is not dropped) or the archive's record (when restoring: nothing is
    /// made active).
    ArchiveMismatch {
        /// The tenant.
        tenant: String,
        /// The file.
        path: String,
        /// What differs.
        problem: String,
    },
    /// A directory document is not what the library writes (edited by hand?): the tenant
    /// is not served until it is fixed.
    InvalidRecord {
        /// The tenant (the document's `_id`).
        tenant: String,
        /// The field at fault.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

impl fmt::Display for TenantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoDirectory => f.write_str(
                "no tenant directory is configured (the `directory` option names its cluster)",
            ),
            Self::InvalidId { tenant, problem } => {
                write!(f, "tenant id {tenant:?} cannot be used: {problem}")
            }
            Self::Unknown { tenant } => write!(f, "unknown tenant {tenant:?}"),
            Self::Suspended { tenant } => write!(f, "tenant {tenant:?} is suspended"),
            Self::NotServing { tenant, state } => {
                write!(f, "tenant {tenant:?} is {state}, not serving")
            }
            Self::AlreadyExists { tenant, state } => {
                write!(f, "tenant {tenant:?} exists already ({state})")
            }
            Self::WrongState {
                tenant,
                state,
                wanted,
            } => write!(f, "tenant {tenant:?} is {state}: cannot {wanted} it"),
            Self::UnknownCluster { cluster } => write!(
                f,
                "unknown cluster {cluster:?} (clusters are named in the `clusters` option)"
            ),
            Self::FleetFull { clusters } => write!(
                f,
                "every cluster is at its capacity ({}): no place for a new tenant",
                clusters.join(", ")
            ),
            Self::Stale { tenant, since } => write!(
                f,
                "tenant {tenant:?} not served: the directory's changes were last read {since:?} \
                 ago, more than `directory.max_staleness`"
            ),
            Self::NotConfirmed { tenant, given } => write!(
                f,
                "delete of tenant {tenant:?} not confirmed: the confirmation names {given:?}"
            ),
            Self::NoArchive { tenant } => {
                write!(f, "tenant {tenant:?} has no verified archive to restore")
            }
            Self::ArchiveMismatch {
                tenant,
                path,
                problem,
            } => write!(f, "archive {path:?} of tenant {tenant:?}: {problem}"),
            Self::InvalidRecord {
                tenant,
                field,
                problem,
            } => write!(
                f,
                "directory entry of tenant {tenant:?}, field {field:?}: {problem}"
            ),
        }
    }
}
