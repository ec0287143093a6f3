//! Routing a model to a tenant's database through the tenant directory:
//! [`ModelHandle::tenant`](crate::ModelHandle::tenant) and its future, [`ModelRoute`].
//!
//! The directory lives in a higher layer (features). Model handles reach it through
//! [`TenantRouter`], which the directory implements and the facade hands to every model
//! handle it makes: the handles layer knows the seam, not the directory.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::floor::error::{Error, Result};
use crate::handle::model::{DbHandle, Model, ModelHandle};
use crate::registry::DbLease;

/// What a warm look-up of a tenant found.
pub(crate) enum WarmLease {
    /// The tenant is routed and served: a lease on its database's entry.
    Hit(DbLease),
    /// The tenant's cached record refuses it (suspended, archived, the directory stale...).
    Refused(Box<Error>),
    /// Nothing cached: the directory must be read.
    Miss,
}

/// The cold read of a tenant's route, boxed: only the cold path pays for it.
pub(crate) type ColdLease<'a> = Pin<Box<dyn Future<Output = Result<DbLease>> + Send + 'a>>;

/// A tenant router: the tenant directory, seen from a model handle.
pub(crate) trait TenantRouter: Send + Sync {
    /// The cached route of tenant `id`, with no I/O.
    fn warm(&self, id: &str) -> WarmLease;

    /// Tenant `id`'s route read from the directory (shared by concurrent callers), placed
    /// in the registry. Safe to drop at any await.
    fn cold<'a>(&'a self, id: &'a str) -> ColdLease<'a>;
}

/// The future of [`ModelHandle::tenant`](crate::ModelHandle::tenant): model `T`'s
/// collection in a tenant's database.
///
/// When this instance has the tenant's route cached, the handle was made with the future:
/// the first poll hands it over. Otherwise it reads the directory (boxed, so that a warm
/// route's future stays small). Dropping it at any point is safe: a directory read shared
/// with other callers goes on for them, and nothing is left behind for this one.
#[must_use = "futures do nothing unless awaited"]
pub struct ModelRoute<'a, T: Model>(State<'a, T>);

// The warm states hold the handle (or a boxed refusal) rather than a `Result`: the crate's
// error is large, and a warm route's future is made, moved and polled on every call.
enum State<'a, T: Model> {
    Ready(Option<DbHandle<T>>),
    Refused(Option<Box<Error>>),
    Cold(Pin<Box<dyn Future<Output = Result<DbHandle<T>>> + Send + 'a>>),
}

impl<'a, T: Model> ModelRoute<'a, T> {
    /// Routes `id` through `router` for a model whose collection name was checked: warm
    /// here, cold when polled.
    #[inline]
    pub(crate) fn new(router: &'a dyn TenantRouter, id: &'a str) -> Self {
        match router.warm(id) {
            WarmLease::Hit(lease) => {
                match ModelHandle::<T>::enter_now(ModelHandle::<T>::on_checked_lease(lease)) {
                    Ok(handle) => ModelRoute(State::Ready(Some(handle))),
                    Err(e) => Self::refused(e),
                }
            }
            WarmLease::Refused(e) => ModelRoute(State::Refused(Some(e))),
            WarmLease::Miss => Self::cold(router, id),
        }
    }

    #[cold]
    fn cold(router: &'a dyn TenantRouter, id: &'a str) -> Self {
        ModelRoute(State::Cold(Box::pin(async move {
            let lease = router.cold(id).await?;
            ModelHandle::<T>::enter_now(ModelHandle::<T>::on_checked_lease(lease))
        })))
    }

    /// A route that fails with `e` when polled.
    #[cold]
    pub(crate) fn refused(e: Error) -> Self {
        ModelRoute(State::Refused(Some(Box::new(e))))
    }
}

const POLLED_AGAIN: &str = "`ModelRoute` polled after completion";

impl<T: Model> Future for ModelRoute<'_, T> {
    type Output = Result<DbHandle<T>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // `DbHandle` is `Unpin` (reference counts and options), and so is the boxed cold
        // read: the state can be reached through a plain `&mut`. Polling again after
        // `Ready` breaks the `Future` contract: it panics, as `std::future::Ready` does.
        match &mut self.get_mut().0 {
            State::Ready(handle) => Poll::Ready(Ok(handle.take().expect(POLLED_AGAIN))),
            State::Refused(e) => Poll::Ready(Err(*e.take().expect(POLLED_AGAIN))),
            State::Cold(read) => read.as_mut().poll(cx),
        }
    }
}

impl<T: Model> std::fmt::Debug for ModelRoute<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.0 {
            State::Ready(_) | State::Refused(_) => "cached",
            State::Cold(_) => "reading the directory",
        };
        f.debug_tuple("ModelRoute")
            .field(&std::any::type_name::<T>())
            .field(&state)
            .finish()
    }
}
