//! [`Capability`]: what a test needs from its server, and which servers have it.
//!
//! A test states what it needs ([`ServerOptions::require`](crate::ServerOptions::require) or
//! [`server_for`](crate::server_for)) rather than which server; the kit picks one that has it
//! and reports a skip, with the reason, when none here does. What each server kind does was
//! measured (the crate's `QUIRKS.md`); a real MongoDB is taken at its word.

use std::fmt;

use crate::server::ServerKind;

/// Something a test needs from its server beyond basic CRUD, indexes and aggregation (which
/// every server the kit provides has).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Capability {
    /// Every BSON type is stored and returned byte for byte: Decimal128, Int64 (also as `_id`),
    /// Timestamp, Regex, MinKey/MaxKey, UUID (subtype 4), Code, CodeWithScope, -0.0, and field
    /// order. nx-27017 refuses or changes several of these.
    ExactBsonTypes,
    /// `listIndexes` reports indexes under the names they were created with and with their key
    /// directions (`-1` stays `-1`). nx-27017 renames indexes and drops directions.
    IndexDirection,
    /// Multi-document transactions that commit and abort within one database (isolation not
    /// included: see [`TransactionIsolation`](Self::TransactionIsolation)).
    Transactions,
    /// Transactions are isolated: another client sees none of a transaction's writes before it
    /// commits, and none at all after an abort.
    TransactionIsolation,
    /// One transaction may write to several databases and commit them together.
    CrossDatabaseTransactions,
    /// `configureFailPoint` with `failCommand` injects errors into commands: error codes,
    /// error labels, `times`, and `blockConnection`.
    FailPoints,
    /// Change streams on a collection.
    ChangeStreams,
    /// Change streams on a whole database and on the whole cluster.
    WideChangeStreams,
    /// The kit can kill and restart the server on the same port and the data is still there
    /// (a server the kit started, with [`ServerOptions::persistent`](crate::ServerOptions::persistent),
    /// which asking for this capability implies).
    RestartKeepsData,
    /// Collections of tens of thousands of documents are written and read back in seconds.
    /// mongoeco's wire server inserts one document at a time and rescans the collection for
    /// each (1 000 documents into one collection take about 20 s), so bulk volume tests need
    /// this.
    LargeCollections,
    /// `update` with an aggregation pipeline as its update (`u: [{$set: ..}]`) and the
    /// pipeline's variables (`$$NOW`). nx-27017 answers code 8, `'list' object has no
    /// attribute 'keys'`.
    PipelineUpdates,
}

impl Capability {
    /// Every capability, in declaration order.
    pub const ALL: [Capability; 11] = [
        Capability::ExactBsonTypes,
        Capability::IndexDirection,
        Capability::Transactions,
        Capability::TransactionIsolation,
        Capability::CrossDatabaseTransactions,
        Capability::FailPoints,
        Capability::ChangeStreams,
        Capability::WideChangeStreams,
        Capability::RestartKeepsData,
        Capability::LargeCollections,
        Capability::PipelineUpdates,
    ];

    /// A short name, as used in reports (`exact-bson-types`, `fail-points`, …).
    pub fn name(self) -> &'static str {
        match self {
            Capability::ExactBsonTypes => "exact-bson-types",
            Capability::IndexDirection => "index-direction",
            Capability::Transactions => "transactions",
            Capability::TransactionIsolation => "transaction-isolation",
            Capability::CrossDatabaseTransactions => "cross-database-transactions",
            Capability::FailPoints => "fail-points",
            Capability::ChangeStreams => "change-streams",
            Capability::WideChangeStreams => "wide-change-streams",
            Capability::RestartKeepsData => "restart-keeps-data",
            Capability::LargeCollections => "large-collections",
            Capability::PipelineUpdates => "pipeline-updates",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of capabilities (small: a bit per [`Capability`]).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities(u32);

impl Capabilities {
    /// No capability.
    pub const NONE: Capabilities = Capabilities(0);

    /// The set of the given capabilities.
    pub fn of(caps: &[Capability]) -> Self {
        caps.iter().fold(Self::NONE, |set, &c| set.with(c))
    }

    /// This set plus `cap`.
    #[must_use]
    pub fn with(self, cap: Capability) -> Self {
        Capabilities(self.0 | (1 << cap as u32))
    }

    /// This set without `cap`.
    #[must_use]
    pub fn without(self, cap: Capability) -> Self {
        Capabilities(self.0 & !(1 << cap as u32))
    }

    /// Whether `cap` is in the set.
    pub fn has(self, cap: Capability) -> bool {
        self.0 & (1 << cap as u32) != 0
    }

    /// Whether every capability of `needs` is in this set.
    pub fn covers(self, needs: Capabilities) -> bool {
        self.0 & needs.0 == needs.0
    }

    /// The capabilities of `needs` missing from this set.
    pub fn missing(self, needs: Capabilities) -> Capabilities {
        Capabilities(needs.0 & !self.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The capabilities in the set, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL.into_iter().filter(move |&c| self.has(c))
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("(none)");
        }
        let names: Vec<&str> = self.iter().map(Capability::name).collect();
        f.write_str(&names.join(", "))
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        iter.into_iter().fold(Self::NONE, Self::with)
    }
}

/// What a server the kit starts itself can do (external servers are asked instead, see
/// [`implementation_capabilities`]).
pub(crate) fn of_kind(kind: ServerKind) -> Capabilities {
    use Capability::*;
    match kind {
        // A single-node replica set with test commands enabled: everything.
        ServerKind::Mongod => Capabilities::of(&Capability::ALL),
        // QUIRKS.md: single-database commit/abort without isolation, collection streams only,
        // data-dir mode survives kill + restart.
        ServerKind::Nx27017 => Capabilities::of(&[
            Transactions,
            ChangeStreams,
            RestartKeepsData,
            LargeCollections,
        ]),
        // QUIRKS.md: byte-exact types, real indexes, isolated cross-database transactions,
        // failCommand; no change streams; inserts slow down with the collection's size. Its
        // SQLite engine does keep data across a restart (`persistent(true)`), but is not
        // offered for restart tests: it is exclusive while a transaction is open, and a
        // transaction re-run after a restart was reported committed without its write.
        ServerKind::MongoEco => Capabilities::of(&[
            ExactBsonTypes,
            IndexDirection,
            Transactions,
            TransactionIsolation,
            CrossDatabaseTransactions,
            FailPoints,
            PipelineUpdates,
        ]),
        ServerKind::External => Capabilities::NONE,
    }
}

/// The implementation behind an external server, told from its `serverStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Implementation {
    /// MongoDB itself (or anything not recognised as an emulator).
    MongoDb,
    /// nx-27017 (`process: "nx_27017"`).
    Nx27017,
    /// mongoeco (a `mongoeco` section).
    MongoEco,
}

/// What an external server can do, from what it is and its topology. Never
/// [`Capability::RestartKeepsData`]: the kit cannot restart a server it did not start.
pub(crate) fn implementation_capabilities(
    implementation: Implementation,
    replica_set_or_mongos: bool,
    fail_points: bool,
) -> Capabilities {
    use Capability::*;
    let caps = match implementation {
        Implementation::Nx27017 => of_kind(ServerKind::Nx27017),
        Implementation::MongoEco => of_kind(ServerKind::MongoEco),
        Implementation::MongoDb => {
            let mut caps = Capabilities::of(&[
                ExactBsonTypes,
                IndexDirection,
                LargeCollections,
                PipelineUpdates,
            ]);
            if replica_set_or_mongos {
                caps = caps
                    .with(Transactions)
                    .with(TransactionIsolation)
                    .with(CrossDatabaseTransactions)
                    .with(ChangeStreams)
                    .with(WideChangeStreams);
            }
            if fail_points {
                caps = caps.with(FailPoints);
            }
            caps
        }
    };
    caps.without(RestartKeepsData)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_cover_and_report_what_is_missing() {
        let nx = of_kind(ServerKind::Nx27017);
        let eco = of_kind(ServerKind::MongoEco);
        let needs = Capabilities::of(&[Capability::FailPoints, Capability::Transactions]);
        assert!(!nx.covers(needs));
        assert_eq!(
            nx.missing(needs),
            Capabilities::of(&[Capability::FailPoints])
        );
        assert!(eco.covers(needs));
        assert!(of_kind(ServerKind::Mongod).covers(needs));
        assert_eq!(
            Capabilities::of(&[Capability::ChangeStreams, Capability::ExactBsonTypes]).to_string(),
            "exact-bson-types, change-streams"
        );
        assert!(Capabilities::NONE.covers(Capabilities::NONE));
        assert_eq!(
            Capabilities::of(&Capability::ALL).iter().count(),
            Capability::ALL.len()
        );
    }

    #[test]
    fn external_servers_never_restart() {
        for implementation in [
            Implementation::MongoDb,
            Implementation::Nx27017,
            Implementation::MongoEco,
        ] {
            let caps = implementation_capabilities(implementation, true, true);
            assert!(
                !caps.has(Capability::RestartKeepsData),
                "{implementation:?}"
            );
        }
        let standalone = implementation_capabilities(Implementation::MongoDb, false, false);
        assert!(standalone.has(Capability::ExactBsonTypes));
        assert!(!standalone.has(Capability::Transactions));
        assert!(!standalone.has(Capability::FailPoints));
    }
}
