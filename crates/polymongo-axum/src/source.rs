//! Where a request names its tenant: a header, the subdomain of `Host`, a path parameter, or
//! the application's own function.

use std::fmt;
use std::sync::Arc;

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};

use crate::error::{NameProblem, TenantError};
use crate::host::{request_host, subdomain_of};

type CustomFn = dyn Fn(&Parts) -> Option<String> + Send + Sync;

/// One place a request may name its tenant. A [`Tenancy`](crate::Tenancy) tries its sources in
/// the order they were added; the first that finds a value decides. One rule for every source:
/// a value that is **present but invalid is refused** (400) — not skipped — so the next
/// source, which the client may also control, can never "correct" it: a bad header, a `Host`
/// that is not a host, a path parameter that is not UTF-8 once decoded.
#[derive(Clone)]
pub enum TenantSource {
    /// A request header, e.g. `X-Tenant`. Absent: not found. Two or more, or not visible
    /// ASCII: refused (400).
    Header(HeaderName),
    /// The label(s) of the request's host before `.base`: with base `example.com`,
    /// `acme.example.com:8080` names `acme`. The host is the request target's authority when
    /// the target is in absolute form (RFC 9112 §3.2.2) or with HTTP/2, else the one `Host`
    /// header (two: refused; one that is not a valid host: refused). Host names are
    /// case-insensitive, so the host is read lower-cased. A host that is `base` itself or is
    /// not under `base`: not found.
    Subdomain {
        /// The domain the tenants are subdomains of, lower-case, without a leading dot.
        base: String,
    },
    /// A parameter of the matched route, e.g. `tenant` in `/t/{tenant}/notes`, as axum decodes
    /// it (percent-decoded). A route without parameters: not found. A path whose parameters
    /// are not UTF-8 once decoded: refused.
    PathParam(String),
    /// The application's own rule, e.g. a claim of a token that a middleware verified and put
    /// in the request's extensions. `None`: not found. Return `Some` whenever the request
    /// names a tenant, even one that looks wrong: the policy refuses it, while `None` lets the
    /// next source decide.
    Custom(Arc<CustomFn>),
}

impl fmt::Debug for TenantSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TenantSource::Header(h) => f.debug_tuple("Header").field(h).finish(),
            TenantSource::Subdomain { base } => {
                f.debug_struct("Subdomain").field("base", base).finish()
            }
            TenantSource::PathParam(p) => f.debug_tuple("PathParam").field(p).finish(),
            TenantSource::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl fmt::Display for TenantSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TenantSource::Header(h) => write!(f, "header {h}"),
            TenantSource::Subdomain { .. } => f.write_str("subdomain"),
            TenantSource::PathParam(p) => write!(f, "path parameter {p}"),
            TenantSource::Custom(_) => f.write_str("application rule"),
        }
    }
}

/// The one value of header `name`, if present; two or more are refused, since which one a
/// proxy meant cannot be known.
pub(crate) fn single_header<'a>(
    parts: &'a Parts,
    name: &HeaderName,
    source: &str,
) -> Result<Option<&'a HeaderValue>, TenantError> {
    let mut values = parts.headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(TenantError::Ambiguous {
            source: source.to_owned(),
        });
    }
    Ok(first)
}

impl TenantSource {
    /// The raw tenant value this source finds in the request, if any.
    ///
    /// # Errors
    /// A value that is present but cannot be read: [`TenantError::Ambiguous`],
    /// [`TenantError::InvalidName`].
    pub(crate) async fn find(&self, parts: &mut Parts) -> Result<Option<String>, TenantError> {
        let invalid = |problem| TenantError::InvalidName {
            source: self.to_string(),
            problem,
        };
        match self {
            TenantSource::Header(name) => {
                let Some(value) = single_header(parts, name, &self.to_string())? else {
                    return Ok(None);
                };
                let text = value.to_str().map_err(|_| invalid(NameProblem::NotText))?;
                Ok(Some(text.to_owned()))
            }
            TenantSource::Subdomain { base } => {
                Ok(request_host(parts, &self.to_string())?
                    .and_then(|host| subdomain_of(&host, base)))
            }
            TenantSource::PathParam(wanted) => {
                match RawPathParams::from_request_parts(parts, &()).await {
                    Ok(params) => Ok(params
                        .iter()
                        .find(|(k, _)| k == wanted)
                        .map(|(_, v)| v.to_owned())),
                    // axum keeps no parameter at all when one is not UTF-8 once decoded, so
                    // the tenant's cannot be read: the path is refused, not skipped.
                    Err(RawPathParamsRejection::InvalidUtf8InPathParam(_)) => {
                        Err(invalid(NameProblem::NotText))
                    }
                    // A route without parameters names no tenant here.
                    Err(_) => Ok(None),
                }
            }
            TenantSource::Custom(f) => Ok(f(parts)),
        }
    }
}
