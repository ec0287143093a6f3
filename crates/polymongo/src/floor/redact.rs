//! Keeping credentials out of every string the library produces.
//!
//! Connection strings carry passwords (`mongodb://user:secret@host`). Every place that shows a
//! URI — logs, errors, `Debug`, stats — goes through [`redact_uri`], and every driver message
//! about a URI goes through [`scrub`] before it is stored, so the secret never enters an error
//! value in the first place.

/// Replaces the password of a MongoDB connection string with `***`.
///
/// Works on malformed strings too (that is when errors are shown): everything between the
/// scheme and the last `@` is treated as user information, so an unescaped `@` or `/` in a
/// password is still hidden rather than half shown.
pub fn redact_uri(uri: &str) -> String {
    match split_userinfo(uri) {
        Some((prefix, userinfo, rest)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{prefix}{user}:***@{rest}")
            } else {
                format!("{prefix}{user}@{rest}")
            }
        }
        None => uri.to_owned(),
    }
}

/// Removes the password of `uri` (raw and percent-decoded forms) from `message`.
pub(crate) fn scrub(message: &str, uri: &str) -> String {
    let Some((_, userinfo, _)) = split_userinfo(uri) else {
        return message.to_owned();
    };
    let Some((_, password)) = userinfo.split_once(':') else {
        return message.to_owned();
    };
    if password.is_empty() {
        return message.to_owned();
    }
    let mut out = message.replace(userinfo, &redact_userinfo(userinfo));
    out = out.replace(password, "***");
    let decoded = percent_decode(password);
    if !decoded.is_empty() {
        out = out.replace(&decoded, "***");
    }
    out
}

fn redact_userinfo(userinfo: &str) -> String {
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => userinfo.to_owned(),
    }
}

/// Splits `scheme://userinfo@rest` into its three parts; `None` when there is no user info.
fn split_userinfo(uri: &str) -> Option<(&str, &str, &str)> {
    let start = uri.find("://")? + 3;
    let at = start + uri[start..].rfind('@')?;
    Some((&uri[..start], &uri[start..at], &uri[at + 1..]))
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
        assert!(!shown.contains("pa/ss"), "{shown}");
        assert!(!shown.contains("word@host") || shown.starts_with("mongodb://bob:***@"));
    }

    #[test]
    fn scrub_removes_raw_and_decoded_password() {
        let uri = "mongodb://carol:p%40ss%3Aw0rd@host/";
        let msg = "bad thing near carol:p%40ss%3Aw0rd and p@ss:w0rd";
        let out = scrub(msg, uri);
        assert!(!out.contains("p%40ss%3Aw0rd"), "{out}");
        assert!(!out.contains("p@ss:w0rd"), "{out}");
    }
}
