//! A migration and its steps: code (an async closure over the tenant's `Database`) or a
//! declarative command.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use mongodb::bson::Document;
use mongodb::{Database, IndexModel};

use crate::handle::model::Model;

/// The error a code step returns: anything, so `?` works on driver errors, polymongo errors
/// and the application's own.
pub type StepError = Box<dyn std::error::Error + Send + Sync>;

type CodeFn = dyn Fn(Database) -> BoxFuture<'static, Result<(), StepError>> + Send + Sync;

/// One step of a [`Migration`].
#[derive(Clone)]
#[non_exhaustive]
pub enum Step {
    /// An async closure over the tenant's database (see [`Step::code`]).
    Code(Arc<CodeFn>),
    /// A database command run with `run_command` on the tenant's database (see
    /// [`Step::command`]).
    Command(Document),
    /// A model's declared indexes made to exist (see [`Step::sync_indexes`]).
    SyncIndexes(IndexSync),
}

/// What a [`Step::SyncIndexes`] does: the collection and the indexes its model declares.
#[derive(Clone, Debug)]
pub struct IndexSync {
    pub(crate) collection: &'static str,
    pub(crate) indexes: fn() -> Vec<IndexModel>,
    pub(crate) drop_undeclared: bool,
}

impl IndexSync {
    /// The model's collection.
    pub fn collection(&self) -> &'static str {
        self.collection
    }

    /// Whether indexes the model no longer declares are dropped.
    pub fn drops_undeclared(&self) -> bool {
        self.drop_undeclared
    }
}

impl Step {
    /// A code step: `f` gets the tenant's `Database` and returns a future.
    ///
    /// ```
    /// # use polymongo::migrate::Step;
    /// # use polymongo::mongodb::bson::doc;
    /// let step = Step::code(|db| async move {
    ///     db.collection::<polymongo::mongodb::bson::Document>("users")
    ///         .update_many(doc! {}, doc! { "$set": { "plan": "free" } })
    ///         .await?;
    ///     Ok(())
    /// });
    /// ```
    ///
    /// Code cannot be hashed, so a migration with code steps needs a
    /// [`code_version`](Migration::code_version) that its author changes with the code. A
    /// step may run again if the process dies after it and before its version is written to
    /// the ledger: write it so that running it twice does no harm.
    pub fn code<F, Fut>(f: F) -> Self
    where
        F: Fn(Database) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        Step::Code(Arc::new(move |db| Box::pin(f(db))))
    }

    /// A declarative step: a database command, checked against the allow-list when the
    /// [`Migrations`](crate::migrate::Migrations) are built (`createIndexes`, `dropIndexes`,
    /// `update`, `delete`, `insert`, `collMod`, `create`, `drop`, `renameCollection`), and
    /// run on the tenant's database. `renameCollection` takes plain collection names
    /// (`{renameCollection: "old", to: "new"}`); the tenant's database is put in front.
    pub fn command(command: Document) -> Self {
        Step::Command(command)
    }

    /// A step that makes model `M`'s declared [indexes](crate::Model::indexes) exist in the
    /// tenant's `M::COLLECTION`: those missing are created (compared by their keys); others
    /// are left alone. The indexes are the model's as declared when the step runs, and the
    /// step's checksum names only the collection: when the model's indexes change, add a
    /// new migration with another sync step (the applied one stays valid).
    pub fn sync_indexes<M: Model>() -> Self {
        Step::SyncIndexes(IndexSync {
            collection: M::COLLECTION,
            indexes: M::indexes,
            drop_undeclared: false,
        })
    }

    /// As [`sync_indexes`](Self::sync_indexes), and drops the collection's indexes that the
    /// model does not declare (never `_id`).
    pub fn sync_indexes_dropping_undeclared<M: Model>() -> Self {
        Step::SyncIndexes(IndexSync {
            collection: M::COLLECTION,
            indexes: M::indexes,
            drop_undeclared: true,
        })
    }
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Code(_) => f.write_str("Step::Code(..)"),
            Step::Command(c) => f.debug_tuple("Step::Command").field(c).finish(),
            Step::SyncIndexes(s) => f.debug_tuple("Step::SyncIndexes").field(s).finish(),
        }
    }
}

/// A versioned change: a version (from 1), a stable name, steps run in order.
#[derive(Debug, Clone)]
pub struct Migration {
    pub(crate) version: u64,
    pub(crate) name: String,
    pub(crate) steps: Vec<Step>,
    pub(crate) down: Vec<Step>,
    pub(crate) code_version: Option<String>,
}

impl Migration {
    /// A migration with its steps.
    pub fn new(version: u64, name: impl Into<String>, steps: Vec<Step>) -> Self {
        Self {
            version,
            name: name.into(),
            steps,
            down: Vec::new(),
            code_version: None,
        }
    }

    /// The steps that undo this migration, run in order by a
    /// [rollback](crate::migrate::Migrator::rollback_to). A migration without them cannot be
    /// rolled back: a rollback that would pass it is refused before anything is undone.
    ///
    /// Down steps are not part of the checksum: the checksum guards what was applied, and
    /// down steps may be added or corrected after a migration went out.
    pub fn down(mut self, steps: Vec<Step>) -> Self {
        self.down = steps;
        self
    }

    /// The fingerprint of this migration's code steps, part of its checksum (required when
    /// it has code steps). Change it whenever the code changes in a way that matters: a
    /// database that already applied the migration then refuses the run instead of
    /// silently keeping the old effect.
    pub fn code_version(mut self, fingerprint: impl Into<String>) -> Self {
        self.code_version = Some(fingerprint.into());
        self
    }

    /// Its version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its steps.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Its down steps (empty: it cannot be rolled back).
    pub fn down_steps(&self) -> &[Step] {
        &self.down
    }
}
