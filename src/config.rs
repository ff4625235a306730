//! Config: one TOML file with `SAMLGATE_<SECTION>__<KEY>` environment variables on top, read
//! once into `RawConfig` (serde, unknown keys refused) and compiled into a typed `Config` that
//! cannot be wrong. Every problem is reported at once, each prefixed with its key path.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use http::HeaderName;
use ipnet::IpNet;
use serde::Deserialize;

/// Where `--config` falls back to when neither the flag nor `$SAMLGATE_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/samlgate.toml";

/// A secret value (session secret, bearer token, Redis URL with password). Its `Debug` and
/// `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Every problem found in a config, each one line: `key: problem (fix)`.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    /// One line per problem, prefixed with the key path.
    pub problems: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Typed configuration
// ---------------------------------------------------------------------------------------------

/// The validated configuration, built once at start-up.
#[derive(Clone, Debug)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[upstream]`
    pub upstream: UpstreamConfig,
    /// `[saml]`
    pub saml: SamlConfig,
    /// `[session]`
    pub session: SessionConfig,
    /// `[provisioning]`; `None` makes samlgate a pure SSO gateway.
    pub provisioning: Option<ProvisioningConfig>,
    /// `[headers]`
    pub headers: HeadersConfig,
    /// `[access]`
    pub access: AccessConfig,
    /// `[log]`
    pub log: LogConfig,
}

/// `[server]`: the listeners.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The gateway's own address.
    pub listen: SocketAddr,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub admin_listen: SocketAddr,
    /// The base URL browsers see, without a trailing slash (`https://dash.example.com`).
    pub public_url: String,
    /// True when `public_url` is https: cookies get `Secure` and the `__Host-` prefix.
    pub public_https: bool,
    /// Optional TLS on `listen`.
    pub tls: Option<TlsConfig>,
    /// Most simultaneous client connections; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Largest request head (request line + headers) in bytes.
    pub max_header_bytes: usize,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// How long a client may take to send a request head; slower ones are cut (slowloris).
    pub header_read_timeout: Duration,
    /// How long a client may leave a response unread before its connection is closed: the
    /// time between two writes that make progress, not for the whole response (nginx's
    /// `send_timeout`).
    pub send_timeout: Duration,
    /// Gateway worker threads, each with its own event loop (default: one per CPU).
    pub workers: usize,
}

/// `[server.tls]`: PEM certificate chain and private key.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// PEM certificate chain file.
    pub cert_file: PathBuf,
    /// PEM private key file.
    pub key_file: PathBuf,
}

/// `[upstream]`: the dashboard.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// The dashboard's base URL.
    pub url: http::Uri,
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Time until the upstream's response head arrives.
    pub request_timeout: Duration,
    /// How long an idle keep-alive connection to the upstream is kept open.
    pub keepalive_timeout: Duration,
    /// Paths forwarded without a session.
    pub public_paths: Vec<PathPattern>,
    /// Keep the client's `Host` header (true) or send the upstream's authority (false).
    pub preserve_host: bool,
    /// Extra PEM CA bundle trusted for an https upstream (on top of the webpki roots).
    pub ca_file: Option<PathBuf>,
}

/// A path pattern: exact (`/healthz`) or prefix (`/static/*` matches `/static/` and below).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathPattern {
    /// The whole normalised path equals this.
    Exact(String),
    /// The normalised path starts with this (which ends with `/`), or equals it without the `/`.
    Prefix(String),
}

impl PathPattern {
    /// Parses `"/static/*"` or `"/healthz"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err(format!("{s:?} must start with '/'"));
        }
        if s.contains(['?', '#', '%', '\\']) || s.contains("/../") || s.contains("/./") {
            return Err(format!(
                "{s:?} must be a plain normalised path (no ?, #, %, \\ or dot segments)"
            ));
        }
        if let Some(prefix) = s.strip_suffix('*') {
            if prefix.contains('*') {
                return Err(format!("{s:?}: '*' is only allowed at the end"));
            }
            let prefix = if prefix.ends_with('/') {
                prefix.to_string()
            } else {
                format!("{prefix}/")
            };
            return Ok(Self::Prefix(prefix));
        }
        if s.contains('*') {
            return Err(format!("{s:?}: '*' is only allowed at the end"));
        }
        Ok(Self::Exact(s.to_string()))
    }

    /// Whether an already normalised path matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == p,
            Self::Prefix(p) => path.starts_with(p.as_str()) || path == &p[..p.len() - 1],
        }
    }
}

/// `[saml]`: the Service Provider.
#[derive(Clone, Debug)]
pub struct SamlConfig {
    /// Our entity ID (the Audience IdPs must name).
    pub entity_id: String,
    /// `public_url + /saml/acs`.
    pub acs_url: String,
    /// `public_url + /saml/logout`.
    pub slo_url: String,
    /// Where the IdP metadata comes from.
    pub idp_metadata: IdpMetadataSource,
    /// SP certificate (PEM file) for signing AuthnRequests and published for encryption.
    pub sp_cert_file: Option<PathBuf>,
    /// SP private key (PEM file) for signing and for decrypting EncryptedAssertion.
    pub sp_key_file: Option<PathBuf>,
    /// Accept responses without InResponseTo.
    pub allow_idp_initiated: bool,
    /// Tolerance for the IdP's clock.
    pub clock_skew: Duration,
    /// Oldest IssueInstant accepted (now - max_issue_age - clock_skew).
    pub max_issue_age: Duration,
    /// Signature algorithms accepted.
    pub allowed_algorithms: Vec<SignatureAlgorithm>,
    /// Largest accepted `SAMLResponse` form value in bytes.
    pub max_response_bytes: usize,
    /// Attribute names mapped onto identity fields.
    pub attributes: AttributeMap,
    /// NameID format requested in AuthnRequests (`None`: let the IdP choose).
    pub name_id_format: Option<String>,
    /// Ask the IdP to re-authenticate (`ForceAuthn`).
    pub force_authn: bool,
    /// Lifetime of a pending login (the AuthnRequest round trip).
    pub login_timeout: Duration,
}

/// Where IdP metadata is read from.
#[derive(Clone, Debug)]
pub enum IdpMetadataSource {
    /// A local file, read at start-up.
    File(PathBuf),
    /// A URL fetched at start-up and every `refresh`; the last good copy is kept in `backup_file`.
    Url {
        /// The metadata URL.
        url: http::Uri,
        /// How often to fetch it again.
        refresh: Duration,
        /// Where the last good copy is written and read from when a fetch fails.
        backup_file: Option<PathBuf>,
    },
}

/// XML signature algorithms samlgate can be told to accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// rsa-sha1 (only when listed explicitly)
    RsaSha1,
    /// rsa-sha256
    RsaSha256,
    /// rsa-sha384
    RsaSha384,
    /// rsa-sha512
    RsaSha512,
    /// ecdsa-sha256
    EcdsaSha256,
    /// ecdsa-sha384
    EcdsaSha384,
    /// ecdsa-sha512
    EcdsaSha512,
}

impl SignatureAlgorithm {
    /// Parses the config spelling (`rsa-sha256`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "rsa-sha1" => Self::RsaSha1,
            "rsa-sha256" => Self::RsaSha256,
            "rsa-sha384" => Self::RsaSha384,
            "rsa-sha512" => Self::RsaSha512,
            "ecdsa-sha256" => Self::EcdsaSha256,
            "ecdsa-sha384" => Self::EcdsaSha384,
            "ecdsa-sha512" => Self::EcdsaSha512,
            _ => return None,
        })
    }
}

/// `[saml.attributes]`: SAML attribute Name (or FriendlyName) for each identity field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributeMap {
    /// Email attribute.
    pub email: String,
    /// Given-name attribute.
    pub first_name: String,
    /// Family-name attribute.
    pub last_name: String,
    /// Groups attribute (multi-valued).
    pub groups: String,
}

/// `[session]`
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Signs cookies (HMAC-SHA256).
    pub secret: Secret,
    /// Older secrets that still verify cookies (rotation); `secret` signs.
    pub previous_secrets: Vec<Secret>,
    /// Cookie name, without the `__Host-` prefix that https adds.
    pub cookie_name: String,
    /// Absolute session lifetime.
    pub lifetime: Duration,
    /// Sliding idle timeout.
    pub idle_timeout: Duration,
    /// Which store keeps sessions, pending logins and the replay cache.
    pub store: StoreKind,
    /// Redis URL (`redis://` or `rediss://`), may carry a password.
    pub redis_url: Secret,
    /// The CA that signed a `rediss://` Redis's certificate (PEM); when set, only it is
    /// trusted for Redis. Unset: the system's roots (`SSL_CERT_FILE`/`SSL_CERT_DIR` apply).
    pub redis_ca_file: Option<PathBuf>,
    /// Prefix of every Redis key.
    pub redis_key_prefix: String,
    /// Upper bound of one store operation; past it the request gets a 503 page.
    pub operation_timeout: Duration,
    /// Most sessions kept by the memory store.
    pub max_entries: u64,
    /// How long the Redis store's in-process tier may serve a session without asking Redis.
    pub local_ttl: Duration,
}

/// Which session store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// Embedded (moka); lost on restart, not shared.
    Memory,
    /// Redis, shared by replicas.
    Redis,
}

/// `[provisioning]`
#[derive(Clone, Debug)]
pub struct ProvisioningConfig {
    /// Create unknown users (the "automatic user provisioning" toggle).
    pub enabled: bool,
    /// SCIM base URL, without a trailing slash.
    pub url: String,
    /// Bearer token.
    pub token: Secret,
    /// Per admin-API call.
    pub timeout: Duration,
    /// Where workspace and permission set go in the create payload.
    pub payload: Payload,
    /// Workspace when no rule matches.
    pub default_workspace: String,
    /// Permission set when no rule matches.
    pub default_permission_set: String,
    /// Email domains that may be provisioned; empty = any.
    pub allowed_domains: Vec<DomainPattern>,
    /// First matching group wins.
    pub rules: Vec<ProvisioningRule>,
    /// How long a resolved user is remembered without asking the admin API.
    pub cache_ttl: Duration,
    /// Leave existing users alone, or sync them on login.
    pub mode: ProvisioningMode,
}

/// The create-payload shape.
#[derive(Clone, Debug)]
pub enum Payload {
    /// RFC 7643 `roles` / `entitlements`.
    Scim,
    /// Braze's dashboard-user SCIM API.
    Braze {
        /// `X-Request-Origin` header value.
        request_origin: String,
        /// Braze department string.
        department: String,
    },
    /// A JSON template file's contents with `{{placeholders}}`.
    Template {
        /// The file it was read from (for messages).
        path: PathBuf,
        /// The template text.
        text: String,
    },
}

/// `[[provisioning.rules]]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisioningRule {
    /// IdP group that selects this rule.
    pub group: String,
    /// Workspace given to the group's members.
    pub workspace: String,
    /// Permission set given to the group's members.
    pub permission_set: String,
}

/// `create_only` or `sync_on_login`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProvisioningMode {
    /// An existing user is left as the dashboard has it.
    CreateOnly,
    /// An existing user covered by a rule is updated when it differs.
    SyncOnLogin,
}

/// An email-domain pattern: `example.com` (exact) or `*.example.com` (it and its subdomains).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainPattern {
    /// Exactly this domain (lower case).
    Exact(String),
    /// This domain and any subdomain (lower case, without `*.`).
    WithSubdomains(String),
}

impl DomainPattern {
    /// Parses `example.com` or `*.example.com`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        let (wild, rest) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, s.clone()),
        };
        if rest.is_empty()
            || rest.contains(['*', '@', '/', ' '])
            || rest.starts_with('.')
            || rest.ends_with('.')
        {
            return Err(format!(
                "{s:?} is not a domain (use \"example.com\" or \"*.example.com\")"
            ));
        }
        Ok(if wild {
            Self::WithSubdomains(rest)
        } else {
            Self::Exact(rest)
        })
    }

    /// Whether the email's domain matches (case-insensitive).
    pub fn matches_email(&self, email: &str) -> bool {
        let Some((_, domain)) = email.rsplit_once('@') else {
            return false;
        };
        let domain = domain.to_ascii_lowercase();
        match self {
            Self::Exact(d) => domain == *d,
            Self::WithSubdomains(d) => {
                domain == *d
                    || (domain.ends_with(d.as_str())
                        && domain[..domain.len() - d.len()].ends_with('.'))
            }
        }
    }
}

/// `[headers]`: names of the identity headers sent upstream.
#[derive(Clone, Debug)]
pub struct HeadersConfig {
    /// User id header.
    pub user: HeaderName,
    /// Email header.
    pub email: HeaderName,
    /// Display-name header.
    pub name: HeaderName,
    /// Groups header.
    pub groups: HeaderName,
    /// Workspace header.
    pub workspace: HeaderName,
    /// Permission-set header.
    pub permission_set: HeaderName,
    /// Largest groups header value in bytes before `group_filter` applies.
    pub max_groups_bytes: usize,
    /// Only groups matching this regex are sent when the groups header is over budget.
    pub group_filter: Option<String>,
    /// Optional signed identity JWT.
    pub jwt: Option<JwtConfig>,
}

/// `[headers.jwt]`
#[derive(Clone, Debug)]
pub struct JwtConfig {
    /// Header carrying the JWT.
    pub header: HeaderName,
    /// PEM EC P-256 private key; generated at start-up when absent.
    pub key_file: Option<PathBuf>,
    /// Keys still published in the JWKS after a rotation (PEM public or private keys).
    pub previous_key_files: Vec<PathBuf>,
    /// `aud` claim.
    pub audience: String,
    /// `iss` claim.
    pub issuer: String,
    /// Lifetime of each token (at most 5 minutes).
    pub ttl: Duration,
}

/// `[access]`: who may pass, on top of a valid session.
#[derive(Clone, Debug, Default)]
pub struct AccessConfig {
    /// Empty = any signed-in user.
    pub allowed_groups: Vec<String>,
    /// Empty = any.
    pub allowed_domains: Vec<DomainPattern>,
    /// Per-path rules, first match wins.
    pub rules: Vec<AccessRule>,
}

/// `[[access.rules]]`
#[derive(Clone, Debug)]
pub struct AccessRule {
    /// Normalised path prefix (`/admin` matches `/admin` and `/admin/...`).
    pub path_prefix: String,
    /// Methods the rule applies to; empty = all.
    pub methods: Vec<http::Method>,
    /// Groups allowed on this prefix; empty = any.
    pub allowed_groups: Vec<String>,
    /// Email domains allowed on this prefix; empty = any.
    pub allowed_domains: Vec<DomainPattern>,
}

/// `[log]`
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// json or pretty.
    pub format: LogFormat,
    /// An `EnvFilter` directive (`info`, `samlgate=debug`); `RUST_LOG` wins when set.
    pub level: String,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Pretty,
}

// ---------------------------------------------------------------------------------------------
// Raw configuration: what serde reads
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    server: RawServer,
    upstream: RawUpstream,
    saml: RawSaml,
    session: RawSession,
    provisioning: Option<RawProvisioning>,
    headers: RawHeaders,
    access: RawAccess,
    log: RawLog,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    trusted_proxies: Vec<String>,
    admin_listen: String,
    public_url: Option<String>,
    tls: Option<RawTls>,
    max_connections: usize,
    max_header_bytes: usize,
    shutdown_grace: String,
    header_read_timeout: String,
    send_timeout: String,
    workers: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            trusted_proxies: vec![],
            admin_listen: "127.0.0.1:9090".into(),
            public_url: None,
            tls: None,
            max_connections: 10_000,
            max_header_bytes: 16 * 1024,
            shutdown_grace: "25s".into(),
            header_read_timeout: "30s".into(),
            send_timeout: "60s".into(),
            workers: 0,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUpstream {
    url: Option<String>,
    connect_timeout: String,
    request_timeout: String,
    keepalive_timeout: String,
    public_paths: Vec<String>,
    preserve_host: bool,
    ca_file: Option<String>,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            url: None,
            connect_timeout: "5s".into(),
            request_timeout: "60s".into(),
            keepalive_timeout: "90s".into(),
            public_paths: vec![],
            preserve_host: true,
            ca_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSaml {
    entity_id: Option<String>,
    idp_metadata_file: Option<String>,
    idp_metadata_url: Option<String>,
    idp_metadata_refresh: String,
    idp_metadata_backup_file: Option<String>,
    sp_cert_file: Option<String>,
    sp_key_file: Option<String>,
    allow_idp_initiated: bool,
    clock_skew: String,
    max_issue_age: String,
    allowed_algorithms: Vec<String>,
    max_response_bytes: usize,
    name_id_format: Option<String>,
    force_authn: bool,
    login_timeout: String,
    attributes: RawAttributes,
}

impl Default for RawSaml {
    fn default() -> Self {
        Self {
            entity_id: None,
            idp_metadata_file: None,
            idp_metadata_url: None,
            idp_metadata_refresh: "1h".into(),
            idp_metadata_backup_file: None,
            sp_cert_file: None,
            sp_key_file: None,
            allow_idp_initiated: false,
            clock_skew: "90s".into(),
            max_issue_age: "5m".into(),
            allowed_algorithms: ["rsa-sha256", "rsa-sha384", "rsa-sha512", "ecdsa-sha256"]
                .map(String::from)
                .to_vec(),
            max_response_bytes: 262_144,
            name_id_format: None,
            force_authn: false,
            login_timeout: "10m".into(),
            attributes: RawAttributes::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAttributes {
    email: String,
    first_name: String,
    last_name: String,
    groups: String,
}

impl Default for RawAttributes {
    fn default() -> Self {
        Self {
            email: "email".into(),
            first_name: "firstName".into(),
            last_name: "lastName".into(),
            groups: "groups".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSession {
    secret: Option<String>,
    secret_file: Option<String>,
    previous_secrets: Vec<String>,
    previous_secrets_file: Option<String>,
    cookie_name: String,
    lifetime: String,
    idle_timeout: String,
    store: String,
    redis_url: String,
    redis_url_file: Option<String>,
    redis_ca_file: Option<String>,
    redis_key_prefix: String,
    operation_timeout: String,
    max_entries: u64,
    local_ttl: String,
}

impl Default for RawSession {
    fn default() -> Self {
        Self {
            secret: None,
            secret_file: None,
            previous_secrets: vec![],
            previous_secrets_file: None,
            cookie_name: "samlgate".into(),
            lifetime: "12h".into(),
            idle_timeout: "1h".into(),
            store: "memory".into(),
            redis_url: "redis://127.0.0.1:6379/0".into(),
            redis_url_file: None,
            redis_ca_file: None,
            redis_key_prefix: "samlgate:".into(),
            operation_timeout: "250ms".into(),
            max_entries: 1_000_000,
            local_ttl: "5s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawProvisioning {
    enabled: bool,
    api: String,
    url: Option<String>,
    token: Option<String>,
    token_file: Option<String>,
    timeout: String,
    payload: String,
    braze: RawBraze,
    default_workspace: Option<String>,
    default_permission_set: Option<String>,
    allowed_domains: Vec<String>,
    rules: Vec<RawProvisioningRule>,
    cache_ttl: String,
    mode: String,
}

impl Default for RawProvisioning {
    fn default() -> Self {
        Self {
            enabled: true,
            api: "scim".into(),
            url: None,
            token: None,
            token_file: None,
            timeout: "5s".into(),
            payload: "scim".into(),
            braze: RawBraze::default(),
            default_workspace: None,
            default_permission_set: None,
            allowed_domains: vec![],
            rules: vec![],
            cache_ttl: "10m".into(),
            mode: "create_only".into(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBraze {
    request_origin: Option<String>,
    department: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvisioningRule {
    group: Option<String>,
    workspace: Option<String>,
    permission_set: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHeaders {
    user: String,
    email: String,
    name: String,
    groups: String,
    workspace: String,
    permission_set: String,
    preset: Option<String>,
    max_groups_bytes: usize,
    group_filter: Option<String>,
    jwt: Option<RawJwt>,
}

impl Default for RawHeaders {
    fn default() -> Self {
        Self {
            user: "X-Forwarded-User".into(),
            email: "X-Forwarded-Email".into(),
            name: "X-Forwarded-Name".into(),
            groups: "X-Forwarded-Groups".into(),
            workspace: "X-Forwarded-Workspace".into(),
            permission_set: "X-Forwarded-Permission-Set".into(),
            preset: None,
            max_groups_bytes: 4096,
            group_filter: None,
            jwt: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawJwt {
    header: String,
    key_file: Option<String>,
    previous_key_files: Vec<String>,
    audience: String,
    issuer: Option<String>,
    ttl: String,
}

impl Default for RawJwt {
    fn default() -> Self {
        Self {
            header: "X-Samlgate-Jwt-Assertion".into(),
            key_file: None,
            previous_key_files: vec![],
            audience: "dashboard".into(),
            issuer: None,
            ttl: "5m".into(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAccess {
    allowed_groups: Vec<String>,
    allowed_domains: Vec<String>,
    rules: Vec<RawAccessRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAccessRule {
    path_prefix: Option<String>,
    methods: Vec<String>,
    allowed_groups: Vec<String>,
    allowed_domains: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: String,
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: "json".into(),
            level: "info".into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loading and validation
// ---------------------------------------------------------------------------------------------

impl Config {
    /// Picks the config path: the flag, then `$SAMLGATE_CONFIG`, then `config/samlgate.toml`.
    pub fn resolve_path(flag: Option<PathBuf>) -> PathBuf {
        flag.or_else(|| std::env::var_os("SAMLGATE_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
    }

    /// Reads the file (and `SAMLGATE_*` variables) and validates everything, reporting every
    /// problem at once.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.exists() {
            return Err(ConfigError {
                problems: vec![format!(
                    "config file {}: not found (pass --config FILE or set SAMLGATE_CONFIG)",
                    path.display()
                )],
            });
        }
        // Relative paths inside the file resolve from the working directory, as operators of
        // oauth2-proxy expect.
        Self::from_figment(
            Figment::new().merge(Toml::file(path)).merge(env_provider()),
            PathBuf::from("."),
        )
    }

    /// Validates a TOML string (plus `SAMLGATE_*` variables); relative paths resolve from `base`.
    pub fn from_toml_str(toml: &str, base: &Path) -> Result<Config, ConfigError> {
        Self::from_figment(
            Figment::new()
                .merge(Toml::string(toml))
                .merge(env_provider()),
            base.to_path_buf(),
        )
    }

    fn from_figment(figment: Figment, base: PathBuf) -> Result<Config, ConfigError> {
        let raw: RawConfig = figment.extract().map_err(|err| ConfigError {
            problems: err.into_iter().map(describe_figment_error).collect(),
        })?;
        let mut v = Validator {
            problems: vec![],
            base,
        };
        let config = v.build(raw);
        match config {
            Some(config) if v.problems.is_empty() => Ok(config),
            _ => Err(ConfigError {
                problems: v.problems,
            }),
        }
    }
}

fn env_provider() -> Env {
    Env::prefixed("SAMLGATE_").split("__").ignore(&["CONFIG"])
}

fn describe_figment_error(err: figment::Error) -> String {
    let key = err.path.join(".");
    let what = match &err.kind {
        figment::error::Kind::UnknownField(field, expected) => {
            let key = if key.is_empty() {
                field.to_string()
            } else if err.path.last().is_some_and(|last| last == field) {
                key
            } else {
                format!("{key}.{field}")
            };
            return format!(
                "{key}: unknown key (expected one of: {})",
                expected.join(", ")
            );
        }
        kind => kind.to_string(),
    };
    if key.is_empty() {
        what
    } else {
        format!("{key}: {what}")
    }
}

struct Validator {
    problems: Vec<String>,
    base: PathBuf,
}

impl Validator {
    fn problem(&mut self, key: &str, msg: impl fmt::Display) {
        self.problems.push(format!("{key}: {msg}"));
    }

    fn duration(&mut self, key: &str, value: &str) -> Duration {
        match humantime::parse_duration(value.trim()) {
            Ok(d) => d,
            Err(e) => {
                self.problem(
                    key,
                    format_args!(
                        "{value:?} is not a duration ({e}); write e.g. \"90s\", \"15m\", \"12h\""
                    ),
                );
                Duration::ZERO
            }
        }
    }

    fn socket_addr(&mut self, key: &str, value: &str) -> SocketAddr {
        match value.parse() {
            Ok(a) => a,
            Err(_) => {
                self.problem(
                    key,
                    format_args!("{value:?} is not an address:port (e.g. \"0.0.0.0:8080\")"),
                );
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        }
    }

    fn path(&self, value: &str) -> PathBuf {
        let p = PathBuf::from(value);
        if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        }
    }

    fn existing_file(&mut self, key: &str, value: &str) -> PathBuf {
        let p = self.path(value);
        if let Err(e) = std::fs::metadata(&p) {
            self.problem(key, format_args!("cannot read {}: {e}", p.display()));
        }
        p
    }

    /// A secret given inline or as a `*_file` twin (whose trailing newline is dropped).
    fn secret(
        &mut self,
        key: &str,
        inline: Option<String>,
        file: Option<String>,
    ) -> Option<Secret> {
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.problem(
                    key,
                    format_args!("set either {key} or {key}_file, not both"),
                );
                None
            }
            (Some(s), None) => Some(Secret::new(s)),
            (None, Some(f)) => {
                let p = self.path(&f);
                match std::fs::read_to_string(&p) {
                    Ok(s) => Some(Secret::new(s.trim_end_matches(['\r', '\n']).to_string())),
                    Err(e) => {
                        self.problem(
                            &format!("{key}_file"),
                            format_args!("cannot read {}: {e}", p.display()),
                        );
                        None
                    }
                }
            }
            (None, None) => None,
        }
    }

    fn header_name(&mut self, key: &str, value: &str) -> HeaderName {
        match HeaderName::from_bytes(value.as_bytes()) {
            Ok(h) => h,
            Err(_) => {
                self.problem(key, format_args!("{value:?} is not a valid header name"));
                HeaderName::from_static("x-invalid")
            }
        }
    }

    fn domains(&mut self, key: &str, values: &[String]) -> Vec<DomainPattern> {
        values
            .iter()
            .filter_map(|d| match DomainPattern::parse(d) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.problem(key, e);
                    None
                }
            })
            .collect()
    }

    fn http_url(&mut self, key: &str, value: &str) -> Option<http::Uri> {
        match value.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {
                Some(u)
            }
            _ => {
                self.problem(
                    key,
                    format_args!("{value:?} is not an absolute http(s) URL"),
                );
                None
            }
        }
    }

    fn build(&mut self, raw: RawConfig) -> Option<Config> {
        let server = self.server(raw.server);
        let upstream = self.upstream(raw.upstream);
        let saml = self.saml(raw.saml, &server.public_url);
        let session = self.session(raw.session);
        let provisioning = raw.provisioning.map(|p| self.provisioning(p));
        let headers = self.headers(raw.headers, &server.public_url);
        let access = self.access(raw.access);
        let log = self.log(raw.log);
        Some(Config {
            server,
            upstream: upstream?,
            saml,
            session: session?,
            provisioning: provisioning.flatten(),
            headers,
            access,
            log,
        })
    }

    fn server(&mut self, raw: RawServer) -> ServerConfig {
        let listen = self.socket_addr("server.listen", &raw.listen);
        let admin_listen = self.socket_addr("server.admin_listen", &raw.admin_listen);
        let trusted_proxies = raw
            .trusted_proxies
            .iter()
            .filter_map(|s| {
                s.parse::<IpNet>()
                    .ok()
                    .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
                    .or_else(|| {
                        self.problem(
                            "server.trusted_proxies",
                            format_args!("{s:?} is not a CIDR (e.g. \"10.0.0.0/8\") or IP"),
                        );
                        None
                    })
            })
            .collect();
        let public_url = match raw.public_url {
            None => {
                self.problem(
                    "server.public_url",
                    "missing: the base URL browsers use, e.g. \"https://dash.example.com\"",
                );
                "http://127.0.0.1".to_string()
            }
            Some(u) => {
                let trimmed = u.trim_end_matches('/').to_string();
                match self.http_url("server.public_url", &trimmed) {
                    Some(uri) if uri.path() != "/" && !uri.path().is_empty() => {
                        self.problem(
                            "server.public_url",
                            "must not have a path; samlgate serves from the root of its host",
                        );
                    }
                    Some(uri) if uri.query().is_some() => {
                        self.problem("server.public_url", "must not have a query")
                    }
                    _ => {}
                }
                trimmed
            }
        };
        let tls = raw.tls.and_then(|t| match (t.cert_file, t.key_file) {
            (Some(c), Some(k)) => Some(TlsConfig {
                cert_file: self.existing_file("server.tls.cert_file", &c),
                key_file: self.existing_file("server.tls.key_file", &k),
            }),
            _ => {
                self.problem("server.tls", "needs both cert_file and key_file");
                None
            }
        });
        if raw.max_connections == 0 {
            self.problem("server.max_connections", "must be at least 1");
        }
        if raw.max_header_bytes < 1024 {
            self.problem("server.max_header_bytes", "must be at least 1024");
        }
        let shutdown_grace = self.duration("server.shutdown_grace", &raw.shutdown_grace);
        let header_read_timeout =
            self.duration("server.header_read_timeout", &raw.header_read_timeout);
        if header_read_timeout < Duration::from_secs(1) {
            self.problem(
                "server.header_read_timeout",
                "must be at least 1s (it cuts clients that send their request head too slowly)",
            );
        }
        let send_timeout = self.duration("server.send_timeout", &raw.send_timeout);
        if send_timeout < Duration::from_secs(1) {
            self.problem(
                "server.send_timeout",
                "must be at least 1s (it cuts clients that stop reading their response)",
            );
        }
        ServerConfig {
            listen,
            trusted_proxies,
            admin_listen,
            public_https: public_url.starts_with("https://"),
            public_url,
            tls,
            max_connections: raw.max_connections.max(1),
            max_header_bytes: raw.max_header_bytes.max(1024),
            shutdown_grace,
            header_read_timeout,
            send_timeout,
            workers: match raw.workers {
                0 => std::thread::available_parallelism().map_or(1, usize::from),
                n => n,
            },
        }
    }

    fn upstream(&mut self, raw: RawUpstream) -> Option<UpstreamConfig> {
        let url = match raw.url {
            None => {
                self.problem(
                    "upstream.url",
                    "missing: the dashboard's URL, e.g. \"http://127.0.0.1:3000\"",
                );
                None
            }
            Some(u) => self.http_url("upstream.url", &u),
        };
        let connect_timeout = self.duration("upstream.connect_timeout", &raw.connect_timeout);
        let request_timeout = self.duration("upstream.request_timeout", &raw.request_timeout);
        let keepalive_timeout = self.duration("upstream.keepalive_timeout", &raw.keepalive_timeout);
        if keepalive_timeout < Duration::from_secs(1) {
            self.problem(
                "upstream.keepalive_timeout",
                "must be at least 1s (idle upstream connections are closed on a 1-second tick)",
            );
        }
        let public_paths = raw
            .public_paths
            .iter()
            .filter_map(|p| match PathPattern::parse(p) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.problem("upstream.public_paths", e);
                    None
                }
            })
            .collect();
        for reserved in ["/saml/", "/.well-known/samlgate/"] {
            if raw.public_paths.iter().any(|p| p.starts_with(reserved)) {
                self.problem(
                    "upstream.public_paths",
                    format_args!("paths under {reserved} belong to samlgate"),
                );
            }
        }
        let ca_file = raw
            .ca_file
            .map(|f| self.existing_file("upstream.ca_file", &f));
        Some(UpstreamConfig {
            url: url?,
            connect_timeout,
            request_timeout,
            keepalive_timeout,
            public_paths,
            preserve_host: raw.preserve_host,
            ca_file,
        })
    }

    fn saml(&mut self, raw: RawSaml, public_url: &str) -> SamlConfig {
        let idp_metadata = match (raw.idp_metadata_file, raw.idp_metadata_url) {
            (Some(_), Some(_)) => {
                self.problem(
                    "saml.idp_metadata_file",
                    "set either idp_metadata_file or idp_metadata_url, not both",
                );
                IdpMetadataSource::File(PathBuf::new())
            }
            (Some(f), None) => {
                IdpMetadataSource::File(self.existing_file("saml.idp_metadata_file", &f))
            }
            (None, Some(u)) => {
                let url = self
                    .http_url("saml.idp_metadata_url", &u)
                    .unwrap_or_default();
                let refresh = self.duration("saml.idp_metadata_refresh", &raw.idp_metadata_refresh);
                if refresh < Duration::from_secs(60) {
                    self.problem("saml.idp_metadata_refresh", "must be at least \"1m\"");
                }
                IdpMetadataSource::Url {
                    url,
                    refresh,
                    backup_file: raw.idp_metadata_backup_file.map(|f| self.path(&f)),
                }
            }
            (None, None) => {
                self.problem(
                    "saml.idp_metadata_file",
                    "missing: set idp_metadata_file (the IdP's metadata XML) or idp_metadata_url",
                );
                IdpMetadataSource::File(PathBuf::new())
            }
        };
        let sp_cert_file = raw
            .sp_cert_file
            .map(|f| self.existing_file("saml.sp_cert_file", &f));
        let sp_key_file = raw
            .sp_key_file
            .map(|f| self.existing_file("saml.sp_key_file", &f));
        if sp_cert_file.is_some() != sp_key_file.is_some() {
            self.problem(
                "saml.sp_cert_file",
                "sp_cert_file and sp_key_file go together: set both or neither",
            );
        }
        let clock_skew = self.duration("saml.clock_skew", &raw.clock_skew);
        if clock_skew > Duration::from_secs(600) {
            self.problem(
                "saml.clock_skew",
                "at most \"10m\"; fix the clocks (NTP) instead",
            );
        }
        let max_issue_age = self.duration("saml.max_issue_age", &raw.max_issue_age);
        let login_timeout = self.duration("saml.login_timeout", &raw.login_timeout);
        let mut allowed_algorithms = vec![];
        for a in &raw.allowed_algorithms {
            match SignatureAlgorithm::parse(a) {
                Some(alg) => allowed_algorithms.push(alg),
                None => self.problem(
                    "saml.allowed_algorithms",
                    format_args!("{a:?} is unknown (rsa-sha256, rsa-sha384, rsa-sha512, ecdsa-sha256, ecdsa-sha384, ecdsa-sha512, rsa-sha1)"),
                ),
            }
        }
        if raw.allowed_algorithms.is_empty() {
            self.problem(
                "saml.allowed_algorithms",
                "must name at least one algorithm",
            );
        }
        if raw.max_response_bytes < 1024 || raw.max_response_bytes > 16 * 1024 * 1024 {
            self.problem(
                "saml.max_response_bytes",
                "must be between 1024 and 16777216",
            );
        }
        let entity_id = raw
            .entity_id
            .unwrap_or_else(|| format!("{public_url}/saml/metadata"));
        if entity_id.trim().is_empty() {
            self.problem("saml.entity_id", "must not be empty");
        }
        let a = raw.attributes;
        for (key, value) in [
            ("saml.attributes.email", &a.email),
            ("saml.attributes.first_name", &a.first_name),
            ("saml.attributes.last_name", &a.last_name),
            ("saml.attributes.groups", &a.groups),
        ] {
            if value.trim().is_empty() {
                self.problem(key, "must name a SAML attribute");
            }
        }
        SamlConfig {
            entity_id,
            acs_url: format!("{public_url}/saml/acs"),
            slo_url: format!("{public_url}/saml/logout"),
            idp_metadata,
            sp_cert_file,
            sp_key_file,
            allow_idp_initiated: raw.allow_idp_initiated,
            clock_skew,
            max_issue_age,
            allowed_algorithms,
            max_response_bytes: raw.max_response_bytes,
            attributes: AttributeMap {
                email: a.email,
                first_name: a.first_name,
                last_name: a.last_name,
                groups: a.groups,
            },
            name_id_format: raw.name_id_format,
            force_authn: raw.force_authn,
            login_timeout,
        }
    }

    fn session(&mut self, raw: RawSession) -> Option<SessionConfig> {
        let secret = self.secret("session.secret", raw.secret, raw.secret_file);
        let secret = match secret {
            None => {
                self.problem(
                    "session.secret",
                    "missing: at least 32 random bytes (e.g. `openssl rand -base64 48`), or session.secret_file",
                );
                None
            }
            Some(s) if s.expose().len() < 32 => {
                self.problem(
                    "session.secret",
                    "too short: at least 32 bytes are required",
                );
                None
            }
            Some(s) => Some(s),
        };
        let mut previous_secrets: Vec<Secret> =
            raw.previous_secrets.into_iter().map(Secret::new).collect();
        if let Some(f) = raw.previous_secrets_file {
            let p = self.path(&f);
            match std::fs::read_to_string(&p) {
                Ok(s) => previous_secrets.extend(
                    s.lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(|l| Secret::new(l.trim())),
                ),
                Err(e) => self.problem(
                    "session.previous_secrets_file",
                    format_args!("cannot read {}: {e}", p.display()),
                ),
            }
        }
        if previous_secrets.iter().any(|s| s.expose().len() < 32) {
            self.problem(
                "session.previous_secrets",
                "every previous secret must be at least 32 bytes",
            );
        }
        let cookie_ok = !raw.cookie_name.is_empty()
            && raw
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && !raw.cookie_name.starts_with("__");
        if !cookie_ok {
            self.problem(
                "session.cookie_name",
                "use letters, digits, '-', '_' or '.', not starting with \"__\"",
            );
        }
        let lifetime = self.duration("session.lifetime", &raw.lifetime);
        let idle_timeout = self.duration("session.idle_timeout", &raw.idle_timeout);
        if lifetime < Duration::from_secs(60) {
            self.problem("session.lifetime", "must be at least \"1m\"");
        }
        if idle_timeout < Duration::from_secs(60) {
            self.problem("session.idle_timeout", "must be at least \"1m\"");
        }
        let store = match raw.store.as_str() {
            "memory" => StoreKind::Memory,
            "redis" => StoreKind::Redis,
            other => {
                self.problem(
                    "session.store",
                    format_args!("{other:?} is unknown: use \"memory\" or \"redis\""),
                );
                StoreKind::Memory
            }
        };
        let redis_url = match raw.redis_url_file {
            Some(f) => self
                .secret("session.redis_url", None, Some(f))
                .unwrap_or_else(|| Secret::new("")),
            None => Secret::new(raw.redis_url),
        };
        if store == StoreKind::Redis {
            let u = redis_url.expose();
            if !(u.starts_with("redis://")
                || u.starts_with("rediss://")
                || u.starts_with("redis+unix://")
                || u.starts_with("unix://"))
                || url::Url::parse(u).is_err()
            {
                // Never echo the URL: it may carry a password.
                self.problem("session.redis_url", "not a redis:// or rediss:// URL");
            }
        }
        let redis_ca_file = raw.redis_ca_file.map(|f| {
            if store == StoreKind::Redis && !redis_url.expose().starts_with("rediss://") {
                self.problem(
                    "session.redis_ca_file",
                    "set, but session.redis_url is not rediss:// (TLS): Redis would be reached without TLS",
                );
            }
            let p = self.path(&f);
            let why = match crate::outbound::read_ca_file(&p) {
                Ok(certs) if !certs.is_empty() => None,
                Ok(_) => Some("no PEM certificate in it".to_string()),
                Err(e) => Some(e),
            };
            if let Some(why) = why {
                self.problem("session.redis_ca_file", format_args!("{}: {why}", p.display()));
            }
            p
        });
        let operation_timeout = self.duration("session.operation_timeout", &raw.operation_timeout);
        let local_ttl = self.duration("session.local_ttl", &raw.local_ttl);
        if local_ttl > Duration::from_secs(60) {
            self.problem(
                "session.local_ttl",
                "at most \"60s\" (it delays logouts made elsewhere when pub/sub is lost)",
            );
        }
        if raw.max_entries == 0 {
            self.problem("session.max_entries", "must be at least 1");
        }
        Some(SessionConfig {
            secret: secret?,
            previous_secrets,
            cookie_name: raw.cookie_name,
            lifetime,
            idle_timeout,
            store,
            redis_url,
            redis_ca_file,
            redis_key_prefix: raw.redis_key_prefix,
            operation_timeout,
            max_entries: raw.max_entries,
            local_ttl,
        })
    }

    fn provisioning(&mut self, raw: RawProvisioning) -> Option<ProvisioningConfig> {
        if raw.api != "scim" {
            self.problem(
                "provisioning.api",
                format_args!("{:?} is unknown: only \"scim\" is supported", raw.api),
            );
        }
        let url = match raw.url {
            None => {
                self.problem(
                    "provisioning.url",
                    "missing: the SCIM base URL, e.g. \"https://dash.example.com/scim/v2\"",
                );
                None
            }
            Some(u) => self
                .http_url("provisioning.url", &u)
                .map(|_| u.trim_end_matches('/').to_string()),
        };
        let token = self.secret("provisioning.token", raw.token, raw.token_file);
        if token.is_none() {
            self.problem(
                "provisioning.token",
                "missing: the admin API's bearer token (or provisioning.token_file)",
            );
        }
        let timeout = self.duration("provisioning.timeout", &raw.timeout);
        let cache_ttl = self.duration("provisioning.cache_ttl", &raw.cache_ttl);
        let payload = match raw.payload.as_str() {
            "scim" => Some(Payload::Scim),
            "braze" => {
                let origin = raw.braze.request_origin.clone();
                let department = raw
                    .braze
                    .department
                    .clone()
                    .unwrap_or_else(|| "engineering".into());
                const DEPARTMENTS: [&str; 7] = [
                    "agency",
                    "bi",
                    "c_suite",
                    "engineering",
                    "finance",
                    "marketing",
                    "pm",
                ];
                if !DEPARTMENTS.contains(&department.as_str()) {
                    self.problem(
                        "provisioning.braze.department",
                        format_args!(
                            "{department:?} is not a Braze department ({})",
                            DEPARTMENTS.join(", ")
                        ),
                    );
                }
                match origin {
                    Some(o) if !o.is_empty() => Some(Payload::Braze {
                        request_origin: o,
                        department,
                    }),
                    _ => {
                        self.problem(
                            "provisioning.braze.request_origin",
                            "missing: Braze requires X-Request-Origin (your dashboard's URL)",
                        );
                        None
                    }
                }
            }
            path => {
                let p = self.path(path);
                match std::fs::read_to_string(&p) {
                    Ok(text) => match check_template(&text) {
                        Ok(()) => Some(Payload::Template { path: p, text }),
                        Err(e) => {
                            self.problem(
                                "provisioning.payload",
                                format_args!("template {}: {e}", p.display()),
                            );
                            None
                        }
                    },
                    Err(e) => {
                        self.problem(
                            "provisioning.payload",
                            format_args!("{path:?} is neither \"scim\", \"braze\" nor a readable template file ({e})"),
                        );
                        None
                    }
                }
            }
        };
        let default_workspace = raw.default_workspace.filter(|s| !s.is_empty());
        if default_workspace.is_none() {
            self.problem(
                "provisioning.default_workspace",
                "missing: the workspace new users get",
            );
        }
        let default_permission_set = raw.default_permission_set.filter(|s| !s.is_empty());
        if default_permission_set.is_none() {
            self.problem(
                "provisioning.default_permission_set",
                "missing: the permission set new users get",
            );
        }
        let allowed_domains = self.domains("provisioning.allowed_domains", &raw.allowed_domains);
        let mut rules = vec![];
        for (i, r) in raw.rules.into_iter().enumerate() {
            match (r.group, r.workspace, r.permission_set) {
                (Some(group), Some(workspace), Some(permission_set)) if !group.is_empty() => rules
                    .push(ProvisioningRule {
                        group,
                        workspace,
                        permission_set,
                    }),
                _ => self.problem(
                    &format!("provisioning.rules[{i}]"),
                    "needs group, workspace and permission_set",
                ),
            }
        }
        let mode = match raw.mode.as_str() {
            "create_only" => ProvisioningMode::CreateOnly,
            "sync_on_login" => ProvisioningMode::SyncOnLogin,
            other => {
                self.problem(
                    "provisioning.mode",
                    format_args!("{other:?} is unknown: use \"create_only\" or \"sync_on_login\""),
                );
                ProvisioningMode::CreateOnly
            }
        };
        Some(ProvisioningConfig {
            enabled: raw.enabled,
            url: url?,
            token: token?,
            timeout,
            payload: payload?,
            default_workspace: default_workspace?,
            default_permission_set: default_permission_set?,
            allowed_domains,
            rules,
            cache_ttl,
            mode,
        })
    }

    fn headers(&mut self, raw: RawHeaders, public_url: &str) -> HeadersConfig {
        let own = [
            raw.user,
            raw.email,
            raw.name,
            raw.groups,
            raw.workspace,
            raw.permission_set,
        ];
        let names = match raw.preset.as_deref() {
            None => own,
            Some("grafana") => [
                "X-WEBAUTH-USER",
                "X-WEBAUTH-EMAIL",
                "X-WEBAUTH-NAME",
                "X-WEBAUTH-GROUPS",
                "X-WEBAUTH-WORKSPACE",
                "X-WEBAUTH-ROLE",
            ]
            .map(String::from),
            Some(other) => {
                self.problem(
                    "headers.preset",
                    format_args!("{other:?} is unknown: the only preset is \"grafana\""),
                );
                own
            }
        };
        let keys = [
            "headers.user",
            "headers.email",
            "headers.name",
            "headers.groups",
            "headers.workspace",
            "headers.permission_set",
        ];
        let parsed: Vec<HeaderName> = keys
            .iter()
            .zip(names.iter())
            .map(|(k, v)| self.header_name(k, v))
            .collect();
        let jwt = raw.jwt.map(|j| {
            let ttl = self.duration("headers.jwt.ttl", &j.ttl);
            if ttl > Duration::from_secs(300) || ttl < Duration::from_secs(10) {
                self.problem("headers.jwt.ttl", "must be between \"10s\" and \"5m\"");
            }
            if j.audience.trim().is_empty() {
                self.problem("headers.jwt.audience", "must not be empty");
            }
            JwtConfig {
                header: self.header_name("headers.jwt.header", &j.header),
                key_file: j
                    .key_file
                    .map(|f| self.existing_file("headers.jwt.key_file", &f)),
                previous_key_files: j
                    .previous_key_files
                    .iter()
                    .map(|f| self.existing_file("headers.jwt.previous_key_files", f))
                    .collect(),
                audience: j.audience,
                issuer: j.issuer.unwrap_or_else(|| public_url.to_string()),
                ttl,
            }
        });
        if raw.max_groups_bytes < 64 {
            self.problem("headers.max_groups_bytes", "must be at least 64");
        }
        let [user, email, name, groups, workspace, permission_set] =
            <[HeaderName; 6]>::try_from(parsed)
                .unwrap_or_else(|_| unreachable!("six names in, six out"));
        HeadersConfig {
            user,
            email,
            name,
            groups,
            workspace,
            permission_set,
            max_groups_bytes: raw.max_groups_bytes,
            group_filter: raw.group_filter,
            jwt,
        }
    }

    fn access(&mut self, raw: RawAccess) -> AccessConfig {
        let allowed_domains = self.domains("access.allowed_domains", &raw.allowed_domains);
        let mut rules = vec![];
        for (i, r) in raw.rules.into_iter().enumerate() {
            let key = format!("access.rules[{i}]");
            let Some(prefix) = r.path_prefix else {
                self.problem(&format!("{key}.path_prefix"), "missing");
                continue;
            };
            if !prefix.starts_with('/') || prefix.contains(['?', '#', '%', '\\', '*']) {
                self.problem(
                    &format!("{key}.path_prefix"),
                    format_args!("{prefix:?} must be a plain path starting with '/'"),
                );
            }
            let methods = r
                .methods
                .iter()
                .filter_map(|m| {
                    http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                        .ok()
                        .or_else(|| {
                            self.problem(
                                &format!("{key}.methods"),
                                format_args!("{m:?} is not an HTTP method"),
                            );
                            None
                        })
                })
                .collect();
            let allowed_domains =
                self.domains(&format!("{key}.allowed_domains"), &r.allowed_domains);
            rules.push(AccessRule {
                path_prefix: prefix.trim_end_matches('/').to_string(),
                methods,
                allowed_groups: r.allowed_groups,
                allowed_domains,
            });
        }
        AccessConfig {
            allowed_groups: raw.allowed_groups,
            allowed_domains,
            rules,
        }
    }

    fn log(&mut self, raw: RawLog) -> LogConfig {
        let format = match raw.format.as_str() {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                self.problem(
                    "log.format",
                    format_args!("{other:?} is unknown: use \"json\" or \"pretty\""),
                );
                LogFormat::Json
            }
        };
        if tracing_subscriber::EnvFilter::try_new(&raw.level).is_err() {
            self.problem(
                "log.level",
                format_args!(
                    "{:?} is not a level or filter (trace, debug, info, warn, error)",
                    raw.level
                ),
            );
        }
        LogConfig {
            format,
            level: raw.level,
        }
    }
}

/// The placeholders a provisioning template may use.
pub const TEMPLATE_PLACEHOLDERS: [&str; 6] = [
    "email",
    "first_name",
    "last_name",
    "workspace",
    "permission_set",
    "groups",
];

/// Checks that a template fills into valid JSON and names only known placeholders.
fn check_template(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("an unclosed {{".into());
        };
        let name = after[..end].trim();
        if !TEMPLATE_PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{{{name}}}}} (known: {})",
                TEMPLATE_PLACEHOLDERS.join(", ")
            ));
        }
        rest = &after[end + 2..];
    }
    // Placeholders are identifiers, so filling one in never changes whether the text is JSON:
    // inside a string it stays a string, outside one it is invalid either way.
    serde_json::from_str::<serde_json::Value>(text)
        .map(|_| ())
        .map_err(|e| format!("is not JSON once filled in: {e}"))
}
