//! Tenants resolved through polymongo's tenant directory
//! ([`TenancyBuilder::directory`](crate::TenancyBuilder::directory)): the route of a request's
//! tenant, kept in the request for its extractors, and what each answer of the directory is
//! told to the client.

use polymongo::tenants::{Tenant as Routed, TenantError as DirectoryError, TenantState};
use polymongo::PolyMongo;

use crate::db_error::{is_shutdown, DbError};
use crate::error::{NameProblem, TenantError};

/// The request's tenant as the directory routed it: its database on its cluster. Kept in the
/// request's extensions, so that every extractor of the request works on this route (the
/// cluster the directory named), never on a route made again by database name.
#[derive(Clone)]
pub(crate) struct RoutedTenant(pub(crate) Routed);

/// Routes `tenant` (already checked against the name rules) through the directory: a cache
/// lookup when this instance has its entry, else one read shared by concurrent requests.
pub(crate) async fn route(
    poly: &PolyMongo,
    tenant: &str,
    source: &str,
) -> Result<Routed, TenantError> {
    poly.tenant(tenant)
        .await
        .map_err(|e| from_directory(e, source))
}

/// What a refusal of the directory is answered with. The body never carries the directory's
/// own text (field names, cluster names, database names): only the tenant id, where it helps.
pub(crate) fn from_directory(e: polymongo::Error, source: &str) -> TenantError {
    let polymongo::Error::Tenant(t) = &e else {
        return from_read(e);
    };
    match &**t {
        DirectoryError::InvalidId { .. } => TenantError::InvalidName {
            source: source.to_owned(),
            problem: NameProblem::RefusedByDirectory,
        },
        DirectoryError::Unknown { .. } => TenantError::Unknown,
        DirectoryError::Suspended { .. } => TenantError::Suspended,
        DirectoryError::NotServing { state, .. } => {
            match TenantState::parse(state) {
                Some(TenantState::Archiving | TenantState::Archived | TenantState::Deleting) => {
                    TenantError::Gone {
                        state: state.clone(),
                    }
                }
                // Creating, restoring, and any state this version does not know: not served
                // now, nothing applied, no time promised.
                _ => TenantError::NotReady {
                    state: state.clone(),
                },
            }
        }
        // Nothing was sent: the instance lost touch with the directory past its bound.
        DirectoryError::Stale { .. } => {
            tracing::warn!(error = %e.redacted(), "tenant refused: the directory has not been read for too long");
            TenantError::Unavailable
        }
        DirectoryError::InvalidRecord { tenant, .. } => {
            tracing::error!(error = %e.redacted(), "tenant directory entry is invalid; the tenant is not served");
            TenantError::InvalidRecord {
                tenant: tenant.clone(),
            }
        }
        _ => {
            tracing::error!(error = %e.redacted(), "the tenant directory does not match this service");
            TenantError::DirectoryMismatch
        }
    }
}

/// A failed read of the directory: before the handler, so a close or a full pool refused it
/// before anything was done; any other error is answered as in a handler ([`DbError`]), which
/// never tells a client to retry what may have been applied.
fn from_read(e: polymongo::Error) -> TenantError {
    use polymongo::ErrorKind as K;
    match e.kind() {
        K::Closed => TenantError::ShuttingDown,
        _ if is_shutdown(&e) => TenantError::ShuttingDown,
        K::Saturated | K::PoolExhausted => TenantError::Busy,
        _ => {
            tracing::warn!(error = %e.redacted(), "tenant directory could not be read");
            TenantError::Directory {
                answer: DbError(e).answer(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::Answer;
    use axum::http::StatusCode;
    use std::time::Duration;

    fn tenant_error(t: DirectoryError) -> polymongo::Error {
        polymongo::Error::Tenant(Box::new(t))
    }

    #[test]
    fn each_directory_answer_has_its_status() {
        let not_serving = |state: &str| {
            from_directory(
                tenant_error(DirectoryError::NotServing {
                    tenant: "acme".into(),
                    state: state.into(),
                }),
                "header x-tenant",
            )
        };
        let cases = [
            (
                from_directory(
                    tenant_error(DirectoryError::InvalidId {
                        tenant: "acme".into(),
                        problem: "database \"admin\" is reserved".into(),
                    }),
                    "header x-tenant",
                ),
                StatusCode::BAD_REQUEST,
            ),
            (
                from_directory(
                    tenant_error(DirectoryError::Unknown {
                        tenant: "acme".into(),
                    }),
                    "h",
                ),
                StatusCode::NOT_FOUND,
            ),
            (
                from_directory(
                    tenant_error(DirectoryError::Suspended {
                        tenant: "acme".into(),
                    }),
                    "h",
                ),
                StatusCode::FORBIDDEN,
            ),
            (not_serving("creating"), StatusCode::SERVICE_UNAVAILABLE),
            (not_serving("restoring"), StatusCode::SERVICE_UNAVAILABLE),
            (not_serving("archiving"), StatusCode::GONE),
            (not_serving("archived"), StatusCode::GONE),
            (not_serving("deleting"), StatusCode::GONE),
            (
                from_directory(
                    tenant_error(DirectoryError::InvalidRecord {
                        tenant: "acme".into(),
                        field: "cluster".into(),
                        problem: "\"cell_z\" is not a configured cluster".into(),
                    }),
                    "h",
                ),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                from_directory(tenant_error(DirectoryError::NoDirectory), "h"),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(error.status(), status, "{error:?}");
            // Only "busy", "shutting down" and "unavailable" promise a retry.
            assert!(!error.answer().may_retry(), "{error:?}");
        }
        // The body of an invalid record names the tenant, and nothing of the entry.
        let invalid = from_directory(
            tenant_error(DirectoryError::InvalidRecord {
                tenant: "acme".into(),
                field: "cluster".into(),
                problem: "\"cell_z\" is not a configured cluster".into(),
            }),
            "h",
        )
        .to_string();
        assert!(invalid.contains("\"acme\""), "{invalid}");
        for leak in ["cluster", "cell_z", "field"] {
            assert!(!invalid.contains(leak), "{invalid}");
        }
    }

    #[test]
    fn a_failed_read_is_answered_as_a_database_error_and_never_retry_when_unknown() {
        let cut = from_directory(
            polymongo::Error::Timeout {
                during: "reading the directory",
                after: Duration::from_secs(1),
                outcome_unknown: true,
            },
            "h",
        );
        assert_eq!(cut.answer(), Answer::OutcomeUnknown);
        assert!(!cut.answer().may_retry());
        let refused = from_directory(
            polymongo::Error::Timeout {
                during: "reading the directory",
                after: Duration::from_secs(1),
                outcome_unknown: false,
            },
            "h",
        );
        assert_eq!(refused.answer(), Answer::Unavailable);
        assert_eq!(
            from_directory(polymongo::Error::Closed, "h"),
            TenantError::ShuttingDown
        );
    }
}
