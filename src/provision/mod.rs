//! Provisioner: resolves a verified identity to a dashboard user through the admin API (SCIM
//! 2.0), creating it on first login — policy (enabled, allowed domains, rules, mode), the
//! known-user cache, single-flight per user in the process, a lock in the shared session store
//! (Redis) across replicas, and a circuit breaker in front of the admin API.
//!
//! The order of one resolve (CONTRACT.md, "Just-in-time provisioning over SCIM 2.0"):
//! email? → known-user cache → (single flight per userName) → breaker → shared-store lock →
//! lookup → found: active? (sync_on_login: PUT) / absent: enabled? domain allowed? → create →
//! 409: look up again → unlock → cache → audit.

mod scim;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use moka::sync::Cache;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rand::Rng;

use crate::config::{DomainPattern, ProvisioningConfig, ProvisioningMode, ProvisioningRule};
use crate::identity::Identity;
use crate::session::{LockToken, Sessions};
use scim::{NewUser, ScimClient, ScimError, ScimUser};

/// Why a [`Provisioner`] could not be built (a configuration problem; no secret in the text).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Error(#[from] scim::BuildError);

/// Why an unknown user was not created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotFoundReason {
    /// Automatic provisioning is switched off (`provisioning.enabled = false`).
    Disabled,
    /// The email's domain is not in `provisioning.allowed_domains`.
    DomainNotAllowed,
}

/// Why the admin API could not answer (the 503 page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnavailableReason {
    /// No answer within `provisioning.timeout`.
    Timeout,
    /// The admin API could not be reached (connection refused or reset, TLS, DNS).
    Unreachable,
    /// The admin API answered with a server error.
    ServerError {
        /// The HTTP status.
        status: u16,
    },
    /// The admin API refused the request (e.g. 401: wrong token, 400: payload refused).
    Refused {
        /// The HTTP status.
        status: u16,
    },
    /// The admin API answered something that is not SCIM.
    BadResponse,
    /// Recent calls failed; the admin API is not tried again until the cool-down ends.
    CircuitOpen,
    /// The cross-replica lock (Redis) could not be taken.
    Lock,
}

impl UnavailableReason {
    /// A short machine-readable name (audit `reason`, metrics).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::ServerError { .. } => "server_error",
            Self::Refused { .. } => "refused",
            Self::BadResponse => "bad_response",
            Self::CircuitOpen => "circuit_open",
            Self::Lock => "lock",
        }
    }
}

impl fmt::Display for UnavailableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("it did not answer in time"),
            Self::Unreachable => f.write_str("it could not be reached"),
            Self::ServerError { status } => write!(f, "it answered with an error (HTTP {status})"),
            Self::Refused { status } => {
                write!(f, "it refused the gateway's request (HTTP {status})")
            }
            Self::BadResponse => f.write_str("its answer could not be understood"),
            Self::CircuitOpen => {
                f.write_str("it has been failing; the gateway is giving it a short rest")
            }
            Self::Lock => f.write_str("the gateway could not coordinate with its other replicas"),
        }
    }
}

/// Why a login was not resolved to a dashboard user. The `Display` text is written for the
/// error page the user sees; it never holds a secret. [`ProvisionError::Unavailable`] is a
/// 503 page, every other variant a 403 page.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    /// The dashboard holds the user with `active: false`.
    #[error(
        "Your dashboard account is deactivated. Ask your dashboard administrator to reactivate it."
    )]
    Inactive,
    /// The user does not exist and may not be created.
    #[error("{}", match .reason {
        NotFoundReason::Disabled => "No dashboard account exists for you, and accounts are not created automatically. Ask your dashboard administrator to create one.",
        NotFoundReason::DomainNotAllowed => "No dashboard account exists for you, and accounts are created automatically only for approved email domains. Ask your dashboard administrator to create one.",
    })]
    NotFound {
        /// Disabled provisioning or a domain not allowed.
        reason: NotFoundReason,
    },
    /// The assertion carried no email (no email attribute and a NameID that is not an email).
    #[error(
        "Your identity provider did not send an email address, which is needed to find your dashboard account. Ask your identity provider administrator to release the email attribute."
    )]
    NoEmail,
    /// The admin API is down, slow or failing; nothing was created. Retrying later may work.
    #[error(
        "The dashboard's user directory is unavailable right now ({reason}). Please try again in a minute."
    )]
    Unavailable {
        /// What went wrong.
        reason: UnavailableReason,
    },
}

impl ProvisionError {
    /// A short machine-readable name (audit `reason`, metrics `outcome`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Inactive => "inactive",
            Self::NotFound {
                reason: NotFoundReason::Disabled,
            } => "disabled",
            Self::NotFound {
                reason: NotFoundReason::DomainNotAllowed,
            } => "domain_not_allowed",
            Self::NoEmail => "no_email",
            Self::Unavailable { .. } => "unavailable",
        }
    }
}

/// Knobs that are not in the config file; [`Tuning::default`] is what `Provisioner::new` uses.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Extra lookup attempts after a transient failure (transport error, 5xx, 429), each after
    /// a jittered, doubling backoff, all within one `timeout`.
    pub lookup_retries: u32,
    /// The first backoff (doubled per retry, jittered between half and all of it).
    pub backoff: Duration,
    /// Consecutive admin-API failures that open the circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker fails logins fast before trying the admin API again.
    pub breaker_cooldown: Duration,
    /// How long a refusal (inactive, not found) is remembered.
    pub refusal_ttl: Duration,
    /// Entries in each cache.
    pub cache_capacity: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            lookup_retries: 2,
            backoff: Duration::from_millis(50),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(15),
            refusal_ttl: Duration::from_secs(5),
            cache_capacity: 100_000,
        }
    }
}

/// What the dashboard holds for a user (or what a user was just created with).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Resolved {
    user_id: String,
    workspace: Option<String>,
    permission_set: Option<String>,
    created: bool,
}

/// Labels of `samlgate_provisioning_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

type Flight = Shared<BoxFuture<'static, Result<Resolved, ProvisionError>>>;

/// Resolves verified identities to dashboard users; built once, shared (cheap to clone).
#[derive(Clone)]
pub struct Provisioner {
    inner: Arc<Inner>,
}

impl fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provisioner")
            .field("scim", &self.inner.scim)
            .finish_non_exhaustive()
    }
}

struct Inner {
    scim: ScimClient,
    enabled: bool,
    timeout: Duration,
    default_workspace: String,
    default_permission_set: String,
    allowed_domains: Vec<DomainPattern>,
    rules: Vec<ProvisioningRule>,
    mode: ProvisioningMode,
    tuning: Tuning,
    known: Cache<String, Resolved>,
    refused: Cache<String, ProvisionError>,
    in_flight: Mutex<HashMap<String, Flight>>,
    breaker: Breaker,
    lock: Option<SharedLock>,
    outcomes: Family<OutcomeLabel, Counter>,
}

impl Provisioner {
    /// Builds the provisioner: the pooled HTTPS client, the caches, and — when `shared` is
    /// given (the session store that replicas share, Redis) — the cross-replica lock, held in
    /// that store.
    pub fn new(cfg: &ProvisioningConfig, shared: Option<Sessions>) -> Result<Provisioner, Error> {
        Self::with_tuning(cfg, shared, Tuning::default())
    }

    /// [`Provisioner::new`] with explicit [`Tuning`] (tests, benchmarks).
    pub fn with_tuning(
        cfg: &ProvisioningConfig,
        shared: Option<Sessions>,
        tuning: Tuning,
    ) -> Result<Provisioner, Error> {
        let scim = ScimClient::new(&cfg.url, cfg.token.expose(), &cfg.payload, cfg.timeout)?;
        let known = Cache::builder()
            .max_capacity(tuning.cache_capacity)
            .time_to_live(cfg.cache_ttl)
            .build();
        let refused = Cache::builder()
            .max_capacity(tuning.cache_capacity)
            .time_to_live(tuning.refusal_ttl.min(cfg.cache_ttl))
            .build();
        // The lock must outlive its holder's work: a lookup, a create and a second lookup.
        let lock_ttl = cfg.timeout * 4 + Duration::from_secs(1);
        let lock = shared.map(|sessions| SharedLock {
            sessions,
            ttl: lock_ttl,
        });
        Ok(Provisioner {
            inner: Arc::new(Inner {
                scim,
                enabled: cfg.enabled,
                timeout: cfg.timeout,
                default_workspace: cfg.default_workspace.clone(),
                default_permission_set: cfg.default_permission_set.clone(),
                allowed_domains: cfg.allowed_domains.clone(),
                rules: cfg.rules.clone(),
                mode: cfg.mode,
                breaker: Breaker::new(tuning.breaker_threshold, tuning.breaker_cooldown),
                tuning,
                known,
                refused,
                in_flight: Mutex::new(HashMap::new()),
                lock,
                outcomes: Family::default(),
            }),
        })
    }

    /// Registers `samlgate_provisioning_total{outcome}` and
    /// `samlgate_provisioning_admin_api_duration_seconds{op}`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "samlgate_provisioning",
            "Logins resolved by the provisioner, by outcome (created, found, cached, inactive, disabled, domain_not_allowed, no_email, unavailable)",
            self.inner.outcomes.clone(),
        );
        registry.register(
            "samlgate_provisioning_admin_api_duration_seconds",
            "Latency of admin API (SCIM) calls, by operation (lookup, create, replace)",
            self.inner.scim.latency.clone(),
        );
    }

    /// Resolves a verified identity to its dashboard user, creating it if allowed, and returns it
    /// with `user_id`, `workspace` and `permission_set` filled in.
    pub async fn resolve(&self, identity: Identity) -> Result<Identity, ProvisionError> {
        let started = Instant::now();
        let inner = &self.inner;
        let Some(email) = login_email(&identity) else {
            inner.count("no_email");
            audit_denied(
                &identity.subject,
                "-",
                &ProvisionError::NoEmail,
                started,
                false,
            );
            return Err(ProvisionError::NoEmail);
        };
        let key = email.to_lowercase();

        // The hot path of a returning user: one cache hit, no admin-API call.
        if let Some(hit) = inner.known.get(&key) {
            return Ok(inner.cache_hit(identity, email, &hit, started));
        }

        let (flight, leader) = {
            let mut in_flight = inner.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            // Re-checked under the lock: a flight fills the caches before it leaves the map.
            if let Some(hit) = inner.known.get(&key) {
                drop(in_flight);
                return Ok(inner.cache_hit(identity, email, &hit, started));
            }
            if let Some(refusal) = inner.refused.get(&key) {
                drop(in_flight);
                inner.count(refusal.as_str());
                audit_denied(&email, inner.rule_name(&identity), &refusal, started, true);
                return Err(refusal);
            }
            match in_flight.get(&key) {
                Some(f) => (f.clone(), false),
                None => {
                    let f = Self::spawn_flight(
                        self.inner.clone(),
                        identity.clone(),
                        email.clone(),
                        key.clone(),
                    );
                    in_flight.insert(key, f.clone());
                    (f, true)
                }
            }
        };
        let result = flight.await;
        match &result {
            Ok(r) if r.created && !leader => inner.count("found"),
            Ok(r) if r.created => inner.count("created"),
            Ok(_) => inner.count("found"),
            Err(e) => inner.count(e.as_str()),
        }
        Ok(apply(identity, email, &result?))
    }

    /// Runs one decision for `key` on its own task, so that it finishes (lock released, caches
    /// filled) even if every login waiting for it goes away.
    fn spawn_flight(inner: Arc<Inner>, identity: Identity, email: String, key: String) -> Flight {
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let result = inner.decide(&identity, &email, &key).await;
            let rule = inner.rule_name(&identity);
            match &result {
                Ok(r) => {
                    let event = if r.created {
                        "provision.created"
                    } else {
                        "provision.found"
                    };
                    tracing::info!(target: "audit", event, user = %email, user_id = %r.user_id, rule = %rule,
                        workspace = r.workspace.as_deref().unwrap_or(""), permission_set = r.permission_set.as_deref().unwrap_or(""),
                        cached = false, duration_ms = elapsed_ms(started));
                    inner.known.insert(key.clone(), r.clone());
                }
                Err(e @ ProvisionError::Unavailable { reason }) => {
                    tracing::warn!(target: "audit", event = "provision.failed", user = %email, rule = %rule,
                        reason = reason.as_str(), detail = %e, duration_ms = elapsed_ms(started));
                }
                Err(e) => {
                    audit_denied(&email, rule, e, started, false);
                    inner.refused.insert(key.clone(), e.clone());
                }
            }
            inner
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            result
        });
        async move {
            task.await.unwrap_or_else(|e| {
                tracing::error!(target: "audit", event = "provision.failed", reason = "panic", error = %e);
                Err(ProvisionError::Unavailable { reason: UnavailableReason::BadResponse })
            })
        }
        .boxed()
        .shared()
    }
}

impl Inner {
    fn count(&self, outcome: &'static str) {
        self.outcomes.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The first rule whose group the user is in.
    fn rule_for(&self, identity: &Identity) -> Option<&ProvisioningRule> {
        self.rules
            .iter()
            .find(|r| identity.groups.iter().any(|g| **g == *r.group))
    }

    fn rule_name<'a>(&'a self, identity: &Identity) -> &'a str {
        self.rule_for(identity)
            .map_or("default", |r| r.group.as_str())
    }

    /// A returning user within `cache_ttl`: counted, audited, no admin-API call.
    fn cache_hit(
        &self,
        identity: Identity,
        email: String,
        hit: &Resolved,
        started: Instant,
    ) -> Identity {
        self.count("cached");
        tracing::info!(target: "audit", event = "provision.found", user = %email, user_id = %hit.user_id,
            rule = self.rule_name(&identity), cached = true, duration_ms = elapsed_ms(started));
        apply(identity, email, hit)
    }

    fn domain_allowed(&self, email: &str) -> bool {
        self.allowed_domains.is_empty()
            || self.allowed_domains.iter().any(|d| d.matches_email(email))
    }

    /// One decision, under the cross-replica lock when there is one.
    async fn decide(
        &self,
        identity: &Identity,
        email: &str,
        key: &str,
    ) -> Result<Resolved, ProvisionError> {
        self.breaker.check()?;
        let Some(lock) = &self.lock else {
            return self.look_up_or_create(identity, email).await;
        };
        let token = lock.acquire(key).await?;
        let result = self.look_up_or_create(identity, email).await;
        lock.release(key, token).await;
        result
    }

    async fn look_up_or_create(
        &self,
        identity: &Identity,
        email: &str,
    ) -> Result<Resolved, ProvisionError> {
        if let Some(user) = self.look_up(email).await? {
            return self.existing(identity, email, user).await;
        }
        if !self.enabled {
            return Err(ProvisionError::NotFound {
                reason: NotFoundReason::Disabled,
            });
        }
        if !self.domain_allowed(email) {
            return Err(ProvisionError::NotFound {
                reason: NotFoundReason::DomainNotAllowed,
            });
        }
        let (workspace, permission_set) = match self.rule_for(identity) {
            Some(r) => (r.workspace.as_str(), r.permission_set.as_str()),
            None => (
                self.default_workspace.as_str(),
                self.default_permission_set.as_str(),
            ),
        };
        let new = new_user(identity, email, workspace, permission_set);
        let deadline = Instant::now() + self.timeout;
        match self.scim.create(&new, deadline).await {
            Ok(user) => {
                self.breaker.success();
                Ok(Resolved {
                    user_id: user.id,
                    // For a user just created, the ones used (the answer may not echo them).
                    workspace: Some(workspace.to_string()),
                    permission_set: Some(permission_set.to_string()),
                    created: true,
                })
            }
            Err(ScimError::Conflict) => {
                // Another replica (or an administrator) created the user first: look up again,
                // never create twice.
                self.breaker.success();
                tracing::debug!(user = %email, "create answered 409; looking the user up again");
                match self.look_up(email).await? {
                    Some(user) => self.existing(identity, email, user).await,
                    None => {
                        tracing::warn!(user = %email, "create answered 409 but the lookup finds no such user");
                        Err(ProvisionError::Unavailable {
                            reason: UnavailableReason::BadResponse,
                        })
                    }
                }
            }
            Err(e) if e.create_may_have_happened() => {
                // Nothing half-created: the account may exist although the create's answer was
                // lost, late or unusable. One lookup (its own `timeout`, as every call) tells.
                let unavailable = self.failed("create", email, e);
                tracing::warn!(user = %email, "the create may have been carried out; looking the user up once");
                match self.scim.lookup(email, Instant::now() + self.timeout).await {
                    Ok(Some(user)) => {
                        self.breaker.success();
                        tracing::info!(user = %email, user_id = %user.id, "the account exists after all; using it");
                        let mut resolved = self.existing(identity, email, user).await?;
                        resolved.created = true;
                        resolved
                            .workspace
                            .get_or_insert_with(|| workspace.to_string());
                        resolved
                            .permission_set
                            .get_or_insert_with(|| permission_set.to_string());
                        Ok(resolved)
                    }
                    Ok(None) => {
                        tracing::warn!(user = %email, "no such account after the failed create (a slow admin API may still make it; the next sign-in finds it then)");
                        Err(unavailable)
                    }
                    Err(e) => {
                        tracing::warn!(user = %email, error = %e, "the lookup after the failed create failed too");
                        Err(unavailable)
                    }
                }
            }
            Err(e) => Err(self.failed("create", email, e)),
        }
    }

    /// The lookup, retried with jittered backoff after transient failures within one `timeout`.
    async fn look_up(&self, email: &str) -> Result<Option<ScimUser>, ProvisionError> {
        self.breaker.check()?;
        let deadline = Instant::now() + self.timeout;
        let mut attempt = 0;
        loop {
            match self.scim.lookup(email, deadline).await {
                Ok(found) => {
                    self.breaker.success();
                    return Ok(found);
                }
                Err(e) if e.is_transient() && attempt < self.tuning.lookup_retries => {
                    let ceiling = self.tuning.backoff * 2u32.saturating_pow(attempt);
                    let pause = rand::rng().random_range(ceiling / 2..=ceiling);
                    if Instant::now() + pause >= deadline {
                        return Err(self.failed("lookup", email, e));
                    }
                    tracing::debug!(user = %email, error = %e, attempt, "lookup failed; retrying");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(e) => return Err(self.failed("lookup", email, e)),
            }
        }
    }

    /// A found user: refused when inactive; in `sync_on_login` mode, updated when a rule covers
    /// them and the dashboard differs.
    async fn existing(
        &self,
        identity: &Identity,
        email: &str,
        user: ScimUser,
    ) -> Result<Resolved, ProvisionError> {
        if !user.active {
            return Err(ProvisionError::Inactive);
        }
        let mut resolved = Resolved {
            user_id: user.id.clone(),
            workspace: user.workspace.clone(),
            permission_set: user.permission_set.clone(),
            created: false,
        };
        if self.mode != ProvisioningMode::SyncOnLogin {
            return Ok(resolved);
        }
        let Some(rule) = self.rule_for(identity) else {
            return Ok(resolved);
        };
        let differs =
            |have: &Option<String>, want: Option<&str>| want.is_some() && have.as_deref() != want;
        let stale = user.workspace.as_deref() != Some(rule.workspace.as_str())
            || user.permission_set.as_deref() != Some(rule.permission_set.as_str())
            || differs(&user.given_name, identity.first_name.as_deref())
            || differs(&user.family_name, identity.last_name.as_deref());
        if !stale {
            return Ok(resolved);
        }
        let want = new_user(identity, email, &rule.workspace, &rule.permission_set);
        let body = self.scim.shape.replace_body(&user, &want);
        match self
            .scim
            .replace(&user.id, &body, Instant::now() + self.timeout)
            .await
        {
            Ok(_) => {
                self.breaker.success();
                tracing::info!(target: "audit", event = "provision.synced", user = %email, user_id = %user.id, rule = %rule.group,
                    workspace = %rule.workspace, permission_set = %rule.permission_set);
                resolved.workspace = Some(rule.workspace.clone());
                resolved.permission_set = Some(rule.permission_set.clone());
            }
            // The user exists and may sign in as the dashboard has them; the sync waits for the
            // next login.
            Err(e) => {
                let reason = self.failed("replace", email, e);
                tracing::warn!(target: "audit", event = "provision.sync_failed", user = %email, user_id = %user.id, rule = %rule.group, detail = %reason);
            }
        }
        Ok(resolved)
    }

    /// Records a failed admin-API call with the breaker and turns it into the page's error.
    fn failed(&self, op: &'static str, email: &str, e: ScimError) -> ProvisionError {
        match &e {
            // The dashboard's data about one user, not the admin API's health: not counted.
            ScimError::Ambiguous(_) => {
                tracing::warn!(user = %email, op, error = %e, "admin API answer refused");
            }
            // A configuration error, not an outage: every login fails until the token is fixed.
            ScimError::Status {
                status: status @ (401 | 403),
                ..
            } => {
                self.breaker.failure();
                tracing::error!(user = %email, op, status,
                    "the admin API refused samlgate's bearer token (HTTP {status}): check provisioning.token (or token_file){}",
                    if self.scim.is_braze() { " and provisioning.braze.request_origin" } else { "" });
            }
            _ => {
                self.breaker.failure();
                tracing::warn!(user = %email, op, error = %e, "admin API call failed");
            }
        }
        let reason = match e {
            ScimError::Timeout => UnavailableReason::Timeout,
            ScimError::Transport(_) => UnavailableReason::Unreachable,
            ScimError::Status { status, .. } if status >= 500 => {
                UnavailableReason::ServerError { status }
            }
            ScimError::Status { status, .. } => UnavailableReason::Refused { status },
            ScimError::Conflict => UnavailableReason::Refused { status: 409 },
            ScimError::BadResponse(_)
            | ScimError::TooLarge
            | ScimError::Ambiguous(_)
            | ScimError::Template(_) => UnavailableReason::BadResponse,
        };
        ProvisionError::Unavailable { reason }
    }
}

/// The email a login is provisioned under: the email attribute, else an email-format NameID.
fn login_email(identity: &Identity) -> Option<String> {
    let looks_like_email = |s: &str| crate::identity::looks_like_email(s.trim());
    identity
        .email
        .as_deref()
        .filter(|e| looks_like_email(e))
        .or_else(|| Some(&*identity.subject).filter(|s| looks_like_email(s)))
        .map(|s| s.trim().to_string())
}

fn new_user<'a>(
    identity: &'a Identity,
    email: &'a str,
    workspace: &'a str,
    permission_set: &'a str,
) -> NewUser<'a> {
    NewUser {
        email,
        external_id: &identity.subject,
        given_name: identity.first_name.as_deref(),
        family_name: identity.last_name.as_deref(),
        groups: &identity.groups,
        workspace,
        permission_set,
    }
}

fn apply(mut identity: Identity, email: String, r: &Resolved) -> Identity {
    identity.email = Some(email.into());
    identity.user_id = Some(r.user_id.as_str().into());
    identity.workspace = r.workspace.as_deref().map(Into::into);
    identity.permission_set = r.permission_set.as_deref().map(Into::into);
    identity
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn audit_denied(user: &str, rule: &str, e: &ProvisionError, started: Instant, cached: bool) {
    tracing::info!(target: "audit", event = "provision.denied", user = %user, rule = %rule, reason = e.as_str(),
        cached, duration_ms = elapsed_ms(started));
}

// ---------------------------------------------------------------------------------------------
// Circuit breaker
// ---------------------------------------------------------------------------------------------

/// Counts consecutive admin-API failures; at `threshold` it opens for `cooldown`, during which
/// logins fail at once. After the cool-down calls go through again (half-open): one success
/// closes it, one failure opens it again.
struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: AtomicU32,
    open_until: Mutex<Option<Instant>>,
}

impl Breaker {
    fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            failures: AtomicU32::new(0),
            open_until: Mutex::new(None),
        }
    }

    fn check(&self) -> Result<(), ProvisionError> {
        let open_until = *self.open_until.lock().unwrap_or_else(|p| p.into_inner());
        match open_until {
            Some(t) if Instant::now() < t => Err(ProvisionError::Unavailable {
                reason: UnavailableReason::CircuitOpen,
            }),
            _ => Ok(()),
        }
    }

    fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        *self.open_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn failure(&self) {
        let n = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if n >= self.threshold {
            let mut open_until = self.open_until.lock().unwrap_or_else(|p| p.into_inner());
            if open_until.is_none_or(|t| t <= Instant::now()) {
                tracing::warn!(
                    failures = n,
                    cooldown_ms = u64::try_from(self.cooldown.as_millis()).unwrap_or(u64::MAX),
                    "admin API circuit breaker open"
                );
            }
            *open_until = Some(Instant::now() + self.cooldown);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cross-replica lock
// ---------------------------------------------------------------------------------------------

/// A per-user mutual exclusion across replicas, held in the shared session store
/// ([`Sessions::try_lock`]: set-if-absent with a TTL, released by compare-and-delete), so it has
/// the store's connection, operation timeout and outage handling. The TTL bounds how long a
/// crashed holder blocks others.
struct SharedLock {
    sessions: Sessions,
    ttl: Duration,
}

impl SharedLock {
    fn name(key: &str) -> String {
        format!("provision:{key}")
    }

    /// Waits for the lock (at most its TTL, after which any holder's claim has expired).
    async fn acquire(&self, key: &str) -> Result<LockToken, ProvisionError> {
        let name = Self::name(key);
        let give_up = Instant::now() + self.ttl;
        let unavailable = ProvisionError::Unavailable {
            reason: UnavailableReason::Lock,
        };
        loop {
            match self.sessions.try_lock(&name, self.ttl).await {
                Ok(Some(token)) => return Ok(token),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "provisioning lock: the session store failed");
                    return Err(unavailable);
                }
            }
            if Instant::now() >= give_up {
                tracing::warn!("provisioning lock: still held by another replica");
                return Err(unavailable);
            }
            let pause = Duration::from_millis(rand::rng().random_range(20..=60));
            tokio::time::sleep(pause).await;
        }
    }

    async fn release(&self, key: &str, token: LockToken) {
        if let Err(e) = self.sessions.unlock(&Self::name(key), token).await {
            // It expires on its own after the TTL.
            tracing::warn!(error = %e, "provisioning lock: release failed");
        }
    }
}
