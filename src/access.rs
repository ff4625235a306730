//! Access: which requests pass without a session (public paths), who may pass with one
//! (groups, domains, per-path rules), and whether a client without a session is a browser
//! (redirect to the IdP) or an API client (401). Paths are matched in normalised form so that
//! encodings, dot segments and parameters never widen what is public or narrow what is
//! protected (oauth2-proxy GHSA-7rh7-c77v-6434, GHSA-pxq7-h93f-9jrg).

use http::{HeaderMap, Method, header};

use crate::config::{AccessConfig, PathPattern};
use crate::identity::Identity;

/// A path as the upstream most likely understands it, and whether the raw path was already in
/// that form (a raw path that needs normalising is never treated as public).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath {
    /// Percent-decoded, `\` as `/`, `;params` dropped, empty and `.` segments removed, `..` applied.
    pub path: String,
    /// True when the raw path equals `path` byte for byte.
    pub canonical: bool,
}

/// Normalises a raw request path (without query or fragment). RFC 3986 §5.2.4 dot-segment
/// removal after decoding, which is what path-confusion attacks rely on servers doing.
pub fn normalize(raw: &str) -> NormalPath {
    if is_plain(raw) {
        return NormalPath {
            path: raw.to_owned(),
            canonical: true,
        };
    }
    normalize_any(raw)
}

/// A path normalising leaves as it is (the common case, checked in one pass): absolute, nothing
/// to decode, no `\`, no `;params`, and no empty (but a trailing one), `.` or `..` segment.
fn is_plain(raw: &str) -> bool {
    let Some(rest) = raw.strip_prefix('/') else {
        return false;
    };
    if rest.bytes().any(|b| matches!(b, b'%' | b'\\' | b';')) {
        return false;
    }
    let mut segments = rest.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if (seg.is_empty() && !last) || seg == "." || seg == ".." {
            return false;
        }
    }
    true
}

/// Whether a raw path has a `..` segment, in any encoding or spelling that [`normalize`]
/// understands: such a path, appended to an upstream base path, could resolve above it there.
pub fn climbs(raw: &str) -> bool {
    !is_plain(raw)
        && decode(raw)
            .split('/')
            .any(|seg| seg.split(';').next() == Some(".."))
}

/// Percent-decoded repeatedly (bounded) so that double encodings (%252e) cannot hide dot
/// segments, and `\` as `/`.
fn decode(raw: &str) -> String {
    let mut decoded = raw.to_string();
    for _ in 0..3 {
        let next = percent_decode(&decoded);
        if next == decoded {
            break;
        }
        decoded = next;
    }
    decoded.replace('\\', "/")
}

fn normalize_any(raw: &str) -> NormalPath {
    let decoded = decode(raw);
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len() + 1);
    for s in &segments {
        path.push('/');
        path.push_str(s);
    }
    if path.is_empty() || (decoded.ends_with('/') && !segments.is_empty()) {
        path.push('/');
    }
    let canonical = path == raw;
    NormalPath { path, canonical }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True when the request may pass without a session: a public pattern matches the normalised
/// path and the raw path needed no normalising.
pub fn is_public(patterns: &[PathPattern], path: &NormalPath) -> bool {
    path.canonical && patterns.iter().any(|p| p.matches(&path.path))
}

/// Whether a client without a session should be redirected to the IdP (a browser: its
/// `Accept` names `text/html`, with any method, as oauth2-proxy does) rather than answered 401
/// (XHR, JSON, `*/*`, `text/html;q=0` and everything else).
pub fn wants_redirect(headers: &HeaderMap) -> bool {
    if headers.get("x-requested-with").is_some() {
        return false;
    }
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let is_html = parts
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/html"));
            // RFC 9110 §12.4.2: a weight of 0 means "not acceptable".
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .or_else(|| p.trim().strip_prefix("Q="))
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            is_html && !refused
        })
}

/// Why access was refused: names what is missing, for the 403 page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// Not a member of any allowed group.
    #[error("this requires membership in one of: {}", .0.join(", "))]
    Group(Vec<String>),
    /// Email domain not allowed.
    #[error("accounts of your email domain may not use this")]
    Domain,
}

/// The compiled `[access]` policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    cfg: AccessConfig,
}

impl Policy {
    /// Compiles the policy once.
    pub fn new(cfg: &AccessConfig) -> Self {
        Self { cfg: cfg.clone() }
    }

    /// Checks a signed-in identity against the global lists and the first matching path rule.
    pub fn authorize(
        &self,
        identity: &Identity,
        method: &Method,
        path: &NormalPath,
    ) -> Result<(), Denied> {
        check(
            identity,
            &self.cfg.allowed_groups,
            &self.cfg.allowed_domains,
        )?;
        let rule = self.cfg.rules.iter().find(|r| {
            (r.methods.is_empty() || r.methods.contains(method))
                && (path.path == r.path_prefix
                    || path.path.starts_with(&r.path_prefix)
                        && path.path.as_bytes().get(r.path_prefix.len()) == Some(&b'/')
                    || r.path_prefix.is_empty())
        });
        match rule {
            Some(r) => check(identity, &r.allowed_groups, &r.allowed_domains),
            None => Ok(()),
        }
    }
}

fn check(
    identity: &Identity,
    groups: &[String],
    domains: &[crate::config::DomainPattern],
) -> Result<(), Denied> {
    if !groups.is_empty()
        && !identity
            .groups
            .iter()
            .any(|g| groups.iter().any(|c| **c == **g))
    {
        return Err(Denied::Group(groups.to_vec()));
    }
    if !domains.is_empty() {
        let email = identity.email.as_deref().unwrap_or("");
        if !domains.iter().any(|d| d.matches_email(email)) {
            return Err(Denied::Domain);
        }
    }
    Ok(())
}

/// Whether `return_to` is a same-origin path we may redirect to; anything else becomes `/`.
/// Refuses scheme-relative (`//x`, `/\x`), encoded variants, control characters and schemes.
pub fn safe_return_path(candidate: &str) -> String {
    let ok = candidate.starts_with('/')
        && !candidate.starts_with("//")
        && !candidate.starts_with("/\\")
        && !candidate
            .chars()
            .any(|c| c.is_control() || c == '\\' || c == ' ')
        && {
            let lower = candidate.to_ascii_lowercase();
            // After decoding, the path must still not become scheme-relative.
            let decoded = percent_decode(&lower);
            !decoded.starts_with("//")
                && !decoded.starts_with("/\\")
                && !decoded.contains(['\\', '\t', '\n', '\r'])
        }
        && candidate.len() <= 2048;
    if ok {
        candidate.to_string()
    } else {
        "/".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_climbs_with_a_dot_dot_segment_in_any_spelling_only() {
        for raw in [
            "/..",
            "/a/../b",
            "/%2e%2e/b",
            "/%2E%2e/b",
            "/%252e%252e/b",
            "/a/..%5cb",
            "/a\\..\\b",
            "/..;x/b",
        ] {
            assert!(climbs(raw), "{raw}");
        }
        for raw in ["/", "/a/b", "/a/./b", "/a..b/c", "/...", "/a/%2e/b", "/..a"] {
            assert!(!climbs(raw), "{raw}");
        }
    }

    #[test]
    fn the_plain_path_shortcut_agrees_with_full_normalising() {
        let paths = [
            "",
            "/",
            "//",
            "/a",
            "/a/",
            "/a//",
            "/a//b",
            "/a/b/c",
            "/a/./b",
            "/a/../b",
            "/.",
            "/..",
            "/a/.",
            "/a/..",
            "/.a",
            "/..a/",
            "/a.b/c..d",
            "/a;x",
            "/a%2e",
            "/a%2F",
            "\\a",
            "/a\\b",
            "a",
            "a/b",
            "/public/x",
            "/public/../private",
            "/%",
            "/ü/ß",
            "/a/b/",
        ];
        for raw in paths {
            assert_eq!(normalize(raw), normalize_any(raw), "{raw:?}");
        }
        assert!(is_plain("/public/x") && is_plain("/") && is_plain("/a/b/"));
        assert!(!is_plain("/a//b") && !is_plain("/a/./b") && !is_plain("/a%20b"));
    }

    #[test]
    fn normalises_path_confusion() {
        for (raw, want) in [
            ("/%61dmin/x", "/admin/x"),
            ("//admin/x", "/admin/x"),
            ("/./admin/x", "/admin/x"),
            ("/static/../admin", "/admin"),
            ("/static/%2e%2e/admin", "/admin"),
            ("/static/%252e%252e/admin", "/admin"),
            ("/admin;x=1/x", "/admin/x"),
            ("/static\\..\\admin", "/admin"),
            ("/", "/"),
            ("", "/"),
            ("/a/b/", "/a/b/"),
        ] {
            assert_eq!(normalize(raw).path, want, "{raw}");
        }
        assert!(normalize("/static/app.js").canonical);
        assert!(!normalize("/static/../admin").canonical);
    }

    #[test]
    fn public_paths_never_widen() {
        let pats = vec![PathPattern::parse("/static/*").unwrap_or_else(|e| panic!("{e}"))];
        assert!(is_public(&pats, &normalize("/static/app.js")));
        assert!(is_public(&pats, &normalize("/static")));
        assert!(!is_public(&pats, &normalize("/static/../admin")));
        assert!(!is_public(&pats, &normalize("/static/%2e%2e/admin")));
        assert!(!is_public(&pats, &normalize("/static/%2fx")));
        assert!(!is_public(&pats, &normalize("/staticx")));
    }

    #[test]
    fn return_paths() {
        for bad in [
            "https://evil.test",
            "//evil.test",
            "///evil.test",
            "/\\evil.test",
            "/%5cevil.test",
            "http:evil.test",
            "javascript:alert(1)",
            "/%2f%2fevil.test",
            "\t//evil.test",
            "/\t/evil.test",
        ] {
            assert_eq!(safe_return_path(bad), "/", "{bad:?}");
        }
        assert_eq!(safe_return_path("/reports?x=1"), "/reports?x=1");
    }
}
