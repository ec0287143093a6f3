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
        Ok(TenantInfo {
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
        }
    }

    #[test]
    fn a_record_round_trips() {
        let d = sample().to_document();
        assert_eq!(TenantInfo::from_document(&d, |_| true), Ok(sample()));
    }

    #[test]
    fn hand_edits_are_named() {
        let cases: [(&str, Bson, &str); 5] = [
            ("state", Bson::String("paused".into()), "state"),
            ("version", Bson::Int32(0), "version"),
            ("database", Bson::String("a/b".into()), "database"),
            ("cluster", Bson::Int32(1), "cluster"),
            ("labels", Bson::Int32(1), "labels"),
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
