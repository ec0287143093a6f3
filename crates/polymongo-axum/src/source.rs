//! Where a request names its tenant: a header, the subdomain of `Host`, a path parameter, or
//! the application's own function.

use std::fmt;
use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::header::HOST;
use axum::http::request::Parts;
use axum::http::HeaderName;

use crate::error::{NameProblem, TenantError};

type CustomFn = dyn Fn(&Parts) -> Option<String> + Send + Sync;

/// One place a request may name its tenant. A [`Tenancy`](crate::Tenancy) tries its sources in
/// the order they were added; the first that finds a value decides, and a value that is then
/// refused is refused: the next source is not tried, so a bad header cannot be "corrected" by
/// a subdomain the client also controls.
#[derive(Clone)]
pub enum TenantSource {
    /// A request header, e.g. `X-Tenant`. Absent: not found. Two or more: refused (400).
    Header(HeaderName),
    /// The first label(s) of the `Host` header (or of the URI's authority, with HTTP/2) before
    /// `.base`: with base `example.com`, `acme.example.com:8080` names `acme`. DNS names are
    /// case-insensitive, so the label is lower-cased. A host that is `base` itself or is not
    /// under `base`: not found.
    Subdomain {
        /// The domain the tenants are subdomains of, without a leading dot.
        base: String,
    },
    /// A parameter of the matched route, e.g. `tenant` in `/t/{tenant}/notes`, as axum decodes
    /// it (percent-decoded). A route without it: not found.
    PathParam(String),
    /// The application's own rule, e.g. a claim of a token that a middleware verified and put
    /// in the request's extensions. `None`: not found.
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

impl TenantSource {
    /// The raw tenant value this source finds in the request, if any.
    pub(crate) async fn find(&self, parts: &mut Parts) -> Result<Option<String>, TenantError> {
        match self {
            TenantSource::Header(name) => {
                let mut values = parts.headers.get_all(name).iter();
                let Some(value) = values.next() else {
                    return Ok(None);
                };
                if values.next().is_some() {
                    return Err(TenantError::Ambiguous {
                        source: self.to_string(),
                    });
                }
                match value.to_str() {
                    Ok(v) => Ok(Some(v.to_owned())),
                    Err(_) => Err(TenantError::InvalidName {
                        source: self.to_string(),
                        problem: NameProblem::NotText,
                    }),
                }
            }
            TenantSource::Subdomain { base } => {
                let host = match parts.headers.get(HOST) {
                    Some(h) => h.to_str().ok().map(str::to_owned),
                    None => parts.uri.authority().map(|a| a.as_str().to_owned()),
                };
                Ok(host.and_then(|h| subdomain_of(&h, base)))
            }
            TenantSource::PathParam(wanted) => {
                // A route without parameters makes this extractor fail; that is "not found".
                let Ok(params) = RawPathParams::from_request_parts(parts, &()).await else {
                    return Ok(None);
                };
                Ok(params
                    .iter()
                    .find(|(k, _)| k == wanted)
                    .map(|(_, v)| v.to_owned()))
            }
            TenantSource::Custom(f) => Ok(f(parts)),
        }
    }
}

/// The part of `host` (port removed, lower-cased) before `.base`, if `host` is under `base`.
fn subdomain_of(host: &str, base: &str) -> Option<String> {
    let host = strip_port(host).to_ascii_lowercase();
    let base = base.to_ascii_lowercase();
    let label = host.strip_suffix(base.as_str())?.strip_suffix('.')?;
    // An empty label (`.example.com`) names no tenant rather than an empty one.
    (!label.is_empty()).then(|| label.to_owned())
}

fn strip_port(host: &str) -> &str {
    // IPv6 literals (`[::1]:80`) are never under a base domain; leave them whole.
    if host.starts_with('[') {
        return host;
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains_are_found_under_the_base_only() {
        assert_eq!(
            subdomain_of("acme.example.com", "example.com").as_deref(),
            Some("acme")
        );
        assert_eq!(
            subdomain_of("ACME.Example.com:8080", "example.com").as_deref(),
            Some("acme")
        );
        assert_eq!(
            subdomain_of("a.b.example.com", "example.com").as_deref(),
            Some("a.b")
        );
        assert_eq!(subdomain_of("example.com", "example.com"), None);
        assert_eq!(subdomain_of("acmeexample.com", "example.com"), None);
        assert_eq!(subdomain_of("acme.other.com", "example.com"), None);
        assert_eq!(subdomain_of(".example.com", "example.com"), None);
        assert_eq!(subdomain_of("[::1]:80", "example.com"), None);
    }
}
