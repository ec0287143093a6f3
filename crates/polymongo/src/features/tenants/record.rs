//! A tenant's directory document, decoded and checked: nothing a hand edit can put there
//! reaches routing without a named error.

use mongodb::bson::{doc, Bson, Document};
use serde::Serialize;

use crate::floor::name::validate_database_name;
use crate::floor::tenant_error::TenantError;

/// Where a tenant is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TenantState {
    /// Placed and recorded; its database is being prepared. Not served.
    Creating,
    /// Served.
    Active,
    /// Refused with [`TenantError::Suspended`] until resumed.
    Suspended,
    /// Being archived: fenced (not served), its database exported to the archive file,
    /// verified, then dropped. Not served.
    Archiving,
    /// Archived: its database is dropped, its data is in the archive file recorded with it;
    /// it holds no place on a cluster. Not served until restored.
    Archived,
    /// Being restored from its archive onto the cluster it was placed on. Not served.
    Restoring,
    /// Being deleted: its database is dropped, then its entry. Not served.
    Deleting,
}

impl TenantState {
    /// As stored in the directory.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Creating => "creating",
            TenantState::Active => "active",
            TenantState::Suspended => "suspended",
            TenantState::Archiving => "archiving",
            TenantState::Archived => "archived",
            TenantState::Restoring => "restoring",
            TenantState::Deleting => "deleting",
        }
    }

    /// Every state, in the order of a tenant's life.
    pub const ALL: [TenantState; 7] = [
        TenantState::Creating,
        TenantState::Active,
        TenantState::Suspended,
        TenantState::Archiving,
        TenantState::Archived,
        TenantState::Restoring,
        TenantState::Deleting,
    ];

    /// The state stored as `s`, if it is one.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// Whether a tenant in this state holds a place on its cluster (counted against the
    /// cluster's capacity): every state but `archived`.
    pub fn holds_place(self) -> bool {
        self != TenantState::Archived
    }
}

/// A tenant as the directory records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantInfo {
    /// The tenant id (the document's `_id`).
    pub id: String,
    /// Its database.
    pub database: String,
    /// The cluster its database is on (a name of the `clusters` option, or `"main"`).
    pub cluster: String,
    /// Its state.
    pub state: TenantState,
    /// Changes with every change of the entry (from 1).
    pub version: u64,
    /// The directory's change counter when the entry last changed.
    pub seq: u64,
    /// The application's labels.
    pub labels: Document,
    /// When it was created, ms since the Unix epoch (integers: see the test kit's QUIRKS.md
    /// on dates written by `$set`).
    pub created_at_ms: i64,
    /// When it last changed, ms since the Unix epoch.
    pub updated_at_ms: i64,
    /// Its latest archive, if it was ever archived: set when an archive starts, `verified`
    /// once the file was read back and matched the database; kept after a restore.
    pub archive: Option<ArchiveRecord>,
}

/// Where a tenant's archive is and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ArchiveRecord {
    /// The archive file (a gzip dump, see `docs/dump-format.md`).
    pub path: String,
    /// Whether the file was read back whole and matched the database: only then is the
    /// database dropped, and only a verified archive is restored.
    pub verified: bool,
    /// SHA-256 of the file, lowercase hex (once verified).
    pub sha256: String,
    /// Size of the file in bytes (once verified).
    pub file_bytes: u64,
    /// Documents per collection, in the dump's order (once verified).
    pub collections: Vec<(String, u64)>,
    /// The cluster the database was on.
    pub from_cluster: String,
    /// When the archive started, ms since the Unix epoch.
    pub started_at_ms: i64,
}

impl ArchiveRecord {
    /// Documents in all.
    pub fn documents(&self) -> u64 {
        self.collections.iter().map(|(_, n)| n).sum()
    }

    pub(crate) fn to_document(&self) -> Document {
        let collections: Vec<Bson> = self
            .collections
            .iter()
            .map(|(name, n)| {
                Bson::Document(doc! {
                    "name": name,
                    "documents": i64::try_from(*n).unwrap_or(i64::MAX),
                })
            })
            .collect();
        doc! {
            "path": &self.path,
            "verified": self.verified,
            "sha256": &self.sha256,
            "file_bytes": i64::try_from(self.file_bytes).unwrap_or(i64::MAX),
            "collections": collections,
            "from_cluster": &self.from_cluster,
            "started_at_ms": self.started_at_ms,
        }
    }

    fn from_document(
        d: &Document,
        bad: impl Fn(&str, String) -> TenantError,
    ) -> Result<Self, TenantError> {
        let text = |field: &str| match d.get(field) {
            Some(Bson::String(s)) => Ok(s.clone()),
            other => Err(bad(
                &format!("archive.{field}"),
                format!("not a string: {other:?}"),
            )),
        };
        let count = |field: &str, b: Option<&Bson>| match b {
            Some(Bson::Int64(i)) if *i >= 0 => Ok(i.unsigned_abs()),
            Some(Bson::Int32(i)) if *i >= 0 => Ok(u64::from(i.unsigned_abs())),
            other => Err(bad(field, format!("not a count: {other:?}"))),
        };
        // nx-27017 reads `true` written by `$set` back as 1 (QUIRKS.md).
        let verified = match d.get("verified") {
            Some(Bson::Boolean(b)) => *b,
            Some(Bson::Int32(i)) => *i != 0,
            Some(Bson::Int64(i)) => *i != 0,
            other => return Err(bad("archive.verified", format!("not a boolean: {other:?}"))),
        };
        let mut collections = Vec::new();
        for c in d
            .get_array("collections")
            .map_err(|_| bad("archive.collections", "not an array".into()))?
        {
            let c = c
                .as_document()
                .ok_or_else(|| bad("archive.collections", "an item is not a document".into()))?;
            let name = match c.get("name") {
                Some(Bson::String(s)) => s.clone(),
                _ => return Err(bad("archive.collections", "an item has no name".into())),
            };
            collections.push((name, count("archive.collections", c.get("documents"))?));
        }
        let started = match d.get("started_at_ms") {
            Some(Bson::Int64(i)) => *i,
            Some(Bson::Int32(i)) => i64::from(*i),
            _ => 0,
        };
        Ok(ArchiveRecord {
            path: text("path")?,
            verified,
            sha256: text("sha256")?,
            file_bytes: count("archive.file_bytes", d.get("file_bytes"))?,
            collections,
            from_cluster: text("from_cluster")?,
            started_at_ms: started,
        })
    }
}

impl TenantInfo {
    /// The document stored for it.
    pub(crate) fn to_document(&self) -> Document {
        doc! {
            "_id": &self.id,
            "database": &self.database,
            "cluster": &self.cluster,
            "state": self.state.as_str(),
            "version": i64::try_from(self.version).unwrap_or(i64::MAX),
            "seq": i64::try_from(self.seq).unwrap_or(i64::MAX),
            "labels": self.labels.clone(),
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
            "archive": self.archive.as_ref().map_or(Bson::Null, |a| Bson::Document(a.to_document())),
        }
    }

    /// Decodes and checks a directory document; `known_cluster` says whether a cluster name
    /// is configured.
    pub(crate) fn from_document(
        d: &Document,
        known_cluster: impl Fn(&str) -> bool,
    ) -> Result<Self, TenantError> {
        let tenant = match d.get("_id") {
            Some(Bson::String(s)) => s.clone(),
            other => {
                return Err(TenantError::InvalidRecord {
                    tenant: format!("{other:?}"),
                    field: "_id".into(),
                    problem: "not a string".into(),
                })
            }
        };
        let bad = |field: &str, problem: String| TenantError::InvalidRecord {
            tenant: tenant.clone(),
            field: field.to_owned(),
            problem,
        };
        let text = |field: &str| -> Result<String, TenantError> {
            match d.get(field) {
                Some(Bson::String(s)) => Ok(s.clone()),
                None => Err(bad(field, "missing".into())),
                Some(other) => Err(bad(field, format!("not a string: {other}"))),
            }
        };
        let int = |field: &str| -> Result<i64, TenantError> {
            match d.get(field) {
                Some(Bson::Int64(i)) => Ok(*i),
                Some(Bson::Int32(i)) => Ok(i64::from(*i)),
                None => Err(bad(field, "missing".into())),
                Some(other) => Err(bad(field, format!("not an integer: {other}"))),
            }
        };
        let database = text("database")?;
        validate_database_name(&database).map_err(|e| bad("database", e.to_string()))?;
        let cluster = text("cluster")?;
        if !known_cluster(&cluster) {
            return Err(bad(
                "cluster",
                format!("{cluster:?} is not a configured cluster"),
            ));
        }
        let state_text = text("state")?;
        let state = TenantState::parse(&state_text)
            .ok_or_else(|| bad("state", format!("unknown state {state_text:?}")))?;
        let version = int("version")?;
        let version = u64::try_from(version)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| bad("version", format!("{version} is not at least 1")))?;
        let seq = u64::try_from(int("seq")?).map_err(|_| bad("seq", "negative".into()))?;
        let labels = match d.get("labels") {
            None | Some(Bson::Null) => Document::new(),
            Some(Bson::Document(l)) => l.clone(),
            Some(other) => return Err(bad("labels", format!("not a document: {other}"))),
        };
        let archive = match d.get("archive") {
            None | Some(Bson::Null) => None,
            Some(Bson::Document(a)) => Some(ArchiveRecord::from_document(a, bad)?),
            Some(other) => return Err(bad("archive", format!("not a document: {other}"))),
        };
        Ok(TenantInfo {
            archive,
            id: tenant.clone(),
            database,
            cluster,
            state,
            version,
            seq,
            labels,
            created_at_ms: int("created_at_ms").unwrap_or(0),
            updated_at_ms: int("updated_at_ms").unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TenantInfo {
        TenantInfo {
            id: "acme".into(),
            database: "t_acme".into(),
            cluster: "cell_a".into(),
            state: TenantState::Active,
            version: 3,
            seq: 9,
            labels: doc! { "plan": "pro" },
            created_at_ms: 1,
            updated_at_ms: 2,
            archive: Some(ArchiveRecord {
                path: "/archives/acme.1.dump.gz".into(),
                verified: true,
                sha256: "ab".repeat(32),
                file_bytes: 1234,
                collections: vec![("notes".into(), 7), ("users".into(), 0)],
                from_cluster: "cell_a".into(),
                started_at_ms: 3,
            }),
        }
    }

    #[test]
    fn a_record_round_trips() {
        let d = sample().to_document();
        assert_eq!(TenantInfo::from_document(&d, |_| true), Ok(sample()));
    }

    #[test]
    fn hand_edits_are_named() {
        let mut bad_path = sample()
            .archive
            .map(|a| a.to_document())
            .unwrap_or_default();
        bad_path.insert("path", 1);
        let cases: [(&str, Bson, &str); 7] = [
            ("state", Bson::String("paused".into()), "state"),
            ("version", Bson::Int32(0), "version"),
            ("database", Bson::String("a/b".into()), "database"),
            ("cluster", Bson::Int32(1), "cluster"),
            ("labels", Bson::Int32(1), "labels"),
            ("archive", Bson::Int32(1), "archive"),
            ("archive", Bson::Document(bad_path), "archive.path"),
        ];
        for (field, value, named) in cases {
            let mut d = sample().to_document();
            d.insert(field, value);
            match TenantInfo::from_document(&d, |_| true) {
                Err(TenantError::InvalidRecord { tenant, field, .. }) => {
                    assert_eq!((tenant.as_str(), field.as_str()), ("acme", named))
                }
                other => panic!("{field}: {other:?}"),
            }
        }
        let d = sample().to_document();
        assert!(matches!(
            TenantInfo::from_document(&d, |c| c == "cell_b"),
            Err(TenantError::InvalidRecord { field, .. }) if field == "cluster"
        ));
    }
}
