//! The tenant policy: where a request names its tenant, which names are acceptable, and how a
//! tenant becomes a database name.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::request::Parts;
use axum::http::HeaderName;
use polymongo::{ConnectionSlot, PolyMongo};

use crate::allow::Allow;
use crate::deadline::{RequestClock, RequestLimits};
use crate::directory::{self, RoutedTenant};
use crate::error::{ConfigError, NameProblem, TenantError};
use crate::layer::TenancyLayer;
use crate::source::TenantSource;

/// Databases MongoDB keeps for itself. No request reaches them, whatever the mapping says
/// (compared case-insensitively: MongoDB refuses database names that differ only in case).
pub const RESERVED_DATABASES: [&str; 3] = ["admin", "local", "config"];

type MapFn = dyn Fn(&str) -> String + Send + Sync;

#[derive(Clone)]
enum Mapping {
    Identity,
    Prefix(String),
    Custom(Arc<MapFn>),
}

struct Policy {
    sources: Vec<TenantSource>,
    mapping: Mapping,
    allow: Allow,
    default: Option<String>,
    strict: bool,
    limits: RequestLimits,
    /// Asked for with [`TenancyBuilder::directory`]; made into `directory` by `build`.
    use_directory: bool,
    /// Tenants resolved through the manager's tenant directory.
    directory: Option<DirectoryPolicy>,
}

/// What the tenancy knows of the manager's tenant directory.
#[derive(Debug)]
struct DirectoryPolicy {
    /// The directory's own database: never a tenant's.
    database: String,
}

/// A request's tenant, resolved and accepted by the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTenant {
    /// The tenant as the request named it.
    pub tenant: Arc<str>,
    /// The database it maps to.
    pub database: Arc<str>,
}

/// The tenant routing of a service: a manager and the policy that turns a request into one of
/// its databases. Cheap to clone (two `Arc`s); put it in the router's state (or make it
/// reachable from the state with [`FromRef`](axum::extract::FromRef)), add its
/// [`layer`](Self::layer) to the router, and the [`Tenant`](crate::Tenant) extractor does the
/// rest.
///
/// Resolution, in order:
/// 1. the sources, in the order added; the first that finds a value decides, and a value that
///    is present but invalid is refused rather than skipped (none found: the default tenant,
///    else [`TenantError::Missing`]);
/// 2. the case rule, for every source: tenant names are lower-case, and a name with an
///    upper-case ASCII letter is refused (the subdomain source reads the host lower-cased,
///    host names being case-insensitive); MongoDB refuses databases whose names differ only
///    in case, so `Acme` and `acme` must never be two tenants;
/// 3. the name's characters: by default lower-case ASCII letters, digits, `_` and `-`,
///    starting with a letter or a digit ([`strict_names`](TenancyBuilder::strict_names));
/// 4. the mapping (a [`prefix`](TenancyBuilder::prefix) or a [function](TenancyBuilder::map);
///    with a [directory](TenancyBuilder::directory), the directory's `database_prefix`), then
///    MongoDB's database name rules on the result;
/// 5. the reserved databases ([`RESERVED_DATABASES`], and the directory's own database):
///    refused as unknown tenants;
/// 6. the allow policy ([`allow_list`](TenancyBuilder::allow_list),
///    [`allow`](TenancyBuilder::allow), [`allow_async`](TenancyBuilder::allow_async)),
///    required whenever there are sources and no directory: refused as unknown tenants. Only
///    then does the manager make any state for the database, so anonymous requests cannot
///    make the service keep state, or the server create databases, for names nobody allowed.
///    The default tenant comes from the configuration, not from a request, and is accepted
///    without the policy;
/// 7. with a [directory](TenancyBuilder::directory): the directory routes the tenant (a cache
///    lookup once warm) and says whether it is served; a tenant it does not have is refused as
///    unknown, and makes no state either.
#[derive(Clone)]
pub struct Tenancy {
    poly: PolyMongo,
    policy: Arc<Policy>,
}

impl fmt::Debug for Tenancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mapping = match &self.policy.mapping {
            Mapping::Identity => "identity".to_owned(),
            Mapping::Prefix(p) => format!("prefix {p:?}"),
            Mapping::Custom(_) => "custom".to_owned(),
        };
        f.debug_struct("Tenancy")
            .field("poly", &self.poly)
            .field("sources", &self.policy.sources)
            .field("mapping", &mapping)
            .field("allow", &self.policy.allow)
            .field("default", &self.policy.default)
            .field("strict_names", &self.policy.strict)
            .field("limits", &self.policy.limits)
            .field("directory", &self.policy.directory.is_some())
            .finish()
    }
}

/// Builds a [`Tenancy`]; see [`Tenancy::builder`].
pub struct TenancyBuilder {
    poly: PolyMongo,
    policy: Policy,
}

impl fmt::Debug for TenancyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenancyBuilder")
            .field("sources", &self.policy.sources)
            .finish_non_exhaustive()
    }
}

impl TenancyBuilder {
    /// Adds a header source (e.g. `HeaderName::from_static("x-tenant")`).
    pub fn header(self, name: HeaderName) -> Self {
        self.source(TenantSource::Header(name))
    }

    /// Adds a subdomain source: with base `example.com`, host `acme.example.com` names `acme`.
    pub fn subdomain(self, base: impl Into<String>) -> Self {
        let base = base.into().trim_start_matches('.').to_owned();
        self.source(TenantSource::Subdomain { base })
    }

    /// Adds a path parameter source: `path_param("tenant")` with routes such as
    /// `/t/{tenant}/notes`.
    pub fn path_param(self, name: impl Into<String>) -> Self {
        self.source(TenantSource::PathParam(name.into()))
    }

    /// Adds the application's own rule, e.g. a claim of a verified token that a middleware put
    /// in the request's extensions. Returning `None` lets the next source try.
    pub fn custom(self, f: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static) -> Self {
        self.source(TenantSource::Custom(Arc::new(f)))
    }

    /// Adds a source.
    pub fn source(mut self, source: TenantSource) -> Self {
        self.policy.sources.push(source);
        self
    }

    /// Database name = `prefix` + tenant, e.g. `tenant_` so that no tenant name can address
    /// another database of the cluster. Replaces a [`map`](Self::map).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.policy.mapping = Mapping::Prefix(prefix.into());
        self
    }

    /// Database name = `f(tenant)`. Replaces a [`prefix`](Self::prefix). The result is checked
    /// against MongoDB's rules and the reserved databases like any other.
    pub fn map(mut self, f: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        self.policy.mapping = Mapping::Custom(Arc::new(f));
        self
    }

    /// Accepts exactly these tenants (names as requests give them, lower-case); the others
    /// are answered 404 before any state is made for them. Each name is checked by
    /// [`build`](Self::build). Replaces an [`allow`](Self::allow) or
    /// [`allow_async`](Self::allow_async).
    pub fn allow_list<I, S>(mut self, tenants: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let set: HashSet<String> = tenants.into_iter().map(Into::into).collect();
        self.policy.allow = Allow::List(Arc::new(set));
        self
    }

    /// Accepts only tenants for which `f(tenant)` is true (the tenant name, checked against
    /// the name rules, before mapping); the others are answered 404 before any state is made
    /// for them. Called once per request that names a valid tenant: keep it cheap (a set
    /// lookup). `allow(|_| true)` accepts every valid name: only for sources the application
    /// trusts (a claim of a verified token), since each accepted name costs the manager a
    /// database entry and can make a database on the server. Replaces an
    /// [`allow_list`](Self::allow_list) or [`allow_async`](Self::allow_async).
    pub fn allow(mut self, f: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.policy.allow = Allow::function(f);
        self
    }

    /// Like [`allow`](Self::allow), for a check that awaits (a tenant directory in a database
    /// or a cache). It runs before the request takes its place in the pool: keep it within
    /// the request's deadline. Replaces an [`allow_list`](Self::allow_list) or
    /// [`allow`](Self::allow).
    pub fn allow_async<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.policy.allow = Allow::function_async(f);
        self
    }

    /// Resolves the tenant a request names through polymongo's tenant directory
    /// ([`PolyMongo::tenant`]): the same sources and name rules, then the directory says which
    /// cluster the tenant's database is on and whether it is served. The manager must have a
    /// directory (polymongo's `directory` option), whose `database_prefix` makes the database
    /// names: no [`prefix`](Self::prefix) or [`map`](Self::map) here.
    ///
    /// The directory is the allow policy: a tenant it does not have is answered 404 (each
    /// such request costs one read of the directory, and leaves no state behind). An
    /// [`allow_list`](Self::allow_list), [`allow`](Self::allow) or
    /// [`allow_async`](Self::allow_async) set as well is asked first, before the directory.
    /// The [default tenant](Self::default_tenant) is routed through the directory too.
    ///
    /// Once this instance has a tenant's entry, resolving it is a cache lookup: no round trip
    /// to the directory per request (the directory's change reader keeps the entry in step,
    /// so a suspension made through another instance is refused here within the directory's
    /// `refresh` plus one read). Answers: 404 `unknown_tenant`, 403 `suspended_tenant`, 410
    /// `tenant_gone` (archiving, archived, deleting), 503 `tenant_not_ready` without
    /// `Retry-After` (creating, restoring), 500 `invalid_tenant_record`, 400 for an id the
    /// directory refuses, and a failed read of the directory as [`DbError`](crate::DbError)
    /// answers it (see [`TenantError`]).
    ///
    /// Handlers get the model handles on the tenant's cluster
    /// ([`Tenant::record`](crate::Tenant::record) gives the directory's entry, labels
    /// included).
    ///
    /// ```
    /// # async fn f(poly: polymongo::PolyMongo) -> Result<(), polymongo_axum::ConfigError> {
    /// // poly built with `.directory(DirectoryConfig::on("main").database_prefix("t_"))`
    /// let tenancy = polymongo_axum::Tenancy::builder(poly)
    ///     .header(axum::http::HeaderName::from_static("x-tenant"))
    ///     .directory()
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn directory(mut self) -> Self {
        self.policy.use_directory = true;
        self
    }

    /// How long a request may wait for a place in its tenant's pool before it is answered 503
    /// `busy` with `Retry-After` (nothing sent). Default 1 s; see [`RequestLimits`].
    pub fn queue_timeout(mut self, wait: Duration) -> Self {
        self.policy.limits.queue = wait;
        self
    }

    /// How long a request may take in all before it is answered 504 `timeout` (or 503 `busy`
    /// if its handler had not started). Default 10 s; `Duration::MAX`: no limit. See
    /// [`RequestLimits`]. Set the drain deadline of [`serve`](crate::serve) above it, so that
    /// a shutdown lets every request meet its own deadline first.
    pub fn request_timeout(mut self, limit: Duration) -> Self {
        self.policy.limits.request = limit;
        self
    }

    /// The tenant of a request that names none. Without it such a request is answered 400.
    /// The default goes through the same checks (checked by [`build`](Self::build)).
    pub fn default_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.policy.default = Some(tenant.into());
        self
    }

    /// Whether tenant names are limited to lower-case ASCII letters, digits, `_` and `-`,
    /// starting with a letter or a digit. Default: true. Off, a name need only be lower-case
    /// ASCII-wise and make a database name MongoDB accepts — which admits look-alike Unicode
    /// tenants and names some servers refuse (answered 400 when they do).
    pub fn strict_names(mut self, strict: bool) -> Self {
        self.policy.strict = strict;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`ConfigError::NoSource`] without sources and default, [`ConfigError::NoAllowPolicy`]
    /// with sources and no allow policy, [`ConfigError::EmptyBaseDomain`],
    /// [`ConfigError::InvalidPrefix`] for a prefix with a character MongoDB forbids (or too
    /// long to leave room for a name), [`ConfigError::InvalidDefault`],
    /// [`ConfigError::InvalidAllowed`], [`ConfigError::InvalidLimits`]; with
    /// [`directory`](Self::directory), [`ConfigError::NoDirectory`] when the manager has no
    /// directory and [`ConfigError::MappingWithDirectory`] with a prefix or a map.
    pub fn build(mut self) -> Result<Tenancy, ConfigError> {
        let policy = &mut self.policy;
        if policy.sources.is_empty() && policy.default.is_none() {
            return Err(ConfigError::NoSource);
        }
        if policy.use_directory {
            let config = match (&self.poly.options().directory, self.poly.tenants()) {
                (Some(config), Ok(_)) => config,
                _ => return Err(ConfigError::NoDirectory),
            };
            if !matches!(policy.mapping, Mapping::Identity) {
                return Err(ConfigError::MappingWithDirectory);
            }
            // The names the directory makes, checked by the same rules as any other.
            if !config.database_prefix.is_empty() {
                policy.mapping = Mapping::Prefix(config.database_prefix.clone());
            }
            policy.directory = Some(DirectoryPolicy {
                database: config.database.clone(),
            });
        }
        if !policy.sources.is_empty()
            && matches!(policy.allow, Allow::Unset)
            && policy.directory.is_none()
        {
            return Err(ConfigError::NoAllowPolicy);
        }
        for source in &mut policy.sources {
            if let TenantSource::Subdomain { base } = source {
                // Hosts are read lower-cased; so is the base they are compared with.
                *base = base.trim_start_matches('.').to_ascii_lowercase();
                if base.is_empty() {
                    return Err(ConfigError::EmptyBaseDomain);
                }
            }
        }
        policy
            .limits
            .check()
            .map_err(|reason| ConfigError::InvalidLimits { reason })?;
        if let Mapping::Prefix(prefix) = &policy.mapping {
            // The prefix followed by a one-character name must be a valid database name.
            if let Err(polymongo::Error::InvalidName { rule, .. }) =
                polymongo::validate_database_name(&format!("{prefix}a"))
            {
                return Err(ConfigError::InvalidPrefix {
                    problem: NameProblem::Database(rule),
                });
            }
        }
        if let Some(default) = &policy.default {
            if let Err(e) = policy.database_for(default, "default tenant") {
                return Err(ConfigError::InvalidDefault {
                    reason: e.to_string(),
                });
            }
        }
        if let Allow::List(set) = &policy.allow {
            for tenant in set.iter() {
                if let Err(e) = policy.database_for(tenant, "allow list") {
                    return Err(ConfigError::InvalidAllowed {
                        tenant: tenant.clone(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        Ok(Tenancy {
            poly: self.poly,
            policy: Arc::new(self.policy),
        })
    }
}

impl Policy {
    /// Steps 2 to 5: case, characters, mapping, database rules, reserved names.
    fn database_for(&self, tenant: &str, source: &str) -> Result<String, TenantError> {
        let invalid = |problem| TenantError::InvalidName {
            source: source.to_owned(),
            problem,
        };
        if tenant.is_empty() {
            return Err(invalid(NameProblem::Empty));
        }
        if tenant.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid(NameProblem::UpperCase));
        }
        if self.strict {
            if let Some(c) = tenant
                .chars()
                .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
            {
                return Err(invalid(NameProblem::Character(c)));
            }
            if !tenant.starts_with(|c: char| c.is_ascii_alphanumeric()) {
                return Err(invalid(NameProblem::FirstCharacter));
            }
        }
        let database = match &self.mapping {
            Mapping::Identity => tenant.to_owned(),
            Mapping::Prefix(p) => format!("{p}{tenant}"),
            Mapping::Custom(f) => f(tenant),
        };
        if let Err(polymongo::Error::InvalidName { rule, .. }) =
            polymongo::validate_database_name(&database)
        {
            return Err(invalid(NameProblem::Database(rule)));
        }
        let directory_own = self
            .directory
            .as_ref()
            .is_some_and(|d| d.database.eq_ignore_ascii_case(&database));
        if directory_own
            || RESERVED_DATABASES
                .iter()
                .any(|r| r.eq_ignore_ascii_case(&database))
        {
            tracing::warn!(source, "request for a reserved database refused");
            return Err(TenantError::Reserved);
        }
        Ok(database)
    }

    /// Step 6: the allow policy; the configured default tenant needs none, and with a
    /// directory and no policy of its own the directory decides.
    async fn accepts(&self, tenant: &str) -> bool {
        if self.directory.is_some() && matches!(self.allow, Allow::Unset) {
            return true;
        }
        self.default.as_deref() == Some(tenant) || self.allow.accepts(tenant).await
    }
}

impl Tenancy {
    /// Starts a policy on `poly`. Add at least one source and an allow policy (or only a
    /// default tenant).
    ///
    /// ```
    /// # async fn f(poly: polymongo::PolyMongo) -> Result<(), polymongo_axum::ConfigError> {
    /// use axum::http::HeaderName;
    ///
    /// let tenancy = polymongo_axum::Tenancy::builder(poly)
    ///     .header(HeaderName::from_static("x-tenant"))
    ///     .subdomain("example.com")
    ///     .prefix("tenant_")
    ///     .allow_list(["acme", "globex"])
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn builder(poly: PolyMongo) -> TenancyBuilder {
        TenancyBuilder {
            poly,
            policy: Policy {
                sources: Vec::new(),
                mapping: Mapping::Identity,
                allow: Allow::Unset,
                default: None,
                strict: true,
                limits: RequestLimits::default(),
                use_directory: false,
                directory: None,
            },
        }
    }

    /// Whether tenants are resolved through the manager's tenant directory
    /// ([`TenancyBuilder::directory`]).
    pub fn uses_directory(&self) -> bool {
        self.policy.directory.is_some()
    }

    /// The manager.
    pub fn poly(&self) -> &PolyMongo {
        &self.poly
    }

    /// The time limits of its requests.
    pub fn limits(&self) -> RequestLimits {
        self.policy.limits
    }

    /// The layer that gives each request its deadline and every refusal the one JSON body:
    /// `router.layer(tenancy.layer())`. Required by the extractors; see [`TenancyLayer`].
    pub fn layer(&self) -> TenancyLayer {
        TenancyLayer {
            limits: self.policy.limits,
        }
    }

    /// The request's clock, put there by the layer.
    pub(crate) fn clock(parts: &Parts) -> Result<Arc<RequestClock>, TenantError> {
        parts
            .extensions
            .get::<Arc<RequestClock>>()
            .cloned()
            .ok_or(TenantError::NoLayer)
    }

    /// The request's place in its tenant's pool: taken once per request (several extractors
    /// share it), waiting at most the queue timeout cut to the request's deadline, before the
    /// handler runs. Refused: nothing was sent.
    pub(crate) async fn admit(
        &self,
        parts: &mut Parts,
        clock: &RequestClock,
        database: &str,
    ) -> Result<ConnectionSlot, TenantError> {
        if let Some(slot) = parts.extensions.get::<ConnectionSlot>() {
            return Ok(slot.clone());
        }
        let wait = clock.queue_wait();
        if wait.is_zero() {
            return Err(TenantError::Busy);
        }
        // With a directory, on the route's own entry: the cluster the directory named, never
        // one found again by database name (a directory change landing meanwhile could
        // send that elsewhere).
        let slot = match parts.extensions.get::<RoutedTenant>() {
            Some(routed) => routed.0.reserve_connection(wait).await,
            None => self.poly.reserve_connection(database, wait).await,
        }
        .map_err(|e| TenantError::from_library(&e))?;
        parts.extensions.insert(slot.clone());
        Ok(slot)
    }

    /// Applies the policy to a tenant name given outside a request (a job, an admin tool):
    /// the database it maps to, if it is accepted.
    ///
    /// With [`directory`](TenancyBuilder::directory), the tenant is routed through the
    /// directory as a request's would be, and must be served. The database name alone does not
    /// say which cluster it is on: use [`PolyMongo::tenant`] for the handles.
    ///
    /// # Errors
    /// As the extractor: [`TenantError::InvalidName`], [`TenantError::Reserved`],
    /// [`TenantError::Unknown`]; with a directory, its refusals too.
    pub async fn database_for(&self, tenant: &str) -> Result<String, TenantError> {
        let database = self.policy.database_for(tenant, "tenant name")?;
        if !self.policy.accepts(tenant).await {
            return Err(TenantError::Unknown);
        }
        if self.policy.directory.is_some() {
            let routed = directory::route(&self.poly, tenant, "tenant name").await?;
            return Ok(routed.info().database.clone());
        }
        Ok(database)
    }

    /// Resolves the request's tenant. The result is kept in the request's extensions, so
    /// several extractors in one handler resolve (and ask the allow-list) once.
    ///
    /// # Errors
    /// See [`TenantError`].
    pub async fn resolve(&self, parts: &mut Parts) -> Result<ResolvedTenant, TenantError> {
        if let Some(done) = parts.extensions.get::<ResolvedTenant>() {
            return Ok(done.clone());
        }
        let mut found = None;
        for source in &self.policy.sources {
            if let Some(value) = source.find(parts).await? {
                found = Some((value, source.to_string()));
                break;
            }
        }
        let (tenant, source) = match found {
            Some(f) => f,
            None => match &self.policy.default {
                Some(d) => (d.clone(), "default tenant".to_owned()),
                None => return Err(TenantError::Missing),
            },
        };
        let mut database = self.policy.database_for(&tenant, &source)?;
        if !self.policy.accepts(&tenant).await {
            return Err(TenantError::Unknown);
        }
        if self.policy.directory.is_some() {
            // Warm: a cache lookup. Cold: one read, shared with concurrent requests for the
            // same tenant; a request dropped meanwhile leaves nothing behind.
            let routed = directory::route(&self.poly, &tenant, &source).await?;
            database.clone_from(&routed.info().database);
            parts.extensions.insert(RoutedTenant(routed));
        }
        let resolved = ResolvedTenant {
            tenant: tenant.into(),
            database: database.into(),
        };
        parts.extensions.insert(resolved.clone());
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mapping: Mapping) -> Policy {
        Policy {
            sources: Vec::new(),
            mapping,
            allow: Allow::Unset,
            default: None,
            strict: true,
            limits: RequestLimits::default(),
            use_directory: false,
            directory: None,
        }
    }

    #[test]
    fn strict_names_refuse_punctuation_and_unicode() {
        let p = policy(Mapping::Identity);
        for bad in ["a.b", "a b", "café", "_x", "-x", "a$b", "a/b", "", "Acme"] {
            assert!(
                matches!(
                    p.database_for(bad, "test"),
                    Err(TenantError::InvalidName { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            p.database_for("acme-1_x", "test").as_deref(),
            Ok("acme-1_x")
        );
    }

    #[test]
    fn one_case_rule_whatever_the_characters() {
        let mut p = policy(Mapping::Prefix("tenant_".into()));
        for strict in [true, false] {
            p.strict = strict;
            for upper in ["Gamma", "ACME", "aCme"] {
                assert_eq!(
                    p.database_for(upper, "t"),
                    Err(TenantError::InvalidName {
                        source: "t".into(),
                        problem: NameProblem::UpperCase
                    }),
                    "{upper} (strict {strict})"
                );
            }
        }
    }

    #[test]
    fn reserved_databases_are_refused_in_any_case() {
        let p = policy(Mapping::Identity);
        for r in ["admin", "local", "config"] {
            assert_eq!(p.database_for(r, "test"), Err(TenantError::Reserved), "{r}");
        }
        // A mapping that changes the case still cannot reach them.
        let p = policy(Mapping::Custom(Arc::new(|t| t.to_ascii_uppercase())));
        assert_eq!(p.database_for("admin", "t"), Err(TenantError::Reserved));
        // With a prefix the same names are ordinary tenants.
        let p = policy(Mapping::Prefix("tenant_".into()));
        assert_eq!(p.database_for("admin", "t").as_deref(), Ok("tenant_admin"));
        // A mapping that lands on a reserved database is refused too.
        let p = policy(Mapping::Custom(Arc::new(|_| "admin".to_owned())));
        assert_eq!(p.database_for("x", "t"), Err(TenantError::Reserved));
    }

    #[test]
    fn lax_names_still_obey_mongodb_rules() {
        let mut p = policy(Mapping::Identity);
        p.strict = false;
        assert_eq!(p.database_for("café", "t").as_deref(), Ok("café"));
        assert!(matches!(
            p.database_for("a.b", "t"),
            Err(TenantError::InvalidName {
                problem: NameProblem::Database(_),
                ..
            })
        ));
        let long = "x".repeat(64);
        assert!(p.database_for(&long, "t").is_err());
    }
}
