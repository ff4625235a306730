//! Config: one TOML file with `SAMLGATE_<SECTION>__<KEY>` environment variables on top, read
//! once into `RawConfig` (serde, unknown keys refused) and compiled into a typed `Config` that
//! cannot be wrong. Every problem is reported at once, each prefixed with its key path.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
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
        // `*` is not a glob: only a whole last segment, meaning that path and all below it.
        match s.strip_suffix("/*") {
            Some(prefix) if !prefix.contains('*') => return Ok(Self::Prefix(format!("{prefix}/"))),
            _ if s.contains('*') => {
                return Err(format!(
                    "{s:?}: '*' is only allowed as the whole last segment, as in \"/static/*\" (/static and everything below it); otherwise write an exact path such as \"/healthz\""
                ));
            }
            _ => {}
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
    /// Whom the cookies are for: the SP entity ID (`saml.entity_id`). Cookie tags are keyed
    /// with it, so a cookie of another deployment that shares the secret (and Redis) is
    /// refused here: the IdP assigned its user to that app, not this one.
    pub audience: String,
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
    idp_metadata_allow_http: bool,
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
            idp_metadata_allow_http: false,
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
    #[serde(deserialize_with = "list_or_comma_separated")]
    previous_secrets: Vec<String>,
    previous_secrets_file: Option<String>,
    cookie_name: String,
    lifetime: String,
    idle_timeout: String,
    store: String,
    redis_url: Option<String>,
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
            redis_url: None,
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
    user: Option<String>,
    email: Option<String>,
    name: Option<String>,
    groups: Option<String>,
    workspace: Option<String>,
    permission_set: Option<String>,
    preset: Option<String>,
    max_groups_bytes: usize,
    group_filter: Option<String>,
    jwt: Option<RawJwt>,
}

impl Default for RawHeaders {
    fn default() -> Self {
        Self {
            user: None,
            email: None,
            name: None,
            groups: None,
            workspace: None,
            permission_set: None,
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
        // Lossy: a number or boolean key given as text (every environment variable is text,
        // see `EnvVars`) is read as one; a string key keeps the text exactly as written.
        let raw: RawConfig = figment.extract_lossy().map_err(|err| ConfigError {
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

fn env_provider() -> EnvVars {
    EnvVars
}

/// `SAMLGATE_<SECTION>__<KEY>` environment variables. Only names with `__` are config: the
/// others under the prefix are not ours (Kubernetes service links such as
/// `SAMLGATE_SERVICE_HOST` or `SAMLGATE_PORT_8080_TCP_ADDR` for a Service named `samlgate`,
/// and `SAMLGATE_CONFIG`). Values are kept as the text they are (a token of digits stays the
/// string it is, leading zeros and all), except a TOML-style list or table (`["a", "b"]`);
/// number and boolean keys read the text lossily (see `Config::from_figment`).
struct EnvVars;

impl EnvVars {
    fn env() -> Env {
        Env::prefixed("SAMLGATE_")
            .filter(|key| key.as_str().contains("__"))
            .split("__")
    }
}

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV_SOURCE)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, text) in Self::env().iter() {
            if let Value::Dict(_, nested) = figment::util::nest(key.as_str(), env_value(text)) {
                merge_dict(&mut dict, nested);
            }
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// An environment variable's value: a TOML-style list or table as such, anything else as the
/// text it is (never a number: `0123` would lose its zero, `1.50` its last digit).
fn env_value(text: String) -> Value {
    match text.parse::<Value>() {
        Ok(v @ (Value::Array(..) | Value::Dict(..))) => v,
        _ => Value::from(text),
    }
}

/// The name of the environment provider, as errors carry it.
const ENV_SOURCE: &str = "`SAMLGATE_` environment variable(s)";

fn merge_dict(into: &mut Dict, from: Dict) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Dict(_, a)), Value::Dict(_, b)) => merge_dict(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// `session.previous_secrets`: a list, or (handy in an environment variable) one string of
/// comma-separated secrets.
fn list_or_comma_separated<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of strings or one comma-separated string")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

/// What kind of value serde found, never the value itself (it may be a secret).
fn kind_of(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a float",
        Actual::Char(_) => "a character",
        Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Unit => "an empty value",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        _ => "a value of another type",
    }
}

/// One line for one figment error: the key, the problem, never the value found (a type error
/// in `session.secret` would otherwise print the secret).
fn describe_figment_error(err: figment::Error) -> String {
    use figment::error::{Actual, Kind};
    let key = err.path.join(".");
    let from_env = err.metadata.as_ref().is_some_and(|m| m.name == ENV_SOURCE);
    let source = if from_env && !err.path.is_empty() {
        format!(
            " (from ${})",
            format!("SAMLGATE_{}", err.path.join("__")).to_ascii_uppercase()
        )
    } else {
        String::new()
    };
    let what = match &err.kind {
        Kind::UnknownField(field, expected) => {
            let key = if key.is_empty() {
                field.to_string()
            } else if err.path.last().is_some_and(|last| last == field) {
                key
            } else {
                format!("{key}.{field}")
            };
            let source = if from_env {
                let var = key.replace('.', "__").to_ascii_uppercase();
                if key.contains('.') {
                    format!(" (from $SAMLGATE_{var})")
                } else {
                    format!(" (from a $SAMLGATE_{var}__... variable)")
                }
            } else {
                String::new()
            };
            return format!(
                "{key}: unknown key{source} (expected one of: {})",
                expected.join(", ")
            );
        }
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            let quote = !from_env
                && expected.contains("string")
                && matches!(
                    actual,
                    Actual::Bool(_) | Actual::Unsigned(_) | Actual::Signed(_) | Actual::Float(_)
                );
            let expected = match expected.as_str() {
                "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number",
                "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer",
                "f32" | "f64" => "a number",
                "a sequence" => "a list",
                "a map" => "a table",
                other => other,
            };
            if from_env && matches!(actual, Actual::Str(_)) {
                // Every environment variable is text: "found a string" would say nothing.
                format!("expected {expected}")
            } else {
                format!(
                    "expected {expected}, found {}{}",
                    kind_of(actual),
                    if quote { " (write it in quotes)" } else { "" }
                )
            }
        }
        Kind::Unsupported(actual) => format!("unsupported value: {}", kind_of(actual)),
        Kind::UnsupportedKey(actual, expected) => {
            format!("unsupported key: {}, expected {expected}", kind_of(actual))
        }
        Kind::UnknownVariant(_, expected) => {
            format!("unknown value, expected one of: {}", expected.join(", "))
        }
        // A TOML syntax error quotes the offending line, which may hold a secret: keep its
        // position and reason only.
        Kind::Message(msg) => msg
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                !(l.starts_with('|')
                    || l.split_once('|').is_some_and(|(n, _)| {
                        !n.trim().is_empty() && n.trim().bytes().all(|b| b.is_ascii_digit())
                    }))
            })
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(": "),
        kind => kind.to_string(),
    };
    if key.is_empty() {
        format!("{what}{source}")
    } else {
        format!("{key}: {what}{source}")
    }
}

/// Why the redis client would refuse `url` (parsed as it parses it, without connecting); the
/// URL itself is never part of the answer, since it may carry a password.
fn redis_url_problem(url: &str) -> Option<String> {
    use redis::IntoConnectionInfo;
    const FORM: &str = "write redis://[:password@]host:6379/0 or rediss://...";
    let parsed = match url::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return Some(format!("not a valid URL ({e}); {FORM}")),
    };
    if !matches!(parsed.scheme(), "redis" | "rediss" | "redis+unix" | "unix") {
        return Some(format!(
            "the scheme {:?} is not redis:// or rediss://; {FORM}",
            parsed.scheme()
        ));
    }
    match url.into_connection_info() {
        Ok(_) => None,
        Err(e) => {
            let text = e.to_string();
            let why = text
                .rsplit_once(" - ")
                .map_or(text.as_str(), |(why, _)| why);
            Some(if why == "Invalid database number" {
                "the database (the URL's path) must be a number, e.g. redis://host:6379/0".into()
            } else {
                format!("refused by the Redis client: {why}")
            })
        }
    }
}

/// The longest duration any key takes (caches refuse longer ones).
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Whether a URL's host is this machine (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback_host(host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `value` with any `user:password@` replaced by `***@`, for error messages.
fn redact_userinfo(value: &str) -> String {
    let (scheme, rest) = match value.find("://") {
        Some(i) => value.split_at(i + 3),
        None => ("", value),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}***{}", &rest[at..]),
        None => value.to_string(),
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

    /// A duration, or `None` (reported) when it does not parse.
    fn parse_duration(&mut self, key: &str, value: &str) -> Option<Duration> {
        // humantime reads a lone `M` as months: "30M" meant as 30 minutes would be 2.5 years.
        let b = value.as_bytes();
        let lone_month = b.iter().enumerate().any(|(i, &c)| {
            c == b'M'
                && i > 0
                && (b[i - 1].is_ascii_digit() || b[i - 1] == b' ')
                && !b.get(i + 1).is_some_and(u8::is_ascii_alphabetic)
        });
        if lone_month {
            self.problem(
                key,
                format_args!(
                    "{value:?}: \"M\" is ambiguous; write \"m\" for minutes or \"months\""
                ),
            );
            return None;
        }
        match humantime::parse_duration(value.trim()) {
            Ok(d) if d > MAX_DURATION => {
                self.problem(
                    key,
                    format_args!(
                        "{value:?} is longer than ten years, the most any duration can be"
                    ),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(
                    key,
                    format_args!(
                        "{value:?} is not a duration ({e}); write e.g. \"90s\", \"15m\", \"12h\""
                    ),
                );
                None
            }
        }
    }

    /// A duration that may be anything, zero included (zero when it does not parse).
    fn duration(&mut self, key: &str, value: &str) -> Duration {
        self.parse_duration(key, value).unwrap_or(Duration::ZERO)
    }

    /// A duration of at least `min` (written as `min_text`), with `why` it cannot be shorter.
    /// One problem at most: a value that does not parse is not also "too short".
    fn duration_at_least(
        &mut self,
        key: &str,
        value: &str,
        (min, min_text): (Duration, &str),
        why: &str,
    ) -> Duration {
        match self.parse_duration(key, value) {
            Some(d) if d < min => {
                self.problem(key, format_args!("must be at least \"{min_text}\" ({why})"));
                min
            }
            Some(d) => d,
            None => min,
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
    /// `Ok(None)`: neither is set; `Err(())`: a problem was reported (both set, file unreadable).
    fn secret(
        &mut self,
        key: &str,
        inline: Option<String>,
        file: Option<String>,
    ) -> Result<Option<Secret>, ()> {
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.problem(
                    key,
                    format_args!("set either {key} or {key}_file, not both"),
                );
                Err(())
            }
            (Some(s), None) => Ok(Some(Secret::new(s))),
            (None, Some(f)) => {
                let p = self.path(&f);
                match std::fs::read_to_string(&p) {
                    Ok(s) => Ok(Some(Secret::new(
                        s.trim_end_matches(['\r', '\n']).to_string(),
                    ))),
                    Err(e) => {
                        self.problem(
                            &format!("{key}_file"),
                            format_args!("cannot read {}: {e}", p.display()),
                        );
                        Err(())
                    }
                }
            }
            (None, None) => Ok(None),
        }
    }

    /// A PEM CA bundle: it must be readable and hold at least one certificate.
    fn ca_file(&mut self, key: &str, value: &str) -> PathBuf {
        let p = self.path(value);
        let why = match crate::outbound::read_ca_file(&p) {
            Ok(certs) if !certs.is_empty() => None,
            Ok(_) => Some("no PEM certificate in it".to_string()),
            Err(e) => Some(e),
        };
        if let Some(why) = why {
            self.problem(key, format_args!("{}: {why}", p.display()));
        }
        p
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

    /// An absolute http(s) URL. Errors show it with any `user:password@` masked.
    fn http_url(&mut self, key: &str, value: &str) -> Option<http::Uri> {
        match value.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {
                Some(u)
            }
            _ => {
                self.problem(
                    key,
                    format_args!(
                        "{:?} is not an absolute http(s) URL",
                        redact_userinfo(value)
                    ),
                );
                None
            }
        }
    }

    /// An absolute http(s) URL without a query or fragment (which would be silently dropped),
    /// or `user:password@` (which samlgate would not send: nothing here does basic auth).
    fn base_url(&mut self, key: &str, value: &str) -> Option<http::Uri> {
        let uri = self.http_url(key, value)?;
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            self.problem(
                key,
                "must not carry user:password@: samlgate does not send it",
            );
            return None;
        }
        if value.contains('#') {
            self.problem(key, "must not have a fragment (#...)");
            return None;
        }
        if uri.query().is_some() {
            self.problem(
                key,
                "must not have a query (?...): it would be dropped from every request",
            );
            return None;
        }
        Some(uri)
    }

    fn build(&mut self, raw: RawConfig) -> Option<Config> {
        let server = self.server(raw.server);
        let upstream = self.upstream(raw.upstream);
        let saml = self.saml(raw.saml, &server.public_url);
        let session = self.session(raw.session, &saml.entity_id);
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
            Some(u) => self
                .public_url(&u)
                .unwrap_or_else(|| "http://127.0.0.1".to_string()),
        };
        // An unspecified IPv4 address takes the port on every IPv4 address; an unspecified
        // IPv6 one on every address of both families (Linux's dual-stack default).
        let covers = |a: std::net::IpAddr, b: std::net::IpAddr| {
            a == b || (a.is_unspecified() && (a.is_ipv6() || b.is_ipv4()))
        };
        if listen.port() != 0
            && listen.port() == admin_listen.port()
            && (covers(listen.ip(), admin_listen.ip()) || covers(admin_listen.ip(), listen.ip()))
        {
            self.problem(
                "server.admin_listen",
                format_args!(
                    "{admin_listen} overlaps server.listen ({listen}): both cannot listen on port {}; give the admin listener a port of its own (e.g. \"127.0.0.1:9090\")",
                    listen.port()
                ),
            );
        }
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
        let header_read_timeout = self.duration_at_least(
            "server.header_read_timeout",
            &raw.header_read_timeout,
            (Duration::from_secs(1), "1s"),
            "it cuts clients that send their request head too slowly",
        );
        let send_timeout = self.duration_at_least(
            "server.send_timeout",
            &raw.send_timeout,
            (Duration::from_secs(1), "1s"),
            "it cuts clients that stop reading their response",
        );
        ServerConfig {
            listen,
            trusted_proxies,
            admin_listen,
            // `public_url` is normalised: its scheme is lower-case.
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

    /// `server.public_url`, normalised only where the IdP does not see it: the scheme
    /// lower-case (so that every later test of it, `https://`, sees one spelling) and no
    /// trailing slash. Host and port stay as written, because the ACS URL and entity ID built
    /// from it are compared byte for byte with what the IdP has registered.
    fn public_url(&mut self, value: &str) -> Option<String> {
        const KEY: &str = "server.public_url";
        let trimmed = value.trim().trim_end_matches('/');
        let parsed = url::Url::parse(trimmed)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
        let Some(url) = parsed else {
            self.problem(
                KEY,
                format_args!(
                    "{:?} is not an absolute http(s) URL, e.g. \"https://dash.example.com\"",
                    redact_userinfo(value)
                ),
            );
            return None;
        };
        let mut ok = true;
        if !url.username().is_empty() || url.password().is_some() {
            self.problem(KEY, "must not carry user:password@");
            ok = false;
        }
        if url.path() != "/" {
            self.problem(
                KEY,
                "must not have a path; samlgate serves from the root of its host",
            );
            ok = false;
        }
        if url.query().is_some() {
            self.problem(KEY, "must not have a query");
            ok = false;
        }
        if url.fragment().is_some() {
            self.problem(KEY, "must not have a fragment");
            ok = false;
        }
        let rest = trimmed.split_once("://").map_or("", |(_, rest)| rest);
        ok.then(|| format!("{}://{rest}", url.scheme()))
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
            Some(u) => self.base_url("upstream.url", &u),
        };
        let connect_timeout = self.duration_at_least(
            "upstream.connect_timeout",
            &raw.connect_timeout,
            (Duration::from_millis(10), "10ms"),
            "no connection to the dashboard could be made in less",
        );
        let request_timeout = self.duration_at_least(
            "upstream.request_timeout",
            &raw.request_timeout,
            (Duration::from_secs(1), "1s"),
            "every request would end in a 504 page",
        );
        let keepalive_timeout = self.duration_at_least(
            "upstream.keepalive_timeout",
            &raw.keepalive_timeout,
            (Duration::from_secs(1), "1s"),
            "idle upstream connections are closed on a 1-second tick",
        );
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
        let ca_file = raw.ca_file.map(|f| self.ca_file("upstream.ca_file", &f));
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
                if url.scheme_str() == Some("http")
                    && !is_loopback_host(url.host())
                    && !raw.idp_metadata_allow_http
                {
                    self.problem(
                        "saml.idp_metadata_url",
                        "must be https://: the metadata carries the IdP's signing certificate \
                         and is not signature-checked, so anyone on the way could swap it (http \
                         is allowed to a loopback address, or with \
                         saml.idp_metadata_allow_http = true where the network itself is \
                         trusted, such as a service mesh with mTLS)",
                    );
                }
                let refresh = self.duration_at_least(
                    "saml.idp_metadata_refresh",
                    &raw.idp_metadata_refresh,
                    (Duration::from_secs(60), "1m"),
                    "the IdP is not asked more often",
                );
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
        let max_issue_age = self.duration_at_least(
            "saml.max_issue_age",
            &raw.max_issue_age,
            (Duration::from_secs(10), "10s"),
            "a response is posted seconds after the IdP issues it; less refuses sign-ins",
        );
        let login_timeout = self.duration_at_least(
            "saml.login_timeout",
            &raw.login_timeout,
            (Duration::from_secs(60), "1m"),
            "people need time to sign in at the IdP",
        );
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

    fn session(&mut self, raw: RawSession, audience: &str) -> Option<SessionConfig> {
        let secret = match self.secret("session.secret", raw.secret, raw.secret_file) {
            Err(()) => None,
            Ok(None) => {
                self.problem(
                    "session.secret",
                    "missing: at least 32 random bytes (e.g. `openssl rand -base64 48`), or session.secret_file",
                );
                None
            }
            Ok(Some(s)) if s.expose().trim().len() < 32 => {
                self.problem(
                    "session.secret",
                    "too short: at least 32 bytes are required (e.g. `openssl rand -base64 48`)",
                );
                None
            }
            Ok(Some(s)) => Some(s),
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
        let lifetime = self.duration_at_least(
            "session.lifetime",
            &raw.lifetime,
            (Duration::from_secs(60), "1m"),
            "shorter sessions send people back to the IdP all the time",
        );
        // An idle timeout longer than the lifetime is harmless (the lifetime ends the session
        // first), so it is accepted.
        let idle_timeout = self.duration_at_least(
            "session.idle_timeout",
            &raw.idle_timeout,
            (Duration::from_secs(60), "1m"),
            "shorter sessions send people back to the IdP all the time",
        );
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
        let redis_url = match self.secret("session.redis_url", raw.redis_url, raw.redis_url_file) {
            Ok(Some(u)) => Some(u),
            Ok(None) => Some(Secret::new("redis://127.0.0.1:6379/0")),
            Err(()) => None,
        };
        if store == StoreKind::Redis
            && let Some(u) = &redis_url
            && let Some(why) = redis_url_problem(u.expose())
        {
            // Never echo the URL: it may carry a password.
            self.problem("session.redis_url", why);
        }
        let tls = redis_url
            .as_ref()
            .is_some_and(|u| u.expose().to_ascii_lowercase().starts_with("rediss://"));
        let redis_ca_file = raw.redis_ca_file.map(|f| {
            if store == StoreKind::Redis && redis_url.is_some() && !tls {
                self.problem(
                    "session.redis_ca_file",
                    "set, but session.redis_url is not rediss:// (TLS): Redis would be reached without TLS",
                );
            }
            self.ca_file("session.redis_ca_file", &f)
        });
        let operation_timeout = self.duration_at_least(
            "session.operation_timeout",
            &raw.operation_timeout,
            (Duration::from_millis(10), "10ms"),
            "every request needs the store; less would refuse them",
        );
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
            redis_url: redis_url.unwrap_or_else(|| Secret::new("")),
            redis_ca_file,
            redis_key_prefix: raw.redis_key_prefix,
            operation_timeout,
            max_entries: raw.max_entries,
            local_ttl,
            audience: audience.to_string(),
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
                .base_url("provisioning.url", &u)
                .map(|_| u.trim_end_matches('/').to_string()),
        };
        let from_file = raw.token_file.is_some();
        let token = match self.secret("provisioning.token", raw.token, raw.token_file) {
            Err(()) => None,
            Ok(None) => {
                self.problem(
                    "provisioning.token",
                    "missing: the admin API's bearer token (or provisioning.token_file)",
                );
                None
            }
            Ok(Some(t)) if t.expose().trim().is_empty() => {
                self.problem(
                    "provisioning.token",
                    if from_file {
                        "empty (provisioning.token_file holds nothing but whitespace)"
                    } else {
                        "empty: set the admin API's bearer token"
                    },
                );
                None
            }
            // The token goes into `Authorization: Bearer <token>`; a newline or other control
            // character inside it cannot (serve would refuse to start).
            Ok(Some(t))
                if http::HeaderValue::try_from(format!("Bearer {}", t.expose())).is_err() =>
            {
                self.problem(
                    "provisioning.token",
                    "contains characters not allowed in an HTTP header (a newline or another control character)",
                );
                None
            }
            Ok(Some(t)) => Some(t),
        };
        let timeout = self.duration_at_least(
            "provisioning.timeout",
            &raw.timeout,
            (Duration::from_millis(100), "100ms"),
            "every admin API call would time out",
        );
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
                    // Sent as the X-Request-Origin header: serve would refuse one that cannot be.
                    Some(o) if http::HeaderValue::try_from(o.as_str()).is_err() => {
                        self.problem(
                            "provisioning.braze.request_origin",
                            "contains characters not allowed in an HTTP header (a newline or another control character)",
                        );
                        None
                    }
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
        let keys = [
            "headers.user",
            "headers.email",
            "headers.name",
            "headers.groups",
            "headers.workspace",
            "headers.permission_set",
        ];
        let own = [
            raw.user,
            raw.email,
            raw.name,
            raw.groups,
            raw.workspace,
            raw.permission_set,
        ];
        let defaults = [
            "X-Forwarded-User",
            "X-Forwarded-Email",
            "X-Forwarded-Name",
            "X-Forwarded-Groups",
            "X-Forwarded-Workspace",
            "X-Forwarded-Permission-Set",
        ];
        let own_or_default = |own: [Option<String>; 6]| {
            let mut i = 0;
            own.map(|o| {
                let name = o.unwrap_or_else(|| defaults[i].to_string());
                i += 1;
                name
            })
        };
        let names = match raw.preset.as_deref() {
            None => own_or_default(own),
            Some("grafana") => {
                // The preset sets every name: a name set as well would be silently ignored
                // (unless it is the default, as the shipped config spells them all out).
                for ((key, o), default) in keys.iter().zip(&own).zip(defaults) {
                    if o.as_deref()
                        .is_some_and(|o| !o.eq_ignore_ascii_case(default))
                    {
                        self.problem(
                            key,
                            "ignored: headers.preset = \"grafana\" sets every name; remove one of them",
                        );
                    }
                }
                [
                    "X-WEBAUTH-USER",
                    "X-WEBAUTH-EMAIL",
                    "X-WEBAUTH-NAME",
                    "X-WEBAUTH-GROUPS",
                    "X-WEBAUTH-WORKSPACE",
                    "X-WEBAUTH-ROLE",
                ]
                .map(String::from)
            }
            Some(other) => {
                self.problem(
                    "headers.preset",
                    format_args!("{other:?} is unknown: the only preset is \"grafana\""),
                );
                own_or_default(own)
            }
        };
        let parsed: Vec<HeaderName> = keys
            .iter()
            .zip(names.iter())
            .map(|(k, v)| self.header_name(k, v))
            .collect();
        let jwt = raw.jwt.map(|j| {
            let ttl = match self.parse_duration("headers.jwt.ttl", &j.ttl) {
                Some(ttl) if ttl > Duration::from_secs(300) || ttl < Duration::from_secs(10) => {
                    self.problem("headers.jwt.ttl", "must be between \"10s\" and \"5m\"");
                    Duration::from_secs(300)
                }
                Some(ttl) => ttl,
                None => Duration::from_secs(300),
            };
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
        // Each identity header needs a name of its own that no proxy or HTTP machinery owns.
        let mut named: Vec<(&str, String, &str)> = keys
            .iter()
            .zip(&parsed)
            .zip(defaults)
            .map(|((k, h), default)| (*k, h.as_str().replace('_', "-"), default))
            .collect();
        if let Some(j) = &jwt {
            named.push((
                "headers.jwt.header",
                j.header.as_str().replace('_', "-"),
                "X-Samlgate-Jwt-Assertion",
            ));
        }
        for (i, (key, name, default)) in named.iter().enumerate() {
            if RESERVED_HEADERS.contains(&name.as_str()) {
                self.problem(
                    key,
                    format_args!(
                        "{name:?} is reserved (HTTP framing, credentials or a header the proxy sets): pick another name, e.g. the default {default:?}"
                    ),
                );
            } else if let Some((other, ..)) = named[..i].iter().find(|(_, n, _)| n == name) {
                self.problem(
                    key,
                    format_args!(
                        "{name:?} is also {other}'s header: each identity field needs a header of its own"
                    ),
                );
            }
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

/// Header names an identity header may not take (lower-case, `-`): message framing, hop-by-hop,
/// credentials and the `X-Forwarded-*` headers the proxy sets itself.
const RESERVED_HEADERS: [&str; 15] = [
    "host",
    "cookie",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
    "authorization",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Sample {
        token: String,
        count: usize,
        on: bool,
        #[serde(deserialize_with = "list_or_comma_separated")]
        list: Vec<String>,
    }

    fn from_env_texts(pairs: &[(&str, &str)]) -> Result<Sample, String> {
        let mut figment = Figment::new();
        for (k, v) in pairs {
            figment = figment.merge((*k, env_value((*v).to_string())));
        }
        figment.extract_lossy().map_err(|e| e.to_string())
    }

    #[test]
    fn environment_values_keep_their_text_for_strings_and_convert_for_numbers() {
        let s = from_env_texts(&[
            ("token", "0987654321"),
            ("count", "42"),
            ("on", "true"),
            ("list", "a, b,,c"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.token, "0987654321");
        assert_eq!((s.count, s.on), (42, true));
        assert_eq!(s.list, ["a", "b", "c"]);
        let s = from_env_texts(&[
            ("token", "1.50"),
            ("count", "1"),
            ("on", "false"),
            ("list", "[\"x,y\", \"z\"]"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.token, "1.50");
        assert_eq!(s.list, ["x,y", "z"]);
    }

    #[test]
    fn type_errors_name_the_type_not_the_value() {
        let err = Figment::new()
            .merge(("token", vec!["hunter2-in-a-list"]))
            .merge(("count", 1))
            .merge(("on", true))
            .merge(("list", "a"))
            .extract_lossy::<Sample>()
            .expect_err("a list is not a string");
        let text = err
            .into_iter()
            .map(describe_figment_error)
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(text, "token: expected a string, found a list");
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for h in ["localhost", "127.0.0.1", "127.9.9.9", "[::1]", "LOCALHOST"] {
            assert!(is_loopback_host(Some(h)), "{h}");
        }
        for h in [
            "idp.example.com",
            "10.0.0.1",
            "[::2]",
            "localhost.evil.test",
        ] {
            assert!(!is_loopback_host(Some(h)), "{h}");
        }
        assert!(!is_loopback_host(None));
    }

    #[test]
    fn userinfo_is_masked() {
        assert_eq!(
            redact_userinfo("gopher://u:pw@host/x@y"),
            "gopher://***@host/x@y"
        );
        assert_eq!(redact_userinfo("u:pw@host"), "***@host");
        assert_eq!(
            redact_userinfo("https://host/?a=b@c"),
            "https://host/?a=b@c"
        );
    }

    #[test]
    fn path_patterns_take_a_star_only_as_a_whole_last_segment() {
        let ok = |s: &str| PathPattern::parse(s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok("/static/*"), PathPattern::Prefix("/static/".into()));
        assert_eq!(ok("/*"), PathPattern::Prefix("/".into()));
        assert_eq!(ok("/healthz"), PathPattern::Exact("/healthz".into()));
        for bad in ["/st*", "/static*", "/*/x", "/a/*/*", "*", "/a/**"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redis_urls_are_checked_as_the_client_parses_them() {
        assert_eq!(redis_url_problem("redis://:pw@127.0.0.1:6379/0"), None);
        assert_eq!(redis_url_problem("rediss://redis.internal/2"), None);
        for bad in [
            "redis://127.0.0.1:6379/notadb",
            "redis://127.0.0.1:99999/0",
            "http://127.0.0.1:6379/0",
            "rediss://h/0#nope",
        ] {
            let why = redis_url_problem(bad).unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(!why.contains("127.0.0.1"), "{why}");
        }
    }
}
