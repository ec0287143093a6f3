//! Which tenants a service accepts. A tenancy with sources needs an explicit policy: without
//! one, anyone could name any tenant and make the manager keep state for it — or, for a model
//! with indexes, make a database on the server.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

type SyncFn = dyn Fn(&str) -> bool + Send + Sync;
type BoxBool = Pin<Box<dyn Future<Output = bool> + Send>>;
type AsyncFn = dyn Fn(String) -> BoxBool + Send + Sync;

/// The allow policy of a [`Tenancy`](crate::Tenancy).
#[derive(Clone, Default)]
pub(crate) enum Allow {
    /// None set: the builder refuses a tenancy with sources and no policy.
    #[default]
    Unset,
    /// A fixed set of tenant names.
    List(Arc<HashSet<String>>),
    /// The application's check.
    Sync(Arc<SyncFn>),
    /// The application's check that awaits (a tenant directory).
    Async(Arc<AsyncFn>),
}

impl fmt::Debug for Allow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Allow::Unset => f.write_str("unset"),
            Allow::List(set) => write!(f, "list of {}", set.len()),
            Allow::Sync(_) => f.write_str("function"),
            Allow::Async(_) => f.write_str("async function"),
        }
    }
}

impl Allow {
    pub(crate) fn function(f: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        Allow::Sync(Arc::new(f))
    }

    pub(crate) fn function_async<F, Fut>(f: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        Allow::Async(Arc::new(move |t| Box::pin(f(t))))
    }

    /// Whether `tenant` (already checked against the name rules) is accepted.
    pub(crate) async fn accepts(&self, tenant: &str) -> bool {
        match self {
            Allow::Unset => false,
            Allow::List(set) => set.contains(tenant),
            Allow::Sync(f) => f(tenant),
            Allow::Async(f) => f(tenant.to_owned()).await,
        }
    }
}
