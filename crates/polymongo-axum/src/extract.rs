//! The extractors: the request's tenant as a typed model handle ([`Tenant`]) or as a database
//! to take several models from ([`TenantDb`]).

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use polymongo::tenants::TenantInfo;
use polymongo::{ConnectionSlot, DbHandle, Model, PolyMongo};

use crate::deadline::RequestClock;
use crate::directory::RoutedTenant;
use crate::error::TenantError;
use crate::tenancy::{ResolvedTenant, Tenancy};

/// The model `T` on the request's tenant database.
///
/// Dereferences to polymongo's [`DbHandle<T>`], which dereferences to the driver's
/// `Collection<T>`: `tenant.find(filter).await`, or `tenant.run(|c| c.find_one(f)).await` to
/// count the operation in the usage analytics. Before the handler runs, the extractor:
/// 1. resolves and checks the tenant ([`Tenancy`]), refusing unknown tenants before any state
///    is made for them;
/// 2. takes the request's place in the tenant's pool — one of its `max_pool_size` connection
///    slots, waited for at most the queue timeout (else 503 `busy`, nothing sent) and held
///    until the handler returns, so the handlers running on a pool never outnumber its
///    connections, however they call the driver;
/// 3. prepares the handle with [`ModelHandle::acquire`](polymongo::ModelHandle::acquire): the
///    model's declared indexes exist in the tenant's database, and a database with
///    `max_concurrent_ops` has given the handle one of its slots.
///
/// With a [directory](crate::TenancyBuilder::directory), step 1 routes the tenant through
/// the directory (a cache lookup once warm) and the handle is on the tenant's cluster, taken
/// from that route ([`polymongo::tenants::Tenant::model`]); declared indexes are ensured there
/// as by `acquire`, once per database entry.
///
/// The request's deadline ([`Tenancy::layer`]) bounds the rest. The state must give a
/// [`Tenancy`] (`Tenancy: FromRef<S>`). Refused with a [`TenantError`] (400, 404 or 503, JSON
/// body; with a directory also 403, 410 and 500, see [`TenantError`]).
pub struct Tenant<T: Model> {
    tenant: Arc<str>,
    handle: DbHandle<T>,
    routed: Option<RoutedTenant>,
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

    /// The tenant's entry in the tenant directory as this instance has it (cluster, state,
    /// labels), when the tenancy resolves through a
    /// [directory](crate::TenancyBuilder::directory); `None` otherwise.
    pub fn record(&self) -> Option<&TenantInfo> {
        self.routed.as_ref().map(|r| r.0.info())
    }

    /// The handle, giving up the extractor. The request's place in the pool goes with it
    /// (and with its clones): a handle kept past the handler keeps that place taken.
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
        let (resolved, slot, clock) = admitted(&tenancy, parts).await?;
        let routed = parts.extensions.get::<RoutedTenant>().cloned();
        let handle =
            prepare::<T>(tenancy.poly(), &resolved.database, routed.as_ref(), &slot).await?;
        clock.handed();
        Ok(Tenant {
            tenant: resolved.tenant,
            handle,
            routed,
        })
    }
}

/// Resolves the request's tenant and takes its place in the pool: the steps every tenant
/// extractor shares, all before the handler runs.
async fn admitted(
    tenancy: &Tenancy,
    parts: &mut Parts,
) -> Result<(ResolvedTenant, ConnectionSlot, Arc<RequestClock>), TenantError> {
    let clock = Tenancy::clock(parts)?;
    clock.preparing();
    let resolved = tenancy.resolve(parts).await?;
    let slot = tenancy.admit(parts, &clock, &resolved.database).await?;
    Ok((resolved, slot, clock))
}

/// Model `T`'s handle on `database`, ready for work and running in `slot`. With a directory
/// route, the handle is the route's, on the cluster the directory named: never one made
/// again by database name, which a change of the directory landing meanwhile could send to
/// another cluster.
async fn prepare<T: Model>(
    poly: &PolyMongo,
    database: &str,
    routed: Option<&RoutedTenant>,
    slot: &ConnectionSlot,
) -> Result<DbHandle<T>, TenantError> {
    let library = |e: polymongo::Error| TenantError::from_library(&e);
    let Some(routed) = routed else {
        let handle = poly.model::<T>().acquire(database).await.map_err(library)?;
        return Ok(handle.with_connection_slot(slot));
    };
    // On the route's entry: lazy migrations, the model's indexes (once per entry, no round
    // trip after) and the handle are all on the cluster the directory named.
    let handle = routed.0.acquire::<T>().await.map_err(library)?;
    Ok(handle.with_connection_slot(slot))
}

/// The request's tenant database, for a handler that uses several models there.
///
/// Resolved and admitted like [`Tenant<T>`] (the request's place in the pool is taken before
/// the handler runs and held while this lives); `tenant_db.model::<Order>().await?` is the
/// handle [`Tenant<Order>`] would give, running in that same place.
#[derive(Clone)]
pub struct TenantDb {
    tenant: Arc<str>,
    database: Arc<str>,
    poly: PolyMongo,
    slot: ConnectionSlot,
    routed: Option<RoutedTenant>,
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

    /// Model `T` on the tenant's database, as [`Tenant<T>`] takes it (with a directory, on
    /// the tenant's cluster, from the request's route).
    ///
    /// # Errors
    /// [`TenantError::ShuttingDown`], [`TenantError::Busy`], [`TenantError::Unavailable`].
    pub async fn model<T: Model>(&self) -> Result<DbHandle<T>, TenantError> {
        prepare::<T>(&self.poly, &self.database, self.routed.as_ref(), &self.slot).await
    }

    /// The tenant's entry in the tenant directory as this instance has it, when the tenancy
    /// resolves through a [directory](crate::TenancyBuilder::directory); `None` otherwise.
    pub fn record(&self) -> Option<&TenantInfo> {
        self.routed.as_ref().map(|r| r.0.info())
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
        let (resolved, slot, clock) = admitted(&tenancy, parts).await?;
        clock.handed();
        Ok(TenantDb {
            tenant: resolved.tenant,
            database: resolved.database,
            poly: tenancy.poly().clone(),
            slot,
            routed: parts.extensions.get::<RoutedTenant>().cloned(),
        })
    }
}
