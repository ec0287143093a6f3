//! The directory's collections on the control cluster: `tenants` (one document per tenant,
//! unique `(cluster, database)`), `counters` (the change sequence), `clusters` (each
//! cluster's tenant count, which is also its capacity reservation).

use std::collections::BTreeMap;

use crate::floor::error::is_duplicate_key;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Collection, Database, IndexModel};

use crate::floor::error::Result;

/// Tenants' documents.
pub(crate) const TENANTS: &str = "tenants";
/// The change sequence.
pub(crate) const COUNTERS: &str = "counters";
/// Tenants per cluster.
pub(crate) const CLUSTERS: &str = "clusters";

/// Every BSON type but string, by `$type` alias.
const ODD_ID_TYPES: [&str; 15] = [
    "double",
    "int",
    "long",
    "decimal",
    "objectId",
    "bool",
    "date",
    "null",
    "object",
    "array",
    "binData",
    "timestamp",
    "regex",
    "minKey",
    "maxKey",
];

#[derive(Clone)]
pub(crate) struct Store {
    tenants: Collection<Document>,
    counters: Collection<Document>,
    clusters: Collection<Document>,
}

fn as_u64(b: Option<&Bson>) -> u64 {
    match b {
        Some(Bson::Int64(i)) => u64::try_from(*i).unwrap_or(0),
        Some(Bson::Int32(i)) => u64::try_from(*i).unwrap_or(0),
        _ => 0,
    }
}

impl Store {
    pub(crate) fn new(db: &Database) -> Self {
        Self {
            tenants: db.collection(TENANTS),
            counters: db.collection(COUNTERS),
            clusters: db.collection(CLUSTERS),
        }
    }

    /// The indexes the directory's rules rest on: one tenant per `(cluster, database)`, and
    /// the change sequence for readers of changes.
    pub(crate) async fn ensure_indexes(&self) -> Result<()> {
        self.tenants
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! { "cluster": 1, "database": 1 })
                    .options(
                        IndexOptions::builder()
                            .unique(true)
                            .name("cluster_database_unique".to_owned())
                            .build(),
                    )
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "seq": 1 })
                    .options(IndexOptions::builder().name("seq".to_owned()).build())
                    .build(),
            ])
            .await?;
        Ok(())
    }

    /// A change stream on the tenants' documents.
    pub(crate) async fn watch(
        &self,
    ) -> Result<
        mongodb::change_stream::ChangeStream<
            mongodb::change_stream::event::ChangeStreamEvent<Document>,
        >,
    > {
        Ok(self.tenants.watch().await?)
    }

    pub(crate) async fn get(&self, id: &str) -> Result<Option<Document>> {
        Ok(self.tenants.find_one(doc! { "_id": id }).await?)
    }

    /// The next value of the change sequence.
    pub(crate) async fn next_seq(&self) -> Result<u64> {
        let d = self
            .counters
            .find_one_and_update(doc! { "_id": "seq" }, doc! { "$inc": { "value": 1_i64 } })
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await?;
        Ok(as_u64(d.as_ref().and_then(|d| d.get("value"))))
    }

    /// The change sequence's value now (0 before the first change).
    pub(crate) async fn current_seq(&self) -> Result<u64> {
        let d = self.counters.find_one(doc! { "_id": "seq" }).await?;
        Ok(as_u64(d.as_ref().and_then(|d| d.get("value"))))
    }

    /// Inserts a new tenant's document; `false` when the tenant id or its
    /// `(cluster, database)` is taken.
    pub(crate) async fn insert(&self, d: Document) -> Result<bool> {
        match self.tenants.insert_one(d).await {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Moves tenant `id` from one of `from` to `to`, with a new version and sequence; the
    /// document after, or `None` when it was not in one of `from`.
    pub(crate) async fn set_state(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        seq: u64,
        now_ms: i64,
    ) -> Result<Option<Document>> {
        self.transition(id, from, doc! { "state": to }, seq, now_ms)
            .await
    }

    /// Sets `fields` of tenant `id` if it is in one of `states`, with a new version and
    /// sequence; the document after, or `None` when it was not in one of them.
    pub(crate) async fn transition(
        &self,
        id: &str,
        states: &[&str],
        mut fields: Document,
        seq: u64,
        now_ms: i64,
    ) -> Result<Option<Document>> {
        fields.insert("seq", i64::try_from(seq).unwrap_or(i64::MAX));
        fields.insert("updated_at_ms", now_ms);
        let d = self
            .tenants
            .find_one_and_update(
                doc! { "_id": id, "state": { "$in": states } },
                doc! { "$set": fields, "$inc": { "version": 1_i64 } },
            )
            .return_document(ReturnDocument::After)
            .await?;
        Ok(d)
    }

    /// Removes tenant `id`'s document if it is in `state`; the document removed.
    pub(crate) async fn remove(&self, id: &str, state: &str) -> Result<Option<Document>> {
        Ok(self
            .tenants
            .find_one_and_delete(doc! { "_id": id, "state": state })
            .await?)
    }

    /// Sets each cluster's place count to `places` (clusters missing from it: 0).
    pub(crate) async fn set_places(&self, places: &BTreeMap<String, u64>) -> Result<()> {
        for (cluster, n) in places {
            self.clusters
                .update_one(
                    doc! { "_id": cluster },
                    doc! { "$set": { "tenants": i64::try_from(*n).unwrap_or(i64::MAX) } },
                )
                .upsert(true)
                .await?;
        }
        Ok(())
    }

    /// Documents changed after sequence `floor`, in sequence order.
    pub(crate) async fn changes_since(&self, floor: u64) -> Result<Vec<Document>> {
        let floor = i64::try_from(floor).unwrap_or(i64::MAX);
        Ok(self
            .tenants
            .find(doc! { "seq": { "$gt": floor } })
            .sort(doc! { "seq": 1 })
            .await?
            .try_collect()
            .await?)
    }

    /// Takes one place on `cluster` if it has fewer than `capacity` tenants (no bound:
    /// always); `false` when it is full. Atomic: two instances cannot both take the last
    /// place.
    pub(crate) async fn reserve(&self, cluster: &str, capacity: Option<u64>) -> Result<bool> {
        let filter = match capacity {
            Some(cap) => doc! {
                "_id": cluster,
                "tenants": { "$lt": i64::try_from(cap).unwrap_or(i64::MAX) },
            },
            None => doc! { "_id": cluster },
        };
        let taken = self
            .clusters
            .find_one_and_update(filter, doc! { "$inc": { "tenants": 1_i64 } })
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await;
        match taken {
            // Some emulators answer a failed upsert with no document instead of a duplicate
            // key (the test kit's QUIRKS.md): both mean full.
            Ok(Some(_)) => Ok(true),
            Ok(None) => Ok(false),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives back a place taken by [`reserve`](Self::reserve) (a create that did not
    /// happen).
    pub(crate) async fn release(&self, cluster: &str) -> Result<()> {
        self.clusters
            .update_one(
                doc! { "_id": cluster },
                doc! { "$inc": { "tenants": -1_i64 } },
            )
            .await?;
        Ok(())
    }

    /// Up to `limit` tenants' documents in `_id` order, after `after`, matching `filter`.
    pub(crate) async fn page(
        &self,
        after: Option<&str>,
        limit: u32,
        mut filter: Document,
    ) -> Result<Vec<Document>> {
        // String ids only (the library writes no other): a sort over mixed types would put
        // numbers first and end a page on an id `after` cannot continue from.
        let mut id = doc! { "$type": "string" };
        if let Some(after) = after {
            id.insert("$gt", after);
        }
        filter.insert("_id", id);
        Ok(self
            .tenants
            .find(filter)
            .sort(doc! { "_id": 1 })
            .limit(i64::from(limit))
            .await?
            .try_collect()
            .await?)
    }

    /// Up to `limit` documents whose `_id` is not a string (put there by hand: the library
    /// writes string ids only).
    pub(crate) async fn odd_ids(&self, limit: u32) -> Result<Vec<Document>> {
        Ok(self
            .tenants
            // Every other type, one `$type` each: nx-27017 has no `$not` and takes no list in
            // `$type` (QUIRKS.md).
            .find(doc! { "$or": ODD_ID_TYPES.map(|t| doc! { "_id": { "$type": t } }).to_vec() })
            .limit(i64::from(limit))
            .await?
            .try_collect()
            .await?)
    }

    /// Tenants per `(cluster, state)`, as recorded, `states` each counted by one
    /// aggregation; entries in any other state are counted as state `"invalid"`.
    ///
    /// One grouping per state rather than one on a compound key: nx-27017 does not evaluate
    /// field paths inside a compound `$group` key (the test kit's QUIRKS.md).
    pub(crate) async fn states(&self, states: &[&str]) -> Result<Vec<(String, String, u64)>> {
        let mut out = Vec::new();
        let known: Vec<&str> = states.to_vec();
        let matches = states
            .iter()
            .map(|s| ((*s).to_owned(), doc! { "state": *s }))
            .chain(std::iter::once((
                "invalid".to_owned(),
                doc! { "state": { "$nin": known } },
            )));
        for (state, filter) in matches {
            let groups: Vec<Document> = self
                .tenants
                .aggregate([
                    doc! { "$match": filter },
                    doc! { "$group": { "_id": "$cluster", "n": { "$sum": 1 } } },
                ])
                .await?
                .try_collect()
                .await?;
            for g in &groups {
                let cluster = match g.get("_id") {
                    Some(Bson::String(c)) => c.clone(),
                    Some(other) => other.to_string(),
                    None => "?".to_owned(),
                };
                out.push((cluster, state.clone(), as_u64(g.get("n"))));
            }
        }
        Ok(out)
    }

    /// Tenants placed per cluster (the reservations).
    pub(crate) async fn counts(&self) -> Result<BTreeMap<String, u64>> {
        let docs: Vec<Document> = self.clusters.find(doc! {}).await?.try_collect().await?;
        Ok(docs
            .iter()
            .filter_map(|d| Some((d.get_str("_id").ok()?.to_owned(), as_u64(d.get("tenants")))))
            .collect())
    }
}
