//! Database and collection name rules, checked before anything is sent.
//!
//! MongoDB refuses these names only when an operation reaches the server; checking them here
//! turns a late, driver-worded failure into an immediate [`Error::InvalidName`] that names the
//! culprit, and keeps a request-supplied tenant name from addressing something odd.

use std::fmt;

use crate::floor::error::{Error, Result};

/// Longest database name MongoDB accepts, in bytes (names must be shorter than 64 bytes).
pub const MAX_DATABASE_NAME_BYTES: usize = 63;

/// Characters MongoDB forbids in database names (on any platform; the Windows set is the
/// strictest and is what the server enforces for portability).
const FORBIDDEN_IN_DATABASE: &[char] =
    &['/', '\\', '.', ' ', '"', '$', '*', '<', '>', ':', '|', '?'];

/// Collections whose names start with this belong to the library (the migration ledger,
/// `__polymongo_migrations`): models and change streams cannot name them.
pub const RESERVED_COLLECTION_PREFIX: &str = "__polymongo";

/// A naming rule a database or collection name broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NameRule {
    /// The name is empty.
    Empty,
    /// The database name is 64 bytes or longer.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name contains a character MongoDB forbids there.
    ForbiddenChar(char),
    /// The collection name starts with the reserved `system.` prefix.
    SystemPrefix,
    /// The collection name starts with the library's reserved `__polymongo` prefix.
    ReservedPrefix,
}

impl fmt::Display for NameRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameRule::Empty => f.write_str("must not be empty"),
            NameRule::TooLong { len } => write!(
                f,
                "is {len} bytes long; MongoDB allows at most {MAX_DATABASE_NAME_BYTES}"
            ),
            NameRule::ForbiddenChar('\0') => f.write_str("must not contain the NUL character"),
            NameRule::ForbiddenChar(c) => write!(f, "must not contain {c:?}"),
            NameRule::SystemPrefix => f.write_str("must not start with \"system.\""),
            NameRule::ReservedPrefix => write!(
                f,
                "must not start with {RESERVED_COLLECTION_PREFIX:?} (reserved for polymongo)"
            ),
        }
    }
}

/// Checks a database name as MongoDB does: non-empty, under 64 bytes, none of
/// `/\. "$*<>:|?` and no NUL.
pub fn validate_database_name(name: &str) -> Result<()> {
    database_rule(name).map_or(Ok(()), |rule| {
        Err(Error::InvalidName {
            what: "database",
            name: name.to_owned(),
            rule,
        })
    })
}

/// Checks a collection name: non-empty, no `$`, no NUL, not in the `system.` namespace, not
/// starting with [`RESERVED_COLLECTION_PREFIX`].
pub fn validate_collection_name(name: &str) -> Result<()> {
    let rule = collection_rule(name).or_else(|| {
        name.starts_with(RESERVED_COLLECTION_PREFIX)
            .then_some(NameRule::ReservedPrefix)
    });
    collection_result(name, rule)
}

/// As [`validate_collection_name`], but the library's reserved collections pass: a dump
/// carries a tenant's migration ledger with its data.
pub(crate) fn validate_stored_collection_name(name: &str) -> Result<()> {
    collection_result(name, collection_rule(name))
}

fn collection_result(name: &str, rule: Option<NameRule>) -> Result<()> {
    rule.map_or(Ok(()), |rule| {
        Err(Error::InvalidName {
            what: "collection",
            name: name.to_owned(),
            rule,
        })
    })
}

fn database_rule(name: &str) -> Option<NameRule> {
    if name.is_empty() {
        return Some(NameRule::Empty);
    }
    if name.len() > MAX_DATABASE_NAME_BYTES {
        return Some(NameRule::TooLong { len: name.len() });
    }
    name.chars()
        .find(|c| *c == '\0' || FORBIDDEN_IN_DATABASE.contains(c))
        .map(NameRule::ForbiddenChar)
}

fn collection_rule(name: &str) -> Option<NameRule> {
    if name.is_empty() {
        return Some(NameRule::Empty);
    }
    if let Some(c) = name.chars().find(|c| *c == '\0' || *c == '$') {
        return Some(NameRule::ForbiddenChar(c));
    }
    name.starts_with("system.")
        .then_some(NameRule::SystemPrefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str) -> Option<NameRule> {
        match validate_database_name(name) {
            Ok(()) => None,
            Err(Error::InvalidName { rule, name: n, .. }) => {
                assert_eq!(n, name);
                Some(rule)
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn ordinary_names_pass() {
        for n in [
            "tenant_1",
            "a",
            "Analytics-2024",
            "ünïcode",
            &"x".repeat(63),
        ] {
            assert_eq!(rule(n), None, "{n}");
        }
    }

    #[test]
    fn each_forbidden_character_is_named() {
        for c in [
            '/', '\\', '.', ' ', '"', '$', '*', '<', '>', ':', '|', '?', '\0',
        ] {
            let name = format!("bad{c}name");
            assert_eq!(rule(&name), Some(NameRule::ForbiddenChar(c)), "{name:?}");
        }
    }

    #[test]
    fn empty_and_long_names_are_refused() {
        assert_eq!(rule(""), Some(NameRule::Empty));
        assert_eq!(rule(&"x".repeat(64)), Some(NameRule::TooLong { len: 64 }));
        // 32 two-byte characters: 64 bytes although only 32 characters.
        assert_eq!(rule(&"é".repeat(32)), Some(NameRule::TooLong { len: 64 }));
    }

    #[test]
    fn error_message_names_the_database_and_the_rule() {
        let msg = validate_database_name("a.b").unwrap_err().to_string();
        assert!(msg.contains("\"a.b\""), "{msg}");
        assert!(msg.contains("'.'"), "{msg}");
    }

    #[test]
    fn collection_rules() {
        assert!(validate_collection_name("users").is_ok());
        assert!(validate_collection_name("a.b").is_ok());
        assert!(validate_collection_name("").is_err());
        assert!(validate_collection_name("a$b").is_err());
        assert!(validate_collection_name("system.users").is_err());
        assert!(validate_collection_name("__polymongo_migrations").is_err());
        assert!(validate_stored_collection_name("__polymongo_migrations").is_ok());
        assert!(validate_collection_name("_polymongo").is_ok());
    }
}
