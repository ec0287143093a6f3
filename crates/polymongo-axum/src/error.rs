//! Why a request's tenant is refused, and why a tenancy cannot be built.
//!
//! The text of a refusal is written here, never copied from the driver or the server: a driver
//! message can carry a host name, a query or a server's internals, and none of that belongs in
//! an answer to an anonymous client. The full error goes to the log (`tracing`) instead.

use std::fmt;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use polymongo::NameRule;

use crate::answer::Answer;
use crate::db_error::{is_shutdown, server_refused_name};

/// Why a request's tenant could not be resolved to a database handle.
///
/// The rejection of the [`Tenant`](crate::Tenant) and [`TenantDb`](crate::TenantDb)
/// extractors, answered through the one table of [`Answer`]: 400 for a missing or malformed
/// tenant, 404 for a tenant that is not accepted (reserved databases included, so their
/// existence is not confirmed), 503 with `Retry-After` when the database side cannot take the
/// request now — always before the handler ran, so nothing of the request was applied — and
/// 500 for a service set up without [`Tenancy::layer`](crate::Tenancy::layer).
///
/// With [`TenancyBuilder::directory`](crate::TenancyBuilder::directory), the tenant
/// directory's answers too: 404 for a tenant it does not have, 403 `suspended_tenant`, 410
/// `tenant_gone` (archiving, archived, deleting), 503 `tenant_not_ready` without `Retry-After`
/// (creating, restoring), 500 `invalid_tenant_record` for an entry that is not valid, and a
/// failed read of the directory as [`DbError`](crate::DbError) would answer it
/// ([`TenantError::Directory`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TenantError {
    /// No source named a tenant and no default is configured. 400.
    Missing,
    /// A source gave more than one value (two `X-Tenant` or `Host` headers, say). 400: which
    /// one a proxy meant cannot be known.
    Ambiguous {
        /// The source, e.g. `header x-tenant`.
        source: String,
    },
    /// The tenant name breaks the naming rules (or its database name would). 400.
    InvalidName {
        /// The source the name came from.
        source: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// The name maps to a reserved database (`admin`, `local`, `config`). 404.
    Reserved,
    /// The allow policy refused the tenant, or the tenant directory has no such tenant. 404.
    Unknown,
    /// The tenant directory has the tenant suspended. 403 `suspended_tenant`.
    Suspended,
    /// The tenant directory has the tenant archived, or being archived or deleted. 410
    /// `tenant_gone`.
    Gone {
        /// Its state in the directory (`archiving`, `archived`, `deleting`).
        state: String,
    },
    /// The tenant directory has the tenant being created or restored (or in a state this
    /// version does not know). 503 `tenant_not_ready`, without `Retry-After`: when it will be
    /// served is not known.
    NotReady {
        /// Its state in the directory (`creating`, `restoring`).
        state: String,
    },
    /// The tenant's directory entry is not valid (edited by hand?). 500
    /// `invalid_tenant_record`; the body names the tenant and nothing else of the entry (the
    /// field at fault is logged).
    InvalidRecord {
        /// The tenant id.
        tenant: String,
    },
    /// Reading the tenant directory failed: answered as [`DbError`](crate::DbError) answers
    /// the same error in a handler (503 with `Retry-After` only when nothing was applied —
    /// an unreachable directory, say; 500 `outcome_unknown` for a connection cut under the
    /// read; 500 `database_error` otherwise). Nothing of the request itself was applied.
    Directory {
        /// The entry of the answer table.
        answer: Answer,
    },
    /// The directory answered something this service cannot serve from (a cluster it does
    /// not have). 500 `misconfigured`; the detail is logged.
    DirectoryMismatch,
    /// The manager is closing or closed. 503.
    ShuttingDown,
    /// No place in the tenant's pool came free within the queue timeout (or the request's
    /// deadline), or the database is at its concurrency limit. 503 with `Retry-After: 1`.
    Busy,
    /// The database could not be prepared (unreachable, credentials refused, indexes not
    /// created). 503.
    Unavailable,
    /// The request did not pass through [`Tenancy::layer`](crate::Tenancy::layer), so it has
    /// no deadline: refused rather than served without a bound. 500 `misconfigured`.
    NoLayer,
}

/// What is wrong with a tenant name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameProblem {
    /// The value is empty.
    Empty,
    /// The value is not valid UTF-8 (a percent-decoded path) or not visible ASCII (a header).
    NotText,
    /// The `Host` (or the request target's authority) is not a valid host.
    NotAHost,
    /// An upper-case ASCII letter: tenant names are lower-case, from every source.
    UpperCase,
    /// A character outside `a-z 0-9 _ -` (with the strict character set, the default).
    Character(char),
    /// The name does not start with a letter or a digit (strict character set).
    FirstCharacter,
    /// The database name made from it breaks a MongoDB rule.
    Database(NameRule),
    /// The server refused the database name made from it.
    RefusedByServer,
    /// The tenant directory refused it as a tenant id.
    RefusedByDirectory,
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameProblem::Empty => f.write_str("must not be empty"),
            NameProblem::NotText => f.write_str("must be text (visible ASCII in a header)"),
            NameProblem::NotAHost => f.write_str("is not a valid host"),
            NameProblem::UpperCase => f.write_str("must be lower-case"),
            NameProblem::Character(c) if c.is_ascii_graphic() => write!(
                f,
                "must contain only lower-case letters, digits, '_' and '-', not {c:?}"
            ),
            NameProblem::Character(_) => {
                f.write_str("must contain only lower-case letters, digits, '_' and '-'")
            }
            NameProblem::FirstCharacter => f.write_str("must start with a letter or a digit"),
            NameProblem::Database(rule) => write!(f, "makes a database name that {rule}"),
            NameProblem::RefusedByServer => f.write_str("makes a database name the server refuses"),
            NameProblem::RefusedByDirectory => f.write_str("is not a valid tenant id"),
        }
    }
}

impl fmt::Display for TenantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TenantError::Ambiguous { source } => {
                write!(f, "the request names more than one tenant in its {source}")
            }
            TenantError::InvalidName { source, problem } => {
                write!(f, "the tenant name from the {source} {problem}")
            }
            TenantError::Gone { state } => f.write_str(match state.as_str() {
                "archived" => "the tenant is archived",
                "archiving" => "the tenant is being archived",
                "deleting" => "the tenant is being deleted",
                _ => "the tenant is no longer served",
            }),
            TenantError::NotReady { state } => f.write_str(match state.as_str() {
                "creating" => "the tenant is being created; nothing was done",
                "restoring" => "the tenant is being restored; nothing was done",
                _ => "the tenant is not ready to be served; nothing was done",
            }),
            TenantError::InvalidRecord { tenant } => write!(
                f,
                "the directory entry of tenant {tenant:?} is invalid; nothing was done"
            ),
            TenantError::Directory { answer } => f.write_str(answer.message()),
            other => f.write_str(other.answer().message()),
        }
    }
}

impl std::error::Error for TenantError {}

impl TenantError {
    /// The entry of the one answer table this refusal is answered with.
    pub fn answer(&self) -> Answer {
        match self {
            TenantError::Missing => Answer::MissingTenant,
            TenantError::Ambiguous { .. } | TenantError::InvalidName { .. } => {
                Answer::InvalidTenant
            }
            TenantError::Reserved | TenantError::Unknown => Answer::UnknownTenant,
            TenantError::Suspended => Answer::SuspendedTenant,
            TenantError::Gone { .. } => Answer::TenantGone,
            TenantError::NotReady { .. } => Answer::TenantNotReady,
            TenantError::InvalidRecord { .. } => Answer::InvalidTenantRecord,
            TenantError::Directory { answer } => *answer,
            TenantError::ShuttingDown => Answer::ShuttingDown,
            TenantError::Busy => Answer::Busy,
            TenantError::Unavailable => Answer::Unavailable,
            TenantError::NoLayer | TenantError::DirectoryMismatch => Answer::Misconfigured,
        }
    }

    /// The HTTP status this refusal is answered with.
    pub fn status(&self) -> StatusCode {
        self.answer().status()
    }

    /// The `error` code of the JSON body.
    pub fn code(&self) -> &'static str {
        self.answer().code()
    }

    /// The refusal for a library error met while preparing the tenant's handle, before the
    /// handler runs: nothing of the request was applied, so every database-side failure is a
    /// 503 the client may retry.
    pub(crate) fn from_library(e: &polymongo::Error) -> Self {
        use polymongo::ErrorKind as K;
        if let polymongo::Error::InvalidName {
            what: "database",
            rule,
            ..
        } = e
        {
            // The name was checked before; a library that still refuses it is stricter than
            // our check, and the request is still at fault, not the service.
            return TenantError::InvalidName {
                source: "request".into(),
                problem: NameProblem::Database(*rule),
            };
        }
        if server_refused_name(e) {
            return TenantError::InvalidName {
                source: "request".into(),
                problem: NameProblem::RefusedByServer,
            };
        }
        match e.kind() {
            K::Closed => TenantError::ShuttingDown,
            _ if is_shutdown(e) => TenantError::ShuttingDown,
            K::Saturated | K::PoolExhausted => TenantError::Busy,
            _ => {
                tracing::warn!(error = %e.redacted(), "tenant database could not be prepared");
                TenantError::Unavailable
            }
        }
    }
}

impl IntoResponse for TenantError {
    fn into_response(self) -> Response {
        if self == TenantError::NoLayer {
            tracing::error!("a tenant extractor ran without Tenancy::layer(): add `.layer(tenancy.layer())` to the router");
        }
        self.answer().respond(self.to_string())
    }
}

/// A [`Tenancy`](crate::Tenancy) that cannot be built: the builder names the setting.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// No tenant source was configured, and no default tenant either.
    NoSource,
    /// Sources are configured but no allow policy: every tenant a request names would be
    /// accepted, and anonymous requests could make databases. Set
    /// [`allow_list`](crate::TenancyBuilder::allow_list),
    /// [`allow`](crate::TenancyBuilder::allow),
    /// [`allow_async`](crate::TenancyBuilder::allow_async) or
    /// [`directory`](crate::TenancyBuilder::directory).
    NoAllowPolicy,
    /// The prefix would make database names MongoDB refuses.
    InvalidPrefix {
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// The default tenant is not a valid tenant name, or maps to a reserved database.
    InvalidDefault {
        /// What is wrong with it.
        reason: String,
    },
    /// A tenant of the allow list is not a valid tenant name, or maps to a reserved database.
    InvalidAllowed {
        /// The tenant.
        tenant: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The subdomain source's base domain is empty.
    EmptyBaseDomain,
    /// A time limit is zero, or the queue timeout exceeds the request timeout.
    InvalidLimits {
        /// What is wrong.
        reason: &'static str,
    },
    /// [`directory`](crate::TenancyBuilder::directory) is set but the manager has no tenant
    /// directory (polymongo's `directory` option).
    NoDirectory,
    /// [`directory`](crate::TenancyBuilder::directory) is set together with a
    /// [`prefix`](crate::TenancyBuilder::prefix) or a [`map`](crate::TenancyBuilder::map):
    /// with a directory, the directory's `database_prefix` makes the database names.
    MappingWithDirectory,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NoSource => {
                f.write_str("tenancy has no tenant source and no default tenant")
            }
            ConfigError::NoAllowPolicy => f.write_str(
                "tenancy has tenant sources but no allow policy: set allow_list, allow, allow_async or directory",
            ),
            ConfigError::InvalidPrefix { problem } => write!(f, "tenant prefix {problem}"),
            ConfigError::InvalidDefault { reason } => write!(f, "default tenant: {reason}"),
            ConfigError::InvalidAllowed { tenant, reason } => {
                write!(f, "allowed tenant {tenant:?}: {reason}")
            }
            ConfigError::EmptyBaseDomain => f.write_str("subdomain source: empty base domain"),
            ConfigError::InvalidLimits { reason } => write!(f, "request limits: {reason}"),
            ConfigError::NoDirectory => f.write_str(
                "tenancy resolves through the tenant directory, but the manager has none (polymongo's `directory` option)",
            ),
            ConfigError::MappingWithDirectory => f.write_str(
                "tenancy resolves through the tenant directory: its database_prefix names the databases; remove prefix/map",
            ),
        }
    }
}

impl std::error::Error for ConfigError {}
