//! The one mapping from what happened to a request to what the client is told: status, code
//! and whether it may send the request again. Every refusal of this crate — tenant
//! rejections, database errors, deadlines, and axum's own rejections once the
//! [layer](crate::Tenancy::layer) has rewritten them — is answered through here, as one JSON
//! body, [`ErrorBody`].
//!
//! The retry rule: **503 with `Retry-After` only when nothing of the request was applied**
//! (refused before its handler ran, or a failure that sent nothing). An outcome the service
//! cannot know — a write sent and then cut, a deadline passed while the handler ran — is
//! answered 500 `outcome_unknown` or 504 `timeout`, never with `Retry-After`: a client that
//! retried could apply the write twice.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

/// The JSON body of every refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable, machine-readable code: one of [`Answer`]'s (`missing_tenant`,
    /// `invalid_tenant`, `unknown_tenant`, `busy`, `unavailable`, `shutting_down`, `conflict`,
    /// `outcome_unknown`, `timeout`, `database_error`, `misconfigured`), or for axum's own
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
/// | `Conflict` | 409 | `conflict` | |
/// | `Busy` | 503 | `busy` | 1 |
/// | `ShuttingDown` | 503 | `shutting_down` | 1 |
/// | `Unavailable` | 503 | `unavailable` | 1 |
/// | `OutcomeUnknown` | 500 | `outcome_unknown` | |
/// | `Timeout` | 504 | `timeout` | |
/// | `DatabaseError` | 500 | `database_error` | |
/// | `Misconfigured` | 500 | `misconfigured` | |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// The request names no tenant.
    MissingTenant,
    /// The tenant name is malformed, ambiguous, or makes a database name MongoDB refuses.
    InvalidTenant,
    /// The tenant is not accepted (allow policy, reserved database).
    UnknownTenant,
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
    /// The service is set up wrongly (the tenancy layer is missing).
    Misconfigured,
}

impl Answer {
    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Answer::MissingTenant | Answer::InvalidTenant => StatusCode::BAD_REQUEST,
            Answer::UnknownTenant => StatusCode::NOT_FOUND,
            Answer::Conflict => StatusCode::CONFLICT,
            Answer::Busy | Answer::ShuttingDown | Answer::Unavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Answer::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Answer::OutcomeUnknown | Answer::DatabaseError | Answer::Misconfigured => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The `error` code of the body.
    pub fn code(self) -> &'static str {
        match self {
            Answer::MissingTenant => "missing_tenant",
            Answer::InvalidTenant => "invalid_tenant",
            Answer::UnknownTenant => "unknown_tenant",
            Answer::Conflict => "conflict",
            Answer::Busy => "busy",
            Answer::ShuttingDown => "shutting_down",
            Answer::Unavailable => "unavailable",
            Answer::OutcomeUnknown => "outcome_unknown",
            Answer::Timeout => "timeout",
            Answer::DatabaseError => "database_error",
            Answer::Misconfigured => "misconfigured",
        }
    }

    /// Whether the client may send the same request again: only when nothing of it was
    /// applied. Exactly the answers sent with `Retry-After`.
    pub fn may_retry(self) -> bool {
        self.status() == StatusCode::SERVICE_UNAVAILABLE
    }

    /// The message of the body when the caller has no more precise one.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Answer::MissingTenant => "the request names no tenant",
            Answer::InvalidTenant => "invalid tenant name",
            Answer::UnknownTenant => "unknown tenant",
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
            Answer::Misconfigured => "the service is misconfigured",
        }
    }

    /// The response, with `message` in the body.
    pub(crate) fn respond(self, message: String) -> Response {
        json_refusal(self.status(), self.code(), message)
    }
}

/// A JSON refusal with `status`; `Retry-After` exactly when the status is 503 (see the module
/// documentation for why that is the one retry rule).
pub(crate) fn json_refusal(status: StatusCode, code: &str, message: String) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Answer; 11] = [
        Answer::MissingTenant,
        Answer::InvalidTenant,
        Answer::UnknownTenant,
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
    }
}
