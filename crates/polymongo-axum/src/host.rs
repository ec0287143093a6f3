//! Which host a request is for, and the subdomain label under a base domain.
//!
//! RFC 9112 §3.2.2: a request target in absolute form (`GET http://acme.example.com/ HTTP/1.1`)
//! names the host, and the `Host` header is then ignored; HTTP/2 carries it as `:authority`,
//! which the server also puts in the URI. Otherwise the `Host` header does, once. Host names
//! are case-insensitive (RFC 4343), so the host is read lower-cased, with one trailing dot (a
//! fully qualified name) dropped.

use std::str::FromStr;

use axum::http::header::HOST;
use axum::http::request::Parts;
use axum::http::uri::Authority;

use crate::error::{NameProblem, TenantError};
use crate::source::single_header;

/// The request's host, lower-cased, without port; `None` when the request names none.
///
/// # Errors
/// Two `Host` headers ([`TenantError::Ambiguous`]); a `Host` that is not text or not a valid
/// host ([`TenantError::InvalidName`]): present but invalid is refused, never skipped.
pub(crate) fn request_host(parts: &Parts, source: &str) -> Result<Option<String>, TenantError> {
    if let Some(authority) = parts.uri.authority() {
        return host_of(authority, source).map(Some);
    }
    let Some(value) = single_header(parts, &HOST, source)? else {
        return Ok(None);
    };
    let invalid = |problem| TenantError::InvalidName {
        source: source.to_owned(),
        problem,
    };
    let text = value.to_str().map_err(|_| invalid(NameProblem::NotText))?;
    let authority = Authority::from_str(text).map_err(|_| invalid(NameProblem::NotAHost))?;
    host_of(&authority, source).map(Some)
}

fn host_of(authority: &Authority, source: &str) -> Result<String, TenantError> {
    // A `Host` never carries user information; `user@host` is a request trying to confuse
    // whatever reads the host next.
    if authority.as_str().contains('@') {
        return Err(TenantError::InvalidName {
            source: source.to_owned(),
            problem: NameProblem::NotAHost,
        });
    }
    let host = authority.host().to_ascii_lowercase();
    Ok(match host.strip_suffix('.') {
        Some(fqdn) => fqdn.to_owned(),
        None => host,
    })
}

/// The part of `host` (already lower-cased, no port) before `.base`, if `host` is under `base`
/// (`base` lower-case). An empty label (`.example.com`) is returned as such, for the name
/// rules to refuse: the host is under the base, and names an invalid tenant.
pub(crate) fn subdomain_of(host: &str, base: &str) -> Option<String> {
    host.strip_suffix(base)?
        .strip_suffix('.')
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(uri: &str, hosts: &[&[u8]]) -> Parts {
        let mut builder = Request::builder().uri(uri);
        for h in hosts {
            builder = builder.header(HOST, *h);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_host_comes_from_the_target_first_then_the_one_host_header() {
        let host = |uri, hosts| request_host(&parts(uri, hosts), "subdomain");
        assert_eq!(
            host("/x", &[b"ACME.Example.com:8080"]).unwrap().as_deref(),
            Some("acme.example.com")
        );
        assert_eq!(
            host("http://a.example.com/x", &[b"b.example.com"])
                .unwrap()
                .as_deref(),
            Some("a.example.com")
        );
        assert_eq!(
            host("/x", &[b"acme.example.com."]).unwrap().as_deref(),
            Some("acme.example.com")
        );
        assert_eq!(host("/x", &[]).unwrap(), None);
        assert!(matches!(
            host("/x", &[b"a.example.com", b"b.example.com"]),
            Err(TenantError::Ambiguous { .. })
        ));
        for bad in [
            &b"a b.example.com"[..],
            b"u@a.example.com",
            b"\xffa.example.com",
        ] {
            let found = request_host(&parts("/x", &[bad]), "subdomain");
            assert!(
                matches!(found, Err(TenantError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn subdomains_are_found_under_the_base_only() {
        assert_eq!(
            subdomain_of("acme.example.com", "example.com").as_deref(),
            Some("acme")
        );
        assert_eq!(
            subdomain_of("a.b.example.com", "example.com").as_deref(),
            Some("a.b")
        );
        assert_eq!(subdomain_of("example.com", "example.com"), None);
        assert_eq!(subdomain_of("acmeexample.com", "example.com"), None);
        assert_eq!(subdomain_of("acme.other.com", "example.com"), None);
        assert_eq!(
            subdomain_of(".example.com", "example.com").as_deref(),
            Some("")
        );
        assert_eq!(subdomain_of("[::1]", "example.com"), None);
    }
}
