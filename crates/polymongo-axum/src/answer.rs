//! The one mapping from what happened to a request to what the client is told: status, code
//! and whether it may send the request again. Every refusal of this crate — tenant
//! rejections, database errors, deadlines, and axum's own rejections once the
//! [layer](crate::Tenancy::layer) has rewritten them — is answered through here, as one JSON
//! body, [`ErrorBody`].
//!
//! The retry rule: **`Retry-After` only when nothing of the request was applied** (refused
//! before its handler ran, or a failure that sent nothing) **and the cause is expected to pass
//! within a second or so** (a full pool, an unreachable server, a restart). An outcome the
//! service cannot know — a write sent and then cut, a deadline passed while the handler ran —
//! is answered 500 `outcome_unknown` or 504 `timeout`, never with `Retry-After`: a client that
//! retried could apply the write twice. A tenant that the directory says is being created or
//! restored is answered 503 `tenant_not_ready` without `Retry-After`: nothing was applied, but
//! when the tenant will be served is not known, so no time is promised.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

/// The JSON body of every refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable, machine-readable code: one of [`Answer`]'s (`missing_tenant`,
    /// `invalid_tenant`, `unknown_tenant`, `suspended_tenant`, `tenant_gone`,
    /// `tenant_not_ready`, `busy`, `unavailable`, `shutting_down`, `conflict`,
    /// `outcome_unknown`, `timeout`, `database_error`, `invalid_tenant_record`,
    /// `misconfigured`), or for axum's own
    /// rejections one named after the status (`bad_request`, `not_found`,
    /// `method_not_allowed`, `payload_too_large`, `unsupported_media_type`, `invalid_body`,
    /// `internal_error`).
    pub error: String,
    /// A short explanation for a human, with no driver or server text in it.
    pub message: String,
}

/// What a request that failed is answered: the one table of statuses and codes.
///
/// | answer | status | code | `Retry-After` |
/// |---|---|---|---|
/// | `MissingTenant` | 400 | `missing_tenant` | |
/// | `InvalidTenant` | 400 | `invalid_tenant` | |
/// | `UnknownTenant` | 404 | `unknown_tenant` | |
/// | `SuspendedTenant` | 403 | `suspended_tenant` | |
/// | `TenantGone` | 410 | `tenant_gone` | |
/// | `Conflict` | 409 | `conflict` | |
/// | `TenantNotReady` | 503 | `tenant_not_ready` | |
/// | `Busy` | 503 | `busy` | 1 |
/// | `ShuttingDown` | 503 | `shutting_down` | 1 |
/// | `Unavailable` | 503 | `unavailable` | 1 |
/// | `OutcomeUnknown` | 500 | `outcome_unknown` | |
/// | `Timeout` | 504 | `timeout` | |
/// | `DatabaseError` | 500 | `database_error` | |
/// | `InvalidTenantRecord` | 500 | `invalid_tenant_record` | |
/// | `Misconfigured` | 500 | `misconfigured` | |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// The request names no tenant.
    MissingTenant,
    /// The tenant name is malformed, ambiguous, or makes a database name MongoDB refuses.
    InvalidTenant,
    /// The tenant is not accepted (allow policy, reserved database, not in the tenant
    /// directory).
    UnknownTenant,
    /// The tenant directory has the tenant suspended: not served until it is resumed.
    SuspendedTenant,
    /// The tenant directory has the tenant archived, or being archived or deleted: not
    /// served, and not coming back by itself.
    TenantGone,
    /// The tenant directory has the tenant being created or restored: not served yet;
    /// nothing was applied, and no time is promised (no `Retry-After`).
    TenantNotReady,
    /// The write collides with existing data (duplicate key).
    Conflict,
    /// No place in the tenant's pool came free in time; nothing was sent.
    Busy,
    /// The service is closing; nothing was sent.
    ShuttingDown,
    /// The database cannot take the request now (unreachable, credentials refused);
    /// nothing was applied.
    Unavailable,
    /// A write may or may not have been applied.
    OutcomeUnknown,
    /// The request's deadline passed while its handler ran: it may or may not have taken
    /// effect.
    Timeout,
    /// The database refused the operation for a reason the same request will meet again.
    DatabaseError,
    /// The tenant's entry in the tenant directory is not valid (edited by hand?): the tenant
    /// is not served until an operator fixes it.
    InvalidTenantRecord,
    /// The service is set up wrongly (the tenancy layer is missing, or the directory does not
    /// match the service's clusters).
    Misconfigured,
}

impl Answer {
    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Answer::MissingTenant | Answer::InvalidTenant => StatusCode::BAD_REQUEST,
            Answer::UnknownTenant => StatusCode::NOT_FOUND,
            Answer::SuspendedTenant => StatusCode::FORBIDDEN,
            Answer::TenantGone => StatusCode::GONE,
            Answer::Conflict => StatusCode::CONFLICT,
            Answer::Busy | Answer::ShuttingDown | Answer::Unavailable | Answer::TenantNotReady => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Answer::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Answer::OutcomeUnknown
            | Answer::DatabaseError
            | Answer::InvalidTenantRecord
            | Answer::Misconfigured => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `error` code of the body.
    pub fn code(self) -> &'static str {
        match self {
            Answer::MissingTenant => "missing_tenant",
            Answer::InvalidTenant => "invalid_tenant",
            Answer::UnknownTenant => "unknown_tenant",
            Answer::SuspendedTenant => "suspended_tenant",
            Answer::TenantGone => "tenant_gone",
            Answer::TenantNotReady => "tenant_not_ready",
            Answer::Conflict => "conflict",
            Answer::Busy => "busy",
            Answer::ShuttingDown => "shutting_down",
            Answer::Unavailable => "unavailable",
            Answer::OutcomeUnknown => "outcome_unknown",
            Answer::Timeout => "timeout",
            Answer::DatabaseError => "database_error",
            Answer::InvalidTenantRecord => "invalid_tenant_record",
            Answer::Misconfigured => "misconfigured",
        }
    }

    /// Whether the client may send the same request again shortly: only when nothing of it
    /// was applied and the cause is expected to pass within a second or so. Exactly the
    /// answers sent with `Retry-After` (`busy`, `shutting_down`, `unavailable`);
    /// `tenant_not_ready` is a 503 that promises no time.
    pub fn may_retry(self) -> bool {
        matches!(
            self,
            Answer::Busy | Answer::ShuttingDown | Answer::Unavailable
        )
    }

    /// The message of the body when the caller has no more precise one.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Answer::MissingTenant => "the request names no tenant",
            Answer::InvalidTenant => "invalid tenant name",
            Answer::UnknownTenant => "unknown tenant",
            Answer::SuspendedTenant => "the tenant is suspended",
            Answer::TenantGone => "the tenant is no longer served",
            Answer::TenantNotReady => "the tenant is not ready to be served; nothing was done",
            Answer::Conflict => "the document already exists",
            Answer::Busy => "the tenant's database is busy; nothing was done, try again",
            Answer::ShuttingDown => "the service is shutting down; nothing was done, try again",
            Answer::Unavailable => "the database is unavailable; nothing was done, try again",
            Answer::OutcomeUnknown => {
                "the request may or may not have taken effect; check before trying again"
            }
            Answer::Timeout => {
                "the request took too long and may or may not have taken effect; check before trying again"
            }
            Answer::DatabaseError => "the database operation failed",
            Answer::InvalidTenantRecord => "the tenant's directory entry is invalid; nothing was done",
            Answer::Misconfigured => "the service is misconfigured",
        }
    }

    /// The response, with `message` in the body.
    pub(crate) fn respond(self, message: String) -> Response {
        json_body(self.status(), self.code(), message, self.may_retry())
    }
}

/// A JSON refusal made elsewhere (axum's rejections, a plain-text error of the application)
/// with `status`; `Retry-After` when the status is 503, as such a refusal is one the
/// application made before doing anything (see the module documentation).
pub(crate) fn json_refusal(status: StatusCode, code: &str, message: String) -> Response {
    json_body(
        status,
        code,
        message,
        status == StatusCode::SERVICE_UNAVAILABLE,
    )
}

/// A JSON refusal, with `Retry-After: 1` when `retry_after`.
fn json_body(status: StatusCode, code: &str, message: String, retry_after: bool) -> Response {
    let body = ErrorBody {
        error: code.to_owned(),
        message,
    };
    let mut response = (status, Json(body)).into_response();
    if retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Answer; 15] = [
        Answer::MissingTenant,
        Answer::InvalidTenant,
        Answer::UnknownTenant,
        Answer::SuspendedTenant,
        Answer::TenantGone,
        Answer::TenantNotReady,
        Answer::InvalidTenantRecord,
        Answer::Conflict,
        Answer::Busy,
        Answer::ShuttingDown,
        Answer::Unavailable,
        Answer::OutcomeUnknown,
        Answer::Timeout,
        Answer::DatabaseError,
        Answer::Misconfigured,
    ];

    #[test]
    fn only_answers_that_applied_nothing_say_retry() {
        for answer in ALL {
            let response = answer.respond(answer.message().to_owned());
            let retry_after = response.headers().contains_key(header::RETRY_AFTER);
            assert_eq!(retry_after, answer.may_retry(), "{answer:?}");
            assert_eq!(response.status(), answer.status(), "{answer:?}");
        }
        for unknown in [Answer::OutcomeUnknown, Answer::Timeout] {
            assert!(!unknown.may_retry());
            assert!(unknown.message().contains("may or may not"));
        }
        // A 503 that promises no time: nothing applied, but no Retry-After.
        assert_eq!(
            Answer::TenantNotReady.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(!Answer::TenantNotReady.may_retry());
        // Every answer that says "try again" is a 503 for a request that did nothing.
        for answer in ALL.into_iter().filter(|a| a.may_retry()) {
            assert_eq!(
                answer.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{answer:?}"
            );
            assert!(answer.message().contains("nothing was done"), "{answer:?}");
        }
    }
}
