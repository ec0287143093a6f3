//! The extractors: the request's tenant as a typed model handle ([`Tenant`]) or as a database
//! to take several models from ([`TenantDb`]).

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use polymongo::{DbHandle, Model, PolyMongo};

use crate::error::TenantError;
use crate::tenancy::Tenancy;

/// The model `T` on the request's tenant database.
///
/// Dereferences to polymongo's [`DbHandle<T>`], which dereferences to the driver's
/// `Collection<T>`: `tenant.find(filter).await`, or `tenant.run(|c| c.find_one(f)).await` to
/// count the operation in the usage analytics. Taken with
/// [`ModelHandle::acquire`](polymongo::ModelHandle::acquire): the model's declared indexes exist
/// in the tenant's database, and a database with `max_concurrent_ops` has given the handle
/// one of its slots.
///
/// The state must give a [`Tenancy`] (`Tenancy: FromRef<S>`). Refused with a [`TenantError`]
/// (400, 404 or 503, JSON body).
pub struct Tenant<T: Model> {
    tenant: Arc<str>,
    handle: DbHandle<T>,
}

impl<T: Model> Tenant<T> {
    /// The tenant as the request named it.
    pub fn name(&self) -> &str {
        &self.tenant
    }

    /// The database the tenant maps to.
    pub fn database(&self) -> &str {
        self.handle.database_name()
    }

    /// The handle.
    pub fn handle(&self) -> &DbHandle<T> {
        &self.handle
    }

    /// The handle, giving up the extractor.
    pub fn into_handle(self) -> DbHandle<T> {
        self.handle
    }
}

impl<T: Model> Deref for Tenant<T> {
    type Target = DbHandle<T>;

    fn deref(&self) -> &DbHandle<T> {
        &self.handle
    }
}

impl<T: Model> fmt::Debug for Tenant<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant")
            .field("tenant", &self.tenant)
            .field("handle", &self.handle)
            .finish()
    }
}

impl<S, T> FromRequestParts<S> for Tenant<T>
where
    Tenancy: FromRef<S>,
    S: Send + Sync,
    T: Model,
{
    type Rejection = TenantError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let tenancy = Tenancy::from_ref(state);
        let resolved = tenancy.resolve(parts).await?;
        let handle = tenancy
            .poly()
            .model::<T>()
            .acquire(&resolved.database)
            .await
            .map_err(|e| TenantError::from_library(&e))?;
        Ok(Tenant {
            tenant: resolved.tenant,
            handle,
        })
    }
}

/// The request's tenant database, for a handler that uses several models there.
///
/// `tenant_db.model::<Order>().await?` is the same handle [`Tenant<Order>`] would give.
#[derive(Clone)]
pub struct TenantDb {
    tenant: Arc<str>,
    database: Arc<str>,
    poly: PolyMongo,
}

impl fmt::Debug for TenantDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantDb")
            .field("tenant", &self.tenant)
            .field("database", &self.database)
            .finish()
    }
}

impl TenantDb {
    /// The tenant as the request named it.
    pub fn name(&self) -> &str {
        &self.tenant
    }

    /// The database the tenant maps to.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Model `T` on the tenant's database, as [`Tenant<T>`] takes it.
    ///
    /// # Errors
    /// [`TenantError::ShuttingDown`], [`TenantError::Busy`], [`TenantError::Unavailable`].
    pub async fn model<T: Model>(&self) -> Result<DbHandle<T>, TenantError> {
        self.poly
            .model::<T>()
            .acquire(&self.database)
            .await
            .map_err(|e| TenantError::from_library(&e))
    }

    /// The manager, for anything else (transactions over the tenant's database, stats).
    pub fn poly(&self) -> &PolyMongo {
        &self.poly
    }
}

impl<S> FromRequestParts<S> for TenantDb
where
    Tenancy: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = TenantError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let tenancy = Tenancy::from_ref(state);
        let resolved = tenancy.resolve(parts).await?;
        if tenancy.poly().is_closed() {
            return Err(TenantError::ShuttingDown);
        }
        Ok(TenantDb {
            tenant: resolved.tenant,
            database: resolved.database,
            poly: tenancy.poly().clone(),
        })
    }
}
