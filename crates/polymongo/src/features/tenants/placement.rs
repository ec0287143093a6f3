//! Where a new tenant goes.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// One cluster as a placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterLoad {
    /// Its name.
    pub name: String,
    /// Tenants placed on it.
    pub tenants: u64,
    /// Its capacity, if bounded.
    pub capacity: Option<u64>,
    /// Its weight (default 1).
    pub weight: u32,
    /// Size on disk of its tenants' databases, as `listDatabases` reports it: read for
    /// [`Placement::LeastData`] only (`None` otherwise, or when the server reports none).
    pub data_bytes: Option<u64>,
}

impl ClusterLoad {
    /// Whether it has room for one more tenant.
    pub fn has_room(&self) -> bool {
        self.capacity.is_none_or(|c| self.tenants < c)
    }
}

/// A placement function: the clusters with room (never empty), in name order; returns a
/// name among them.
pub type PlaceFn = Arc<dyn Fn(&[ClusterLoad]) -> String + Send + Sync>;

/// How [`Tenants::create`](crate::tenants::Tenants::create) chooses a new tenant's cluster.
/// Capacities are respected whatever the policy: a full cluster is never chosen, and two
/// instances cannot both take its last place.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Placement {
    /// The cluster with the fewest tenants (ties: the first by name). The default.
    #[default]
    LeastTenants,
    /// The cluster furthest below its share by weight (`tenants / weight` lowest).
    Weighted,
    /// The cluster whose tenants' databases take the least space (`listDatabases` on each
    /// cluster at each create; ties and servers that report no sizes: fewest tenants).
    LeastData,
    /// This cluster.
    On(String),
    /// The application's choice.
    Custom(PlaceFn),
}

impl fmt::Debug for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::LeastTenants => f.write_str("LeastTenants"),
            Placement::Weighted => f.write_str("Weighted"),
            Placement::LeastData => f.write_str("LeastData"),
            Placement::On(c) => f.debug_tuple("On").field(c).finish(),
            Placement::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl Placement {
    /// The clusters to try, best first, among those with room.
    pub(crate) fn order(&self, loads: &BTreeMap<String, ClusterLoad>) -> Vec<String> {
        let mut room: Vec<&ClusterLoad> = loads.values().filter(|l| l.has_room()).collect();
        match self {
            Placement::On(name) => room
                .iter()
                .filter(|l| &l.name == name)
                .map(|l| l.name.clone())
                .collect(),
            Placement::LeastTenants => {
                room.sort_by(|a, b| a.tenants.cmp(&b.tenants).then(a.name.cmp(&b.name)));
                room.into_iter().map(|l| l.name.clone()).collect()
            }
            Placement::LeastData => {
                room.sort_by(|a, b| {
                    a.data_bytes
                        .unwrap_or(0)
                        .cmp(&b.data_bytes.unwrap_or(0))
                        .then(a.tenants.cmp(&b.tenants))
                        .then(a.name.cmp(&b.name))
                });
                room.into_iter().map(|l| l.name.clone()).collect()
            }
            Placement::Weighted => {
                // a.tenants / a.weight < b.tenants / b.weight, without division.
                room.sort_by(|a, b| {
                    (u128::from(a.tenants) * u128::from(b.weight))
                        .cmp(&(u128::from(b.tenants) * u128::from(a.weight)))
                        .then(a.name.cmp(&b.name))
                });
                room.into_iter().map(|l| l.name.clone()).collect()
            }
            Placement::Custom(f) => {
                if room.is_empty() {
                    return Vec::new();
                }
                let view: Vec<ClusterLoad> = room.iter().map(|l| (*l).clone()).collect();
                let chosen = f(&view);
                // Its choice first; a full or unknown choice falls back to the others.
                let mut order: Vec<String> = view
                    .iter()
                    .filter(|l| l.name == chosen)
                    .map(|l| l.name.clone())
                    .collect();
                order.extend(view.into_iter().map(|l| l.name).filter(|n| *n != chosen));
                order
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loads(list: &[(&str, u64, Option<u64>, u32)]) -> BTreeMap<String, ClusterLoad> {
        list.iter()
            .map(|(n, t, c, w)| {
                (
                    (*n).to_owned(),
                    ClusterLoad {
                        name: (*n).to_owned(),
                        tenants: *t,
                        capacity: *c,
                        weight: *w,
                        data_bytes: Some(100 - *t),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn policies_order_clusters_with_room() {
        let l = loads(&[("a", 5, Some(5), 1), ("b", 3, None, 1), ("c", 1, None, 4)]);
        assert_eq!(Placement::LeastTenants.order(&l), ["c", "b"]);
        assert_eq!(Placement::Weighted.order(&l), ["c", "b"]);
        // Data: b holds less than c here (97 against 99 bytes).
        assert_eq!(Placement::LeastData.order(&l), ["b", "c"]);
        assert_eq!(Placement::On("a".into()).order(&l), Vec::<String>::new());
        let custom = Placement::Custom(Arc::new(|_: &[ClusterLoad]| "b".to_owned()));
        assert_eq!(custom.order(&l), ["b", "c"]);
    }
}
