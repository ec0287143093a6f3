//! A validated, ordered set of migrations and each one's checksum.

use std::collections::BTreeSet;
use std::sync::Arc;

use mongodb::bson::Bson;

use super::command;
use super::step::{Migration, Step};
use crate::floor::error::Result;
use crate::floor::migration_error::MigrationError;

/// Migrations ordered by version, each checked, each with the checksum of its definition.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Migrations {
    pub(crate) list: Arc<[Checked]>,
}

/// A migration and its checksum.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) migration: Migration,
    pub(crate) checksum: String,
}

impl Migrations {
    /// Checks and orders `migrations`: versions from 1, consecutive, none twice, names not empty, at
    /// least one step each, declarative steps on the allow-list and within the tenant's
    /// database, a `code_version` where there is code.
    ///
    /// # Errors
    /// [`Error::Migration`](crate::Error::Migration) naming the first version at fault.
    pub fn new(migrations: Vec<Migration>) -> Result<Self> {
        let mut seen = BTreeSet::new();
        let mut list = Vec::with_capacity(migrations.len());
        for m in migrations {
            check(&m)?;
            if !seen.insert(m.version) {
                return Err(MigrationError::DuplicateVersion { version: m.version }.into());
            }
            let checksum = checksum(&m);
            list.push(Checked {
                migration: m,
                checksum,
            });
        }
        list.sort_by_key(|c| c.migration.version);
        for pair in list.windows(2) {
            let (after, next) = (pair[0].migration.version, pair[1].migration.version);
            if next != after + 1 {
                return Err(MigrationError::VersionGap { after, next }.into());
            }
        }
        Ok(Self { list: list.into() })
    }

    /// The highest version, 0 for an empty set.
    pub fn latest(&self) -> u64 {
        self.list.last().map_or(0, |c| c.migration.version)
    }

    /// The versions, in order.
    pub fn versions(&self) -> impl Iterator<Item = u64> + '_ {
        self.list.iter().map(|c| c.migration.version)
    }

    /// The migrations, in version order.
    pub fn iter(&self) -> impl Iterator<Item = &Migration> + '_ {
        self.list.iter().map(|c| &c.migration)
    }

    /// Version `version`'s migration, if it is defined.
    pub fn get(&self, version: u64) -> Option<&Migration> {
        self.find(version).map(|c| &c.migration)
    }

    /// The checksum of version `version`'s definition (hex SHA-256), if it is defined.
    pub fn checksum(&self, version: u64) -> Option<&str> {
        self.find(version).map(|c| c.checksum.as_str())
    }

    pub(crate) fn find(&self, version: u64) -> Option<&Checked> {
        self.list
            .binary_search_by_key(&version, |c| c.migration.version)
            .ok()
            .and_then(|i| self.list.get(i))
    }
}

fn check(m: &Migration) -> Result<(), MigrationError> {
    let version = m.version;
    if version == 0 {
        return Err(MigrationError::ZeroVersion {
            name: m.name.clone(),
        });
    }
    if m.name.trim().is_empty() {
        return Err(MigrationError::EmptyName { version });
    }
    if m.steps.is_empty() {
        return Err(MigrationError::NoSteps { version });
    }
    let has_code = m.steps.iter().any(|s| matches!(s, Step::Code(_)));
    for step in &m.down {
        if let Step::Command(c) = step {
            command::check(version, c)?;
        }
    }
    if has_code && m.code_version.as_deref().is_none_or(str::is_empty) {
        return Err(MigrationError::MissingCodeVersion { version });
    }
    for step in &m.steps {
        if let Step::Command(c) = step {
            command::check(version, c)?;
        }
    }
    Ok(())
}

/// SHA-256 over the version, the name, the code version and each step: a command as
/// canonical Extended JSON (field order kept), a code step as a marker — the closure's code
/// is compiled machine code with no stable representation, so the author's `code_version`
/// stands for it.
fn checksum(m: &Migration) -> String {
    let mut text = format!(
        "polymongo-migration-v1\n{}\n{}\n{}\n",
        m.version,
        m.name,
        m.code_version.as_deref().unwrap_or("")
    );
    for step in &m.steps {
        match step {
            Step::Code(_) => text.push_str("code\n"),
            Step::SyncIndexes(sync) => {
                text.push_str("sync-indexes ");
                text.push_str(sync.collection);
                text.push_str(if sync.drop_undeclared {
                    " dropping\n"
                } else {
                    "\n"
                });
            }
            Step::Command(c) => {
                let json = Bson::Document(c.clone()).into_canonical_extjson();
                text.push_str("command ");
                text.push_str(&json.to_string());
                text.push('\n');
            }
        }
    }
    crate::floor::digest::sha256_hex(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    fn cmd(v: u64, coll: &str) -> Migration {
        Migration::new(v, "m", vec![Step::command(doc! { "drop": coll })])
    }

    #[test]
    fn checksums_follow_the_definition() {
        let a = Migrations::new(vec![cmd(1, "a")]).unwrap();
        let b = Migrations::new(vec![cmd(1, "b")]).unwrap();
        let a2 = Migrations::new(vec![cmd(1, "a")]).unwrap();
        assert_ne!(a.checksum(1), b.checksum(1));
        assert_eq!(a.checksum(1), a2.checksum(1));
    }

    #[test]
    fn code_needs_a_code_version() {
        let m = Migration::new(4, "c", vec![Step::code(|_db| async { Ok(()) })]);
        assert!(Migrations::new(vec![m.clone()]).is_err());
        assert!(Migrations::new(vec![m.code_version("1")]).is_ok());
    }
}
