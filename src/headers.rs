//! Identity headers: removes every identity header a client sent (any case, `_` for `-`,
//! duplicates) and sets ours from the session, with names compiled from config once.
//!
//! Value encoding (documented in the README): values are UTF-8; every byte outside printable
//! ASCII (0x20–0x7E) and `%` itself is percent-encoded (RFC 3986 §2.1), so non-ASCII names
//! arrive intact instead of being dropped. In the groups header, groups are joined with `,`
//! and a `,` inside a group name is encoded as `%2C`.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::config::HeadersConfig;
use crate::identity::Identity;
use crate::keyhash::KeyHash;

/// Bytes encoded in every identity header value.
const VALUE_SET: &AsciiSet = &CONTROLS.add(b'%');
/// Bytes encoded in one group name inside the groups header.
const GROUP_SET: &AsciiSet = &VALUE_SET.add(b',');

/// Client-sent headers that are always removed, whatever the config names (oauth2-proxy's and
/// nginx auth_request's conventions, and the default name of samlgate's own JWT header,
/// whether `[headers.jwt]` is configured or not), compared after lower-casing and `_` → `-`.
const ALWAYS_STRIPPED: [&str; 10] = [
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-name",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-workspace",
    "x-forwarded-permission-set",
    "x-forwarded-access-token",
    "remote-user",
    "x-samlgate-jwt-assertion",
];
/// Prefixes of client-sent headers that are always removed.
const STRIPPED_PREFIXES: [&str; 2] = ["x-auth-request-", "x-webauth-"];

/// The compiled identity-header rules.
#[derive(Clone)]
pub struct IdentityHeaders {
    /// The configured names of user, email, name, groups, workspace, permission set.
    names: [HeaderName; 6],
    /// Every configured name (and the JWT header), lower-case.
    configured: Arc<[String]>,
    max_groups_bytes: usize,
    group_filter: Option<regex::Regex>,
    warned: moka::sync::Cache<String, ()>,
    /// Values already worked out, by identity. A session's identity is one shared `Arc` while
    /// the store holds it, so its values are computed once, not on every request. An entry holds
    /// its `Arc`, so the address that keys it cannot name another identity meanwhile.
    cached: moka::sync::Cache<usize, (Arc<Identity>, InjectedValues), KeyHash>,
}

/// An identity's header values, in the order of [`IdentityHeaders::names`]; `None` where the
/// identity has no such value.
type Values = [Option<HeaderValue>; 6];
type InjectedValues = Arc<Values>;

/// The names a forward-auth answer carries the same values under (oauth2-proxy's spelling,
/// which nginx's `auth_request_set` recipes expect), in the order of `names`.
const AUTH_REQUEST_NAMES: [HeaderName; 6] = [
    HeaderName::from_static("x-auth-request-user"),
    HeaderName::from_static("x-auth-request-email"),
    HeaderName::from_static("x-auth-request-name"),
    HeaderName::from_static("x-auth-request-groups"),
    HeaderName::from_static("x-auth-request-workspace"),
    HeaderName::from_static("x-auth-request-permission-set"),
];

/// Why the header rules could not be compiled.
#[derive(Debug, thiserror::Error)]
#[error("headers.group_filter: {0}")]
pub struct FilterError(String);

impl IdentityHeaders {
    /// Compiles names and the group filter once.
    pub fn new(cfg: &HeadersConfig) -> Result<Self, FilterError> {
        let mut configured: Vec<String> = [
            &cfg.user,
            &cfg.email,
            &cfg.name,
            &cfg.groups,
            &cfg.workspace,
            &cfg.permission_set,
        ]
        .iter()
        .map(|h| h.as_str().replace('_', "-"))
        .collect();
        if let Some(jwt) = &cfg.jwt {
            configured.push(jwt.header.as_str().replace('_', "-"));
        }
        let group_filter = cfg
            .group_filter
            .as_deref()
            .map(regex::Regex::new)
            .transpose()
            .map_err(|e| FilterError(e.to_string()))?;
        Ok(Self {
            names: [
                cfg.user.clone(),
                cfg.email.clone(),
                cfg.name.clone(),
                cfg.groups.clone(),
                cfg.workspace.clone(),
                cfg.permission_set.clone(),
            ],
            configured: configured.into(),
            max_groups_bytes: cfg.max_groups_bytes,
            group_filter,
            warned: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            cached: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(Duration::from_secs(300))
                .build_with_hasher(KeyHash),
        })
    }

    /// Removes every identity header a client could have planted.
    pub fn strip(&self, headers: &mut HeaderMap) {
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|name| self.is_identity_header(name.as_str()))
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(name);
        }
    }

    fn is_identity_header(&self, name: &str) -> bool {
        // Header names from hyper are already lower-case; `_` is folded to `-` for comparison.
        let b = name.as_bytes();
        if !(b.first() == Some(&b'x')
            || b.first() == Some(&b'r')
            || self.configured.iter().any(|c| c.len() == b.len()))
        {
            return false;
        }
        let eq = |target: &str| target.len() == b.len() && folded_starts_with(name, target);
        ALWAYS_STRIPPED.iter().any(|t| eq(t))
            || STRIPPED_PREFIXES
                .iter()
                .any(|p| folded_starts_with(name, p))
            || self.configured.iter().any(|t| eq(t))
    }

    /// Sets the identity headers from a session's identity (after `strip`).
    pub fn inject(&self, headers: &mut HeaderMap, identity: &Arc<Identity>) {
        Self::set(headers, &self.names, &self.cached_values(identity));
    }

    /// Sets the same values under the `X-Auth-Request-*` names (a forward-auth answer).
    pub fn inject_auth_request(&self, headers: &mut HeaderMap, identity: &Arc<Identity>) {
        Self::set(headers, &AUTH_REQUEST_NAMES, &self.cached_values(identity));
    }

    fn set(headers: &mut HeaderMap, names: &[HeaderName; 6], values: &Values) {
        for (name, value) in names.iter().zip(values) {
            if let Some(value) = value {
                headers.insert(name.clone(), value.clone());
            }
        }
    }

    /// [`values`](Self::values), worked out once per identity.
    fn cached_values(&self, identity: &Arc<Identity>) -> InjectedValues {
        let key = Arc::as_ptr(identity).addr();
        match self.cached.get(&key) {
            Some((held, values)) if Arc::ptr_eq(&held, identity) => values,
            _ => {
                let values: InjectedValues = Arc::new(self.values(identity));
                self.cached.insert(key, (identity.clone(), values.clone()));
                values
            }
        }
    }

    /// An identity's values of user, email, name, groups (`None` when it has none), workspace
    /// and permission set.
    pub fn values(&self, identity: &Identity) -> Values {
        [
            Some(encode(identity.upstream_user())),
            identity.email.as_deref().map(encode),
            identity.display_name().as_deref().map(encode),
            self.groups_value(identity),
            identity.workspace.as_deref().map(encode),
            identity.permission_set.as_deref().map(encode),
        ]
    }

    /// The groups header value within the byte budget: over budget, only groups matching
    /// `group_filter` are kept; still over, the list is cut at a group boundary. Warned once per user.
    fn groups_value(&self, identity: &Identity) -> Option<HeaderValue> {
        if identity.groups.is_empty() {
            return None;
        }
        let joined = join_groups(identity.groups.iter().map(|g| &**g));
        if joined.len() <= self.max_groups_bytes {
            return HeaderValue::from_str(&joined).ok();
        }
        let filtered: Vec<&str> = match &self.group_filter {
            Some(re) => identity
                .groups
                .iter()
                .map(|g| &**g)
                .filter(|g| re.is_match(g))
                .collect(),
            None => identity.groups.iter().map(|g| &**g).collect(),
        };
        let mut out = String::new();
        for g in filtered {
            let enc = utf8_percent_encode(g, GROUP_SET).to_string();
            let extra = enc.len() + usize::from(!out.is_empty());
            if out.len() + extra > self.max_groups_bytes {
                break;
            }
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(&enc);
        }
        if self.warned.get(&*identity.subject).is_none() {
            self.warned.insert(identity.subject.to_string(), ());
            tracing::warn!(user = %identity.subject, groups = identity.groups.len(), budget = self.max_groups_bytes,
                "groups header over its byte budget: filtered/cut (set headers.group_filter or headers.max_groups_bytes)");
        }
        if out.is_empty() {
            None
        } else {
            HeaderValue::from_str(&out).ok()
        }
    }
}

/// Joins groups with `,`, encoding each one.
pub fn join_groups<'a>(groups: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for g in groups {
        if !out.is_empty() {
            out.push(',');
        }
        out.extend(utf8_percent_encode(g, GROUP_SET));
    }
    out
}

/// Encodes one identity value as a header value (percent-encoding non-printable-ASCII bytes).
pub fn encode(value: &str) -> HeaderValue {
    let needs = value
        .bytes()
        .any(|b| !(0x20..0x7f).contains(&b) || b == b'%');
    if !needs && let Ok(v) = HeaderValue::from_str(value) {
        return v;
    }
    HeaderValue::from_str(&utf8_percent_encode(value, VALUE_SET).to_string())
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether header `name` starts with `prefix` (lower-case, `-`-spelt) once folded as servers
/// that read `_` as `-` fold it (CGI, WSGI, Rack), ignoring case.
pub(crate) fn folded_starts_with(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && prefix.bytes().zip(name.bytes()).all(|(p, c)| {
            p == if c == b'_' {
                b'-'
            } else {
                c.to_ascii_lowercase()
            }
        })
}

/// Removes our own cookies (those whose name `ours` picks: session and login binding) from
/// the `Cookie` header(s) sent upstream: the dashboard never sees the session id.
pub fn strip_cookies(headers: &mut HeaderMap, ours: impl Fn(&str) -> bool) {
    let mut values = headers.get_all(http::header::COOKIE).iter();
    let (Some(only), None) = (values.next(), values.next()) else {
        // None at all, or several (HTTP/2): nothing to do, or rebuild.
        if headers.contains_key(http::header::COOKIE) {
            rebuild_cookies(headers, ours);
        }
        return;
    };
    // The hot path, one header: left as it is (unallocated) when none of its cookies is ours,
    // removed when all of them are, rebuilt only when it mixes ours and the dashboard's.
    let (mut mine, mut theirs) = (false, false);
    match only.to_str() {
        Ok(s) => {
            for pair in s.split(';').filter(|p| !p.trim().is_empty()) {
                if ours(cookie_name(pair)) {
                    mine = true;
                } else {
                    theirs = true;
                }
            }
        }
        // Not text: no cookie can be told apart, so none is forwarded.
        Err(_) => mine = true,
    }
    match (mine, theirs) {
        (false, _) => {}
        (true, false) => {
            headers.remove(http::header::COOKIE);
        }
        (true, true) => rebuild_cookies(headers, ours),
    }
}

/// The name of one `name=value` pair of a Cookie header.
fn cookie_name(pair: &str) -> &str {
    pair.split('=').next().unwrap_or("").trim()
}

/// Rewrites the Cookie header(s) as one, without `names` (HTTP/2 clients send one header per
/// cookie; HTTP/1.1 upstreams get them joined, RFC 9113 §8.2.3).
fn rebuild_cookies(headers: &mut HeaderMap, ours: impl Fn(&str) -> bool) {
    let mut kept = String::new();
    for v in headers.get_all(http::header::COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        for pair in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            if !ours(cookie_name(pair)) {
                if !kept.is_empty() {
                    kept.push_str("; ");
                }
                kept.push_str(pair);
            }
        }
    }
    headers.remove(http::header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(kept))
    {
        headers.insert(http::header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> IdentityHeaders {
        rules_with("")
    }

    /// The header rules of a minimal config plus `headers` lines under `[headers]`.
    fn rules_with(headers: &str) -> IdentityHeaders {
        let raw = format!(
            "[server]\npublic_url=\"http://x\"\n[upstream]\nurl=\"http://127.0.0.1:1\"\n[saml]\nidp_metadata_file=\"Cargo.toml\"\n[session]\nsecret=\"0123456789abcdef0123456789abcdef\"\n[headers]\n{headers}\n"
        );
        let cfg = crate::config::Config::from_toml_str(&raw, std::path::Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        IdentityHeaders::new(&cfg.headers).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn groups_over_budget_are_filtered_then_cut_at_a_group_boundary() {
        let id = |groups: &[&str]| Identity {
            subject: "u@example.com".into(),
            groups: crate::identity::groups(groups),
            ..Identity::default()
        };
        let long = |p: &str, i: usize| format!("{p}-{i:02}-{}", "x".repeat(12));
        let many: Vec<String> = (0..8)
            .flat_map(|i| [long("dash", i), long("other", i)])
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let value = |r: &IdentityHeaders, groups: &[&str]| {
            r.groups_value(&id(groups))
                .map(|v| v.to_str().unwrap().to_string())
        };
        // Within budget: everything, in order.
        let r = rules_with("max_groups_bytes = 64");
        assert_eq!(value(&r, &["a", "b"]).as_deref(), Some("a,b"));
        // Over budget, no filter: cut at the last whole group that fits.
        let cut = value(&r, &many).unwrap();
        assert!(cut.len() <= 64, "{cut}");
        assert_eq!(cut, many[..3].join(","));
        // Over budget with a filter: only matching groups, then cut.
        let r = rules_with("max_groups_bytes = 64\ngroup_filter = \"^dash-\"");
        let kept = value(&r, &many).unwrap();
        assert!(kept.len() <= 64, "{kept}");
        assert_eq!(
            kept,
            [long("dash", 0), long("dash", 1), long("dash", 2)].join(",")
        );
    }

    #[test]
    fn cached_values_follow_the_identity() {
        let r = rules();
        let ada = Arc::new(Identity {
            subject: "ada@example.com".into(),
            email: Some("ada@example.com".into()),
            ..Identity::default()
        });
        let inject = |id: &Arc<Identity>| {
            let mut h = HeaderMap::new();
            r.inject(&mut h, id);
            h
        };
        let first = inject(&ada);
        assert_eq!(inject(&ada), first);
        let email = &r.names[1];
        assert_eq!(first[email], "ada@example.com");
        // Another identity (a new session, or the same user re-provisioned) is its own entry.
        let changed = Arc::new(Identity {
            email: Some("ada.lovelace@example.com".into()),
            ..(*ada).clone()
        });
        assert_eq!(inject(&changed)[email], "ada.lovelace@example.com");
        assert_eq!(inject(&ada)[email], "ada@example.com");
    }

    #[test]
    fn strips_every_spelling() {
        let r = rules();
        let mut h = HeaderMap::new();
        for n in [
            "x-forwarded-user",
            "X_Forwarded_User",
            "x-forwarded_email",
            "x-auth-request-user",
            "X-WEBAUTH-USER",
            "remote_user",
            "x-forwarded-permission-set",
        ] {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap_or_else(|e| panic!("{e}")),
                HeaderValue::from_static("evil"),
            );
        }
        h.append("x-forwarded-user", HeaderValue::from_static("evil2"));
        h.insert("x-keep", HeaderValue::from_static("ok"));
        r.strip(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn encodes_groups_and_non_ascii() {
        assert_eq!(
            join_groups(["a,b", "Zoë", "x%y"].into_iter()),
            "a%2Cb,Zo%C3%AB,x%25y"
        );
        assert_eq!(
            encode("José Müller").to_str().unwrap_or(""),
            "Jos%C3%A9 M%C3%BCller"
        );
        assert_eq!(encode("plain name").to_str().unwrap_or(""), "plain name");
    }

    #[test]
    fn strips_our_cookies_only() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::COOKIE,
            HeaderValue::from_static("a=1; samlgate=xyz"),
        );
        h.append(http::header::COOKIE, HeaderValue::from_static("b=2"));
        strip_cookies(&mut h, |n| n == "samlgate");
        assert_eq!(
            h.get(http::header::COOKIE).and_then(|v| v.to_str().ok()),
            Some("a=1; b=2")
        );
        // One header: left alone without ours, rewritten with ours, removed when only ours.
        let mut h = HeaderMap::new();
        h.insert(http::header::COOKIE, HeaderValue::from_static("a=1;b=2"));
        strip_cookies(&mut h, |n| n == "samlgate");
        assert_eq!(h[http::header::COOKIE], "a=1;b=2");
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_static("samlgate=x; a=1"),
        );
        strip_cookies(&mut h, |n| n == "samlgate");
        assert_eq!(h[http::header::COOKIE], "a=1");
        h.insert(http::header::COOKIE, HeaderValue::from_static("samlgate=x"));
        strip_cookies(&mut h, |n| n == "samlgate");
        assert!(h.get(http::header::COOKIE).is_none());
        // A header that is not text may hide ours: none of it is forwarded.
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_bytes(b"a=\xff; samlgate=x").unwrap(),
        );
        strip_cookies(&mut h, |n| n == "samlgate");
        assert!(h.get(http::header::COOKIE).is_none());
    }
}
