//! Keeping credentials out of every string the library produces.
//!
//! Connection strings carry secrets: the password (`mongodb://user:secret@host`) and
//! secret-bearing options (`proxyPassword`, `tlsCertificateKeyFilePassword`,
//! `authMechanismProperties=AWS_SESSION_TOKEN:…`). Every place that shows a URI — logs,
//! errors, `Debug`, stats, metric labels — goes through [`redact_uri`], and every driver
//! message about a URI goes through [`scrub`] before it is stored, so the secret never enters
//! an error value in the first place. Both rest on one parse, [`Parts`], that understands
//! what it can and hides the rest: whatever stands between the scheme (or the start of the
//! string) and the host when an `@` says there are credentials, however malformed the
//! scheme, and the value of every option whose name is known or looks secret.

/// Options whose value is a secret, whatever else the name says (compared without case).
const SECRET_OPTIONS: [&str; 5] = [
    "password",
    "proxypassword",
    "tlscertificatekeyfilepassword",
    "sslclientcertificatekeypassword",
    "authmechanismproperties",
];

/// Words that make any option's value secret when its name contains them.
const SECRET_WORDS: [&str; 9] = [
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "credential",
    "key",
    "auth",
    "session",
];

/// Options with one of [`SECRET_WORDS`] in their name that are not secret and are worth
/// showing.
const PUBLIC_OPTIONS: [&str; 2] = ["authsource", "authmechanism"];

/// What replaces a secret.
const HIDDEN: &str = "***";

/// Whether the value of option `name` must be hidden: a known secret-bearing option, or a
/// name that suggests a secret.
pub(crate) fn is_secret_option(name: &str) -> bool {
    let lower = name.trim().to_ascii_lowercase();
    if SECRET_OPTIONS.contains(&lower.as_str()) {
        return true;
    }
    if PUBLIC_OPTIONS.contains(&lower.as_str()) {
        return false;
    }
    SECRET_WORDS.iter().any(|w| lower.contains(w))
}

/// A connection string cut where it can be: the scheme as written (possibly misspelt or
/// absent), the user information (everything up to the `@` before the host), the host list
/// and path, and the query.
struct Parts<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    hosts: &'a str,
    query: Option<&'a str>,
}

impl<'a> Parts<'a> {
    fn parse(uri: &'a str) -> Self {
        let scheme_end = scheme_end(uri);
        let (scheme, rest) = uri.split_at(scheme_end);
        let (userinfo, after) = match userinfo_end(rest) {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (hosts, query) = match after.find('?') {
            Some(q) => (&after[..q], Some(&after[q + 1..])),
            None => (after, None),
        };
        Parts {
            scheme,
            userinfo,
            hosts,
            query,
        }
    }

    /// Whether the string looks like a connection string the driver would parse: a known
    /// scheme written right and a user name without odd characters.
    fn well_formed(&self) -> bool {
        matches!(self.scheme, "mongodb://" | "mongodb+srv://")
            && self.userinfo.is_none_or(|u| {
                let user = u.split(':').next().unwrap_or_default();
                !user.is_empty()
                    && user
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-._~%!$'()*+,;=".contains(c))
            })
    }

    /// Every secret this string holds, raw and percent-decoded, longest first.
    fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(userinfo) = self.userinfo {
            out.push(userinfo.to_owned());
            if let Some((_, password)) = userinfo.split_once(':') {
                out.push(password.to_owned());
            }
        }
        for (key, value) in self.options() {
            if is_secret_option(key) {
                push_secret_value(&mut out, value);
            }
        }
        finish_secrets(out)
    }

    fn options(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.query
            .unwrap_or_default()
            .split(['&', ';'])
            .filter(|o| !o.is_empty())
            .map(|o| o.split_once('=').unwrap_or((o, "")))
    }

    fn redacted(&self) -> String {
        let mut out = String::from(self.scheme);
        if let Some(userinfo) = self.userinfo {
            match userinfo.split_once(':') {
                Some((user, _)) if self.well_formed() => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(HIDDEN);
                }
                None if self.well_formed() => out.push_str(userinfo),
                _ => out.push_str(HIDDEN),
            }
            out.push('@');
        }
        out.push_str(self.hosts);
        if let Some(query) = self.query {
            out.push('?');
            for option in query.split_inclusive(['&', ';']) {
                let (body, sep) = match option.strip_suffix(['&', ';']) {
                    Some(b) => (b, &option[b.len()..]),
                    None => (option, ""),
                };
                match body.split_once('=') {
                    Some((key, _)) if is_secret_option(key) => {
                        out.push_str(key);
                        out.push('=');
                        out.push_str(HIDDEN);
                    }
                    _ => out.push_str(body),
                }
                out.push_str(sep);
            }
        }
        out
    }
}

/// Where the scheme ends: after `name:` and the slashes that follow, for any name made of
/// scheme characters (`mongodb://`, `mongodb:/`, `mongodb+srv:///`, `mongdb://`); 0 when
/// there is no scheme.
fn scheme_end(uri: &str) -> usize {
    let Some(colon) = uri.find(':') else {
        return 0;
    };
    let name = &uri[..colon];
    let scheme_like = !name.is_empty()
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    let slashes = uri[colon + 1..].len() - uri[colon + 1..].trim_start_matches('/').len();
    if scheme_like && slashes > 0 {
        colon + 1 + slashes
    } else {
        0
    }
}

/// The `@` that ends the user information in `rest` (what follows the scheme), if any.
///
/// The first `@` followed by a host list whose prefix is not itself a host list with a
/// query (`host/?appName=a@b` has no user information). When no `@` is followed by a host
/// list, the last `@` whose prefix is not a host list, so that a malformed string hides more
/// rather than less.
fn userinfo_end(rest: &str) -> Option<usize> {
    let ats: Vec<usize> = rest.match_indices('@').map(|(i, _)| i).collect();
    let prefix_is_hosts = |at: usize| {
        let prefix = &rest[..at];
        match prefix.find('?') {
            Some(q) => is_host_list(prefix[..q].split('/').next().unwrap_or_default()),
            None => false,
        }
    };
    let followed_by_hosts = |at: usize| {
        let after = &rest[at + 1..];
        let end = after.find(['/', '?']).unwrap_or(after.len());
        is_host_list(&after[..end])
    };
    ats.iter()
        .copied()
        .find(|&at| followed_by_hosts(at) && !prefix_is_hosts(at))
        .or_else(|| ats.iter().copied().rev().find(|&at| !prefix_is_hosts(at)))
}

/// `host`, `host:port`, `[v6]:port`, comma-separated.
fn is_host_list(s: &str) -> bool {
    !s.is_empty()
        && s.split(',').all(|host| {
            let (name, port) = if let Some(v6) = host.strip_prefix('[') {
                match v6.split_once(']') {
                    Some((_, rest)) => ("v6", rest.strip_prefix(':')),
                    None => return false,
                }
            } else {
                match host.rsplit_once(':') {
                    Some((n, p)) => (n, Some(p)),
                    None => (host, None),
                }
            };
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._%".contains(c))
                && port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        })
}

/// Hides the credentials of a connection string: the user information's password (all of
/// it, user included, when the string is malformed) and the value of every secret-bearing
/// option.
///
/// Works on any string, malformed ones included (that is when errors are shown): a
/// misspelt or missing scheme, an unescaped `@`, `/`, `?` or `:` in the password, an `@` in
/// the query. A string without credentials comes back unchanged.
///
/// ```
/// assert_eq!(
///     polymongo::redact_uri("mongodb://ops:S3cr3t@db.example/app?proxyPassword=x&w=1"),
///     "mongodb://ops:***@db.example/app?proxyPassword=***&w=1"
/// );
/// assert_eq!(polymongo::redact_uri("mongodb:/ops:S3cr3t@host"), "mongodb:/***@host");
/// ```
pub fn redact_uri(uri: &str) -> String {
    let mut out = Parts::parse(uri).redacted();
    // A second net for strings too malformed to cut right: every value of a secret option
    // found anywhere, and the user information's password, go.
    for secret in loose_secrets(uri) {
        if secret.len() >= 3 && out.contains(&secret) {
            out = out.replace(&secret, HIDDEN);
        }
    }
    out
}

/// Secrets found without trusting the structure: the value of every `name=value` whose
/// name is secret, wherever it stands after a `?`, `&` or `;`, raw and percent-decoded.
fn loose_secrets(uri: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(q) = uri.find('?') {
        for option in uri[q + 1..].split(['&', ';', '?']) {
            if let Some((key, value)) = option.split_once('=') {
                let key = key.rsplit(['@', '/']).next().unwrap_or(key);
                if is_secret_option(key) {
                    push_secret_value(&mut out, value);
                }
            }
        }
    }
    finish_secrets(out)
}

/// Adds a secret option's value, and for `authMechanismProperties=AWS_SESSION_TOKEN:abc,…`
/// each property's value as well.
fn push_secret_value(out: &mut Vec<String>, value: &str) {
    if value.is_empty() {
        return;
    }
    out.push(value.to_owned());
    for property in value.split(',') {
        if let Some((_, v)) = property.split_once(':') {
            out.push(v.to_owned());
        }
    }
}

/// The secrets to hide, raw and percent-decoded, longest first (so a secret containing
/// another is replaced whole).
fn finish_secrets(mut out: Vec<String>) -> Vec<String> {
    let decoded: Vec<String> = out.iter().map(|s| percent_decode(s)).collect();
    out.extend(decoded);
    out.retain(|s| !s.is_empty());
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// Removes every secret of `uri` (raw and percent-decoded forms) from `message`, and shows
/// `uri` itself redacted where the message quotes it.
pub(crate) fn scrub(message: &str, uri: &str) -> String {
    let parts = Parts::parse(uri);
    let mut out = if uri.is_empty() {
        message.to_owned()
    } else {
        message.replace(uri, &parts.redacted())
    };
    for secret in parts.secrets().into_iter().chain(loose_secrets(uri)) {
        out = out.replace(&secret, HIDDEN);
    }
    out
}

/// Removes the values quoted in a deserialisation error (serde's `invalid type: string
/// "…"`, `invalid value: …`, `unknown variant `…``), which can be a URI with its password,
/// keeping what was expected and where; a key quoted in backquotes (`duplicate key `…``,
/// `unknown field `…``) is kept with any credentials redacted.
///
/// ```
/// let message = r#"invalid type: string "mongodb://u:pw@h", expected u32"#;
/// assert_eq!(polymongo::redact_config_error(message), "invalid type: string, expected u32");
/// assert_eq!(
///     polymongo::redact_config_error("duplicate key `mongodb://u:pw@h` in table `clusters`"),
///     "duplicate key `mongodb://u:***@h` in table `clusters`"
/// );
/// ```
pub fn redact_config_error(message: &str) -> String {
    redact_backquoted(&drop_quoted_value(message))
}

/// Each `` `…` `` of `message` through [`redact_uri`].
fn redact_backquoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('`');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (i, part) in parts.enumerate() {
        out.push('`');
        // Odd pieces stand between two backquotes; a trailing unpaired piece is redacted too.
        if i % 2 == 0 {
            out.push_str(&redact_uri(part));
        } else {
            out.push_str(part);
        }
    }
    out
}

fn drop_quoted_value(message: &str) -> String {
    const QUOTING: [(&str, &str); 3] = [
        ("invalid type: ", ", expected"),
        ("invalid value: ", ", expected"),
        ("unknown variant ", ", expected"),
    ];
    for (start, end) in QUOTING {
        if let Some(i) = message.find(start) {
            let from = i + start.len();
            let Some(len) = message[from..].rfind(end) else {
                return format!("{}a value that is not valid", &message[..from]);
            };
            let value = &message[from..from + len];
            // Keep the kind of value (`string`, `integer`), drop the value.
            let kind: String = value
                .split([' ', '`', '"'])
                .next()
                .filter(|w| w.chars().all(|c| c.is_ascii_alphabetic()) && !w.is_empty())
                .map(str::to_owned)
                .unwrap_or_else(|| "a value".into());
            if start == "unknown variant " {
                return format!("unknown variant{}", &message[from + len..]).replacen(
                    "unknown variant",
                    &format!("{}unknown variant", &message[..i]),
                    1,
                );
            }
            return format!("{}{kind}{}", &message[..from], &message[from + len..]);
        }
    }
    message.to_owned()
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_replaced() {
        assert_eq!(
            redact_uri("mongodb://alice:s3cret@db.example:27017/app?w=1"),
            "mongodb://alice:***@db.example:27017/app?w=1"
        );
    }

    #[test]
    fn uri_without_credentials_is_unchanged() {
        let uri = "mongodb://127.0.0.1:27017/?directConnection=true";
        assert_eq!(redact_uri(uri), uri);
        assert_eq!(redact_uri("not a uri"), "not a uri");
    }

    #[test]
    fn user_without_password_is_kept() {
        assert_eq!(
            redact_uri("mongodb+srv://alice@cluster0.example/"),
            "mongodb+srv://alice@cluster0.example/"
        );
    }

    #[test]
    fn unescaped_at_and_slash_in_password_stay_hidden() {
        let shown = redact_uri("mongodb://bob:pa/ss@word@host/db");
        assert_eq!(shown, "mongodb://bob:***@host/db");
    }

    #[test]
    fn scheme_typos_and_missing_schemes_hide_the_user_information() {
        for (uri, shown) in [
            ("mongodb:/ops:S3cr3t@host", "mongodb:/***@host"),
            ("mongdb://ops:S3cr3t@host/", "mongdb://***@host/"),
            ("ops:S3cr3t@host:27017", "***@host:27017"),
            ("mongodb:ops:S3cr3t@host", "***@host"),
            ("//ops:S3cr3t@host", "***@host"),
        ] {
            assert_eq!(redact_uri(uri), shown, "{uri}");
        }
    }

    #[test]
    fn secret_options_are_hidden() {
        let shown = redact_uri(
            "mongodb://h/?proxyPassword=pp1&authMechanismProperties=AWS_SESSION_TOKEN:tok1&tlsCertificateKeyFilePassword=kp1&authSource=admin&myApiSecret=s1",
        );
        for secret in ["pp1", "tok1", "kp1", "s1"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("authSource=admin"), "{shown}");
    }

    #[test]
    fn an_at_in_the_query_keeps_the_host() {
        assert_eq!(
            redact_uri("mongodb://ops:pw@db.example/?appName=a@b"),
            "mongodb://ops:***@db.example/?appName=a@b"
        );
        assert_eq!(
            redact_uri("mongodb://db.example:27017/?appName=a@b"),
            "mongodb://db.example:27017/?appName=a@b"
        );
        // A `?` in a password: the host list before it is not one, so all is hidden.
        assert_eq!(
            redact_uri("mongodb://u:pa?ss@host/"),
            "mongodb://u:***@host/"
        );
    }

    #[test]
    fn scrub_removes_raw_and_decoded_password() {
        let uri = "mongodb://carol:p%40ss%3Aw0rd@host/?proxyPassword=zz%2Fy";
        let msg = "bad thing near carol:p%40ss%3Aw0rd and p@ss:w0rd, zz/y";
        let out = scrub(msg, uri);
        assert!(!out.contains("p%40ss%3Aw0rd"), "{out}");
        assert!(!out.contains("p@ss:w0rd"), "{out}");
        assert!(!out.contains("zz/y"), "{out}");
    }

    #[test]
    fn config_errors_lose_their_values() {
        assert_eq!(
            redact_config_error(r#"invalid type: string "mongodb://u:pw@h", expected u32"#),
            "invalid type: string, expected u32"
        );
        assert_eq!(
            redact_config_error("unknown variant `u:pw@h`, expected `operations` or `commands`"),
            "unknown variant, expected `operations` or `commands`"
        );
        assert_eq!(
            redact_config_error("unknown field `max_pool`, expected one of"),
            "unknown field `max_pool`, expected one of"
        );
    }
}
