//! What a request can be refused for, and how each refusal is answered.
//!
//! Every refusal is a small JSON body `{"error": "<code>", "message": "<text>"}` with a 4xx or
//! 503 status. The text is written here, never copied from the driver or the server: a driver
//! message can carry a host name, a query or a server's internals, and none of that belongs in
//! an answer to an anonymous client. The full error goes to the log (`tracing`) instead.

use std::fmt;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use polymongo::NameRule;
use serde::Serialize;

/// The JSON body of every refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// A stable, machine-readable code (`missing_tenant`, `invalid_tenant`, `unknown_tenant`,
    /// `busy`, `unavailable`, `shutting_down`, `conflict`, `outcome_unknown`, `database_error`).
    pub error: String,
    /// A short explanation for a human, with no driver or server text in it.
    pub message: String,
}

/// Why a request's tenant could not be resolved to a database handle.
///
/// The rejection of the [`Tenant`](crate::Tenant) and [`TenantDb`](crate::TenantDb)
/// extractors. As a response: 400 for a missing or malformed tenant, 404 for a tenant that is
/// not allowed (reserved databases included, so their existence is not confirmed), 503 when
/// the database side cannot take the request now. Never 500.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TenantError {
    /// No source named a tenant and no default is configured. 400.
    Missing,
    /// A source gave more than one value (two `X-Tenant` headers, say). 400: which one a proxy
    /// meant cannot be known.
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
    /// The allow-list refused the tenant. 404.
    Unknown,
    /// The manager is closing or closed. 503.
    ShuttingDown,
    /// The tenant's database is at its concurrency limit or its pool is exhausted. 503 with
    /// `Retry-After: 1`.
    Busy,
    /// The database could not be prepared (for example its indexes could not be created). 503.
    Unavailable,
}

/// What is wrong with a tenant name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameProblem {
    /// The value is empty.
    Empty,
    /// The value is not valid UTF-8 or not visible ASCII (a header).
    NotText,
    /// A character outside `A-Z a-z 0-9 _ -` (with the strict character set, the default).
    Character(char),
    /// The name does not start with a letter or a digit (strict character set).
    FirstCharacter,
    /// The database name made from it breaks a MongoDB rule.
    Database(NameRule),
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameProblem::Empty => f.write_str("must not be empty"),
            NameProblem::NotText => f.write_str("must be visible ASCII text"),
            NameProblem::Character(c) if c.is_ascii_graphic() => write!(
                f,
                "must contain only letters, digits, '_' and '-', not {c:?}"
            ),
            NameProblem::Character(_) => {
                f.write_str("must contain only letters, digits, '_' and '-'")
            }
            NameProblem::FirstCharacter => f.write_str("must start with a letter or a digit"),
            NameProblem::Database(rule) => write!(f, "makes a database name that {rule}"),
        }
    }
}

impl fmt::Display for TenantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TenantError::Missing => f.write_str("the request names no tenant"),
            TenantError::Ambiguous { source } => {
                write!(f, "the request names more than one tenant in its {source}")
            }
            TenantError::InvalidName { source, problem } => {
                write!(f, "the tenant name from the {source} {problem}")
            }
            TenantError::Reserved | TenantError::Unknown => f.write_str("unknown tenant"),
            TenantError::ShuttingDown => f.write_str("the service is shutting down"),
            TenantError::Busy => f.write_str("the tenant's database is busy; try again"),
            TenantError::Unavailable => f.write_str("the tenant's database is unavailable"),
        }
    }
}

impl std::error::Error for TenantError {}

impl TenantError {
    /// The HTTP status this refusal is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            TenantError::Missing
            | TenantError::Ambiguous { .. }
            | TenantError::InvalidName { .. } => StatusCode::BAD_REQUEST,
            TenantError::Reserved | TenantError::Unknown => StatusCode::NOT_FOUND,
            TenantError::ShuttingDown | TenantError::Busy | TenantError::Unavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The `error` code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            TenantError::Missing => "missing_tenant",
            TenantError::Ambiguous { .. } | TenantError::InvalidName { .. } => "invalid_tenant",
            TenantError::Reserved | TenantError::Unknown => "unknown_tenant",
            TenantError::ShuttingDown => "shutting_down",
            TenantError::Busy => "busy",
            TenantError::Unavailable => "unavailable",
        }
    }

    /// The refusal for a library error met while handing out the tenant's handle.
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
        match e.kind() {
            K::Closed => TenantError::ShuttingDown,
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
        json_error(self.status(), self.code(), self.to_string())
    }
}

/// A library or driver error returned by a handler, answered without its text.
///
/// `?` on a [`polymongo::Error`] or a driver error inside a handler returning
/// `Result<_, DbError>` gives: 409 `conflict` for a duplicate key, 503 (`busy`,
/// `unavailable`, `shutting_down`) when trying again later may work, 500 `outcome_unknown`
/// for a write that may or may not have been applied (never "try again"), else 500
/// `database_error`. The error itself is logged at `warn` (the library's `Display` redacts
/// passwords).
#[derive(Debug)]
pub struct DbError(pub polymongo::Error);

impl From<polymongo::Error> for DbError {
    fn from(e: polymongo::Error) -> Self {
        DbError(e)
    }
}

impl From<polymongo::mongodb::error::Error> for DbError {
    fn from(e: polymongo::mongodb::error::Error) -> Self {
        DbError(polymongo::Error::Driver(e))
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

fn is_duplicate_key(e: &polymongo::Error) -> bool {
    use polymongo::mongodb::error::{ErrorKind, WriteFailure};
    let Some(driver) = e.driver_error() else {
        return false;
    };
    match &*driver.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .is_some_and(|errs| errs.iter().any(|w| w.code == DUPLICATE_KEY)),
        _ => false,
    }
}

impl IntoResponse for DbError {
    fn into_response(self) -> Response {
        use polymongo::ErrorKind as K;
        let (status, code, message) = if is_duplicate_key(&self.0) {
            (
                StatusCode::CONFLICT,
                "conflict",
                "the document already exists",
            )
        } else {
            match self.0.kind() {
                K::Closed => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting_down",
                    "the service is shutting down",
                ),
                K::Saturated | K::PoolExhausted => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "the database is busy; try again",
                ),
                // A write that may have been applied: not "try again" (a client retrying a
                // non-idempotent write could apply it twice).
                _ if self.0.is_outcome_unknown() => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "outcome_unknown",
                    "the write may or may not have been applied; check before trying again",
                ),
                _ if self.0.is_retryable() => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable; try again",
                ),
                _ => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "database_error",
                    "the database operation failed",
                ),
            }
        };
        tracing::warn!(error = %self.0, status = status.as_u16(), "database error answered");
        json_error(status, code, message.to_owned())
    }
}

pub(crate) fn json_error(status: StatusCode, code: &str, message: String) -> Response {
    let body = ErrorBody {
        error: code.to_owned(),
        message,
    };
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// A [`Tenancy`](crate::Tenancy) that cannot be built: the builder names the setting.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// No tenant source was configured, and no default tenant either.
    NoSource,
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
    /// The subdomain source's base domain is empty.
    EmptyBaseDomain,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NoSource => {
                f.write_str("tenancy has no tenant source and no default tenant")
            }
            ConfigError::InvalidPrefix { problem } => write!(f, "tenant prefix {problem}"),
            ConfigError::InvalidDefault { reason } => write!(f, "default tenant: {reason}"),
            ConfigError::EmptyBaseDomain => f.write_str("subdomain source: empty base domain"),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod outcome_tests {
    use super::*;

    #[test]
    fn an_unknown_write_outcome_is_not_answered_try_again() {
        let unknown = DbError(polymongo::Error::Timeout {
            during: "running a transaction",
            after: std::time::Duration::from_secs(1),
            outcome_unknown: true,
        });
        assert_eq!(
            unknown.into_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let known = DbError(polymongo::Error::Timeout {
            during: "waiting",
            after: std::time::Duration::from_secs(1),
            outcome_unknown: false,
        });
        assert_eq!(
            known.into_response().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
