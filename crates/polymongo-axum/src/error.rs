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
/// 500 only for a service set up without [`Tenancy::layer`](crate::Tenancy::layer).
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
    /// The allow policy refused the tenant. 404.
    Unknown,
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
            TenantError::ShuttingDown => Answer::ShuttingDown,
            TenantError::Busy => Answer::Busy,
            TenantError::Unavailable => Answer::Unavailable,
            TenantError::NoLayer => Answer::Misconfigured,
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
                tracing::warn!(error = %e, "tenant database could not be prepared");
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
    /// [`allow`](crate::TenancyBuilder::allow) or
    /// [`allow_async`](crate::TenancyBuilder::allow_async).
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
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NoSource => {
                f.write_str("tenancy has no tenant source and no default tenant")
            }
            ConfigError::NoAllowPolicy => f.write_str(
                "tenancy has tenant sources but no allow policy: set allow_list, allow or allow_async",
            ),
            ConfigError::InvalidPrefix { problem } => write!(f, "tenant prefix {problem}"),
            ConfigError::InvalidDefault { reason } => write!(f, "default tenant: {reason}"),
            ConfigError::InvalidAllowed { tenant, reason } => {
                write!(f, "allowed tenant {tenant:?}: {reason}")
            }
            ConfigError::EmptyBaseDomain => f.write_str("subdomain source: empty base domain"),
            ConfigError::InvalidLimits { reason } => write!(f, "request limits: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}
