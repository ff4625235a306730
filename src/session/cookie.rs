//! The session cookie: a random 256-bit session id followed by its HMAC-SHA256 tag, and the
//! `Set-Cookie` lines that carry it.
//!
//! The value is `base64url(id || HMAC-SHA256(key, LABEL || id))` (64 bytes, 86 characters,
//! unpadded), where `key = HMAC-SHA256(secret, KEY_LABEL || SP entity ID)`. The tag is
//! checked, in constant time, before the store is ever asked, so a forged, garbled or
//! truncated cookie costs one HMAC and never a store lookup.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use http::HeaderValue;
use sha2::Sha256;

use crate::config::Secret;

/// Bytes of a session id.
pub(crate) const ID_LEN: usize = 32;
/// Bytes of the HMAC-SHA256 tag.
const TAG_LEN: usize = 32;
/// Characters of an encoded cookie value: base64url, unpadded, of `ID_LEN + TAG_LEN` bytes.
const ENCODED_LEN: usize = (ID_LEN + TAG_LEN) * 4 / 3 + 1;
/// Domain separation: a tag made for another purpose with the same secret never verifies here.
const LABEL: &[u8] = b"samlgate session cookie v1\0";
/// Domain separation of the tag key derived from a secret and the audience.
const KEY_LABEL: &[u8] = b"samlgate session cookie key v2\0";

/// HMAC-SHA256 keyed with `key` (any length is a valid HMAC key).
fn hmac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}
/// At most this many cookies with our name are examined per request (cookie tossing from a
/// sibling domain can add more; we do not let that multiply the work).
const MAX_CANDIDATES: usize = 4;

/// Signs and verifies session cookie values and writes the `Set-Cookie` header values.
#[derive(Clone)]
pub(crate) struct CookieCodec {
    name: String,
    secure: bool,
    /// Keyed once at start-up; `[0]` (the current secret) signs, all verify.
    keys: Vec<Hmac<Sha256>>,
}

impl std::fmt::Debug for CookieCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieCodec")
            .field("name", &self.name)
            .field("secure", &self.secure)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl CookieCodec {
    /// `secret` signs; `previous` only verify. Each tag key is derived from a secret and the
    /// `audience` (the SP entity ID), so that a deployment sharing the secret (and a Redis)
    /// with another cannot be entered with the other's cookies. On https the name gets the
    /// `__Host-` prefix (RFC 6265bis §4.1.3.2: Secure, Path=/, no Domain) and the cookie is
    /// `Secure`.
    pub(crate) fn new(
        name: &str,
        secret: &Secret,
        previous: &[Secret],
        audience: &str,
        https: bool,
    ) -> Self {
        let keys = std::iter::once(secret)
            .chain(previous)
            .map(|s| {
                let mut derive = hmac(s.expose().as_bytes());
                derive.update(KEY_LABEL);
                derive.update(audience.as_bytes());
                hmac(&derive.finalize().into_bytes())
            })
            .collect();
        let name = if https {
            format!("__Host-{name}")
        } else {
            name.to_string()
        };
        Self {
            name,
            secure: https,
            keys,
        }
    }

    /// The cookie name as browsers see it.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn tag(key: &Hmac<Sha256>, id: &[u8; ID_LEN]) -> Hmac<Sha256> {
        let mut mac = key.clone();
        mac.update(LABEL);
        mac.update(id);
        mac
    }

    /// The cookie value for `id`, signed with the current secret.
    pub(crate) fn sign(&self, id: &[u8; ID_LEN]) -> String {
        let mut raw = [0u8; ID_LEN + TAG_LEN];
        raw[..ID_LEN].copy_from_slice(id);
        if let Some(key) = self.keys.first() {
            raw[ID_LEN..].copy_from_slice(&Self::tag(key, id).finalize().into_bytes());
        }
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The session id in `value` when its tag verifies under any configured secret.
    pub(crate) fn verify(&self, value: &[u8]) -> Option<[u8; ID_LEN]> {
        if value.len() != ENCODED_LEN {
            return None;
        }
        let mut raw = [0u8; ID_LEN + TAG_LEN + 2];
        // Canonical decoding only: non-zero trailing bits are refused by the engine.
        let n = URL_SAFE_NO_PAD.decode_slice(value, &mut raw).ok()?;
        if n != ID_LEN + TAG_LEN {
            return None;
        }
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&raw[..ID_LEN]);
        let tag = &raw[ID_LEN..ID_LEN + TAG_LEN];
        // `verify_slice` compares in constant time (subtle).
        self.keys
            .iter()
            .any(|key| Self::tag(key, &id).verify_slice(tag).is_ok())
            .then_some(id)
    }

    /// Every session id carried by a cookie of ours whose tag verifies, across all `Cookie`
    /// headers (HTTP/2 may split them), at most [`MAX_CANDIDATES`] values examined.
    pub(crate) fn verified_ids(&self, headers: &http::HeaderMap) -> Vec<[u8; ID_LEN]> {
        let mut out = Vec::new();
        let mut examined = 0;
        for header in headers.get_all(http::header::COOKIE) {
            for pair in header.as_bytes().split(|&b| b == b';') {
                let pair = pair.trim_ascii();
                let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                    continue;
                };
                if &pair[..eq] != self.name.as_bytes() {
                    continue;
                }
                examined += 1;
                if examined > MAX_CANDIDATES {
                    return out;
                }
                let mut value = pair[eq + 1..].trim_ascii();
                // RFC 6265 §4.1.1 allows a DQUOTE-wrapped value.
                if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
                    value = &value[1..value.len() - 1];
                }
                if let Some(id) = self.verify(value)
                    && !out.contains(&id)
                {
                    out.push(id);
                }
            }
        }
        out
    }

    fn attributes(&self) -> &'static str {
        if self.secure {
            "; Path=/; HttpOnly; SameSite=Lax; Secure"
        } else {
            "; Path=/; HttpOnly; SameSite=Lax"
        }
    }

    /// `Set-Cookie` for a new session that the browser keeps for `max_age` seconds.
    pub(crate) fn set_cookie(&self, id: &[u8; ID_LEN], max_age_secs: u64) -> HeaderValue {
        let value = format!(
            "{}={}; Max-Age={max_age_secs}{}",
            self.name,
            self.sign(id),
            self.attributes()
        );
        // Name, base64url value and fixed attributes are all visible ASCII.
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// `Set-Cookie` that removes the session cookie from the browser.
    pub(crate) fn removal(&self) -> HeaderValue {
        let value = format!("{}=; Max-Age=0{}", self.name, self.attributes());
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}
