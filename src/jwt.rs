//! Jwt: the signed identity assertion (ES256, RFC 7519/7518) sent upstream next to the identity
//! headers, its signing key (from `headers.jwt.key_file` or generated at start-up) and the JWKS
//! (RFC 7517) that publishes every key a dashboard may meet during a rotation.
//!
//! Cost: a token is signed once per session and reused for half its lifetime (moka cache keyed
//! by the session fingerprint), so a reused token always has at least `ttl / 2` left. A reused
//! token keeps its `jti`: the `jti` names the token, not the request.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::JwtConfig;
use crate::identity::Identity;

/// Sessions whose token is kept at once; beyond it the least recently used are re-signed.
const CACHE_CAPACITY: u64 = 100_000;

/// Why a signing or verification key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("{key}: cannot read {}: {source}", path.display())]
    Read {
        /// The config key that names the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a PEM EC P-256 key of an accepted kind.
    #[error("{key}: {} is not {what}", path.display())]
    Parse {
        /// The config key that names the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What was expected.
        what: &'static str,
    },
    /// A key could not be generated (no system randomness).
    #[error("headers.jwt: could not generate a signing key")]
    Generate,
}

/// Why a token could not be signed.
#[derive(Debug, thiserror::Error)]
#[error("identity JWT signing failed: {0}")]
pub struct SignError(#[from] jsonwebtoken::errors::Error);

/// The claims of the identity JWT. `sub` is the user id the dashboard knows (the same value as
/// the user header); `sid` is the session fingerprint, never the session id.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    groups: &'a [std::sync::Arc<str>],
    #[serde(skip_serializing_if = "Option::is_none")]
    workspace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    permission_set: Option<&'a str>,
    sid: &'a str,
    jti: String,
    iat: u64,
    exp: u64,
}

/// One public key as a JWK (RFC 7517 §4, RFC 7518 §6.2).
#[derive(Serialize)]
struct Jwk {
    kty: &'static str,
    crv: &'static str,
    x: String,
    y: String,
    kid: String,
    #[serde(rename = "use")]
    use_: &'static str,
    alg: &'static str,
}

/// The identity-JWT signer, built once: the key, the pre-built JWT header, the JWKS document and
/// the per-session token cache.
pub struct Signer {
    header_name: HeaderName,
    key: EncodingKey,
    jwt_header: Header,
    kid: String,
    issuer: String,
    audience: String,
    ttl: Duration,
    jwks: Bytes,
    cache: moka::sync::Cache<String, HeaderValue>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Signer")
            .field("header", &self.header_name)
            .field("kid", &self.kid)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Loads (or generates) the signing key, reads the previous public keys and builds the JWKS.
    pub fn new(cfg: &JwtConfig) -> Result<Self, KeyError> {
        let (pkcs8, public) = match &cfg.key_file {
            Some(path) => load_private_key(path)?,
            None => generate_key()?,
        };
        let current = PublicKey::from_point(&public).ok_or(KeyError::Generate)?;
        let mut keys = vec![current.jwk()];
        for path in &cfg.previous_key_files {
            let previous = load_public_key(path)?;
            if previous.kid != current.kid && !keys.iter().any(|k| k.kid == previous.kid) {
                keys.push(previous.jwk());
            }
        }
        let jwks = serde_json::json!({ "keys": keys }).to_string();
        let mut jwt_header = Header::new(Algorithm::ES256);
        jwt_header.kid = Some(current.kid.clone());
        Ok(Self {
            header_name: cfg.header.clone(),
            key: EncodingKey::from_ec_der(&pkcs8),
            jwt_header,
            kid: current.kid,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            ttl: cfg.ttl,
            jwks: Bytes::from(jwks),
            cache: moka::sync::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(cfg.ttl / 2)
                .build(),
        })
    }

    /// The header that carries the token upstream.
    pub fn header_name(&self) -> &HeaderName {
        &self.header_name
    }

    /// The `kid` of the current signing key (its RFC 7638 thumbprint).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWKS document: the current key first, then the previous ones.
    pub fn jwks_json(&self) -> Bytes {
        self.jwks.clone()
    }

    /// The token for a session: reused while it has at least half its lifetime left, else
    /// signed afresh. `sid` is the session fingerprint.
    pub fn token(&self, sid: &str, identity: &Identity) -> Result<HeaderValue, SignError> {
        if let Some(v) = self.cache.get(sid) {
            return Ok(v);
        }
        let token = self.sign(sid, identity, SystemTime::now())?;
        // A compact JWS is base64url and dots only: always a valid header value.
        let value = HeaderValue::from_maybe_shared(Bytes::from(token))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        self.cache.insert(sid.to_string(), value.clone());
        Ok(value)
    }

    /// Signs a fresh token issued at `now` (no cache).
    pub fn sign(
        &self,
        sid: &str,
        identity: &Identity,
        now: SystemTime,
    ) -> Result<String, SignError> {
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = Claims {
            iss: &self.issuer,
            aud: &self.audience,
            sub: identity.upstream_user(),
            email: identity.email.as_deref(),
            name: identity.display_name(),
            groups: &identity.groups,
            workspace: identity.workspace.as_deref(),
            permission_set: identity.permission_set.as_deref(),
            sid,
            jti: format!("{:032x}", rand::random::<u128>()),
            iat,
            exp: iat + self.ttl.as_secs(),
        };
        Ok(jsonwebtoken::encode(&self.jwt_header, &claims, &self.key)?)
    }
}

/// An EC P-256 public key with its thumbprint.
struct PublicKey {
    x: String,
    y: String,
    kid: String,
}

impl PublicKey {
    /// From an uncompressed SEC1 point (`04 || x || y`, 65 bytes).
    fn from_point(point: &[u8]) -> Option<Self> {
        if point.len() != 65 || point[0] != 0x04 {
            return None;
        }
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let (x, y) = (b64(&point[1..33]), b64(&point[33..65]));
        // RFC 7638 §3.2: the required members in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = b64(&Sha256::digest(canonical.as_bytes()));
        Some(Self { x, y, kid })
    }

    fn jwk(&self) -> Jwk {
        Jwk {
            kty: "EC",
            crv: "P-256",
            x: self.x.clone(),
            y: self.y.clone(),
            kid: self.kid.clone(),
            use_: "sig",
            alg: "ES256",
        }
    }
}

fn generate_key() -> Result<(Vec<u8>, Vec<u8>), KeyError> {
    let rng = SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| KeyError::Generate)?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng)
        .map_err(|_| KeyError::Generate)?;
    Ok((doc.as_ref().to_vec(), pair.public_key().as_ref().to_vec()))
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

/// A PEM EC P-256 private key, PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`), as PKCS#8
/// DER (what ring signs with) and its public point.
fn load_private_key(path: &Path) -> Result<(Vec<u8>, Vec<u8>), KeyError> {
    const KEY: &str = "headers.jwt.key_file";
    let bad = || KeyError::Parse {
        key: KEY,
        path: path.to_path_buf(),
        what: "a PEM EC P-256 private key (PKCS#8 or SEC1)",
    };
    let pem = read(KEY, path)?;
    let pkey = openssl::pkey::PKey::private_key_from_pem(&pem).map_err(|_| bad())?;
    let ec = pkey.ec_key().map_err(|_| bad())?;
    if ec.group().curve_name() != Some(openssl::nid::Nid::X9_62_PRIME256V1) {
        return Err(bad());
    }
    let pkcs8 = pkey.private_key_to_pkcs8().map_err(|_| bad())?;
    let pair = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &pkcs8,
        &SystemRandom::new(),
    )
    .map_err(|_| bad())?;
    Ok((pkcs8, pair.public_key().as_ref().to_vec()))
}

/// A previous key for the JWKS: a PEM EC P-256 public key, or a private key whose public half
/// is published.
fn load_public_key(path: &Path) -> Result<PublicKey, KeyError> {
    const KEY: &str = "headers.jwt.previous_key_files";
    let bad = || KeyError::Parse {
        key: KEY,
        path: path.to_path_buf(),
        what: "a PEM EC P-256 public or private key",
    };
    let pem = read(KEY, path)?;
    let ec = match openssl::pkey::PKey::public_key_from_pem(&pem) {
        Ok(p) => p.ec_key(),
        Err(_) => openssl::pkey::PKey::private_key_from_pem(&pem)
            .and_then(|p| p.ec_key())
            .map(|k| {
                openssl::ec::EcKey::from_public_key(k.group(), k.public_key())
                    .unwrap_or_else(|_| unreachable!("a private key's public half is valid"))
            }),
    }
    .map_err(|_| bad())?;
    if ec.group().curve_name() != Some(openssl::nid::Nid::X9_62_PRIME256V1) {
        return Err(bad());
    }
    let mut ctx = openssl::bn::BigNumContext::new().map_err(|_| bad())?;
    let point = ec
        .public_key()
        .to_bytes(
            ec.group(),
            openssl::ec::PointConversionForm::UNCOMPRESSED,
            &mut ctx,
        )
        .map_err(|_| bad())?;
    PublicKey::from_point(&point).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(key_file: Option<PathBuf>, previous: Vec<PathBuf>) -> JwtConfig {
        JwtConfig {
            header: HeaderName::from_static("x-samlgate-jwt-assertion"),
            key_file,
            previous_key_files: previous,
            audience: "dashboard".into(),
            issuer: "https://dash.example.com".into(),
            ttl: Duration::from_secs(300),
        }
    }

    fn pem_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
            .unwrap_or_else(|e| panic!("{e}"));
        let ec = openssl::ec::EcKey::generate(&group).unwrap_or_else(|e| panic!("{e}"));
        let sec1 = dir.join("sec1.pem");
        std::fs::write(
            &sec1,
            ec.private_key_to_pem().unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let pkey = openssl::pkey::PKey::from_ec_key(ec).unwrap_or_else(|e| panic!("{e}"));
        let pkcs8 = dir.join("pkcs8.pem");
        std::fs::write(
            &pkcs8,
            pkey.private_key_to_pem_pkcs8()
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let public = dir.join("public.pem");
        std::fs::write(
            &public,
            pkey.public_key_to_pem().unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        (sec1, pkcs8, public)
    }

    #[test]
    fn loads_sec1_and_pkcs8_to_the_same_kid_and_publishes_previous_keys() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (sec1, pkcs8, public) = pem_files(dir.path());
        let a = Signer::new(&cfg(Some(sec1), vec![])).unwrap_or_else(|e| panic!("{e}"));
        let b = Signer::new(&cfg(Some(pkcs8), vec![])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.kid(), b.kid());
        assert_eq!(a.kid().len(), 43, "base64url SHA-256");
        let rotated =
            Signer::new(&cfg(None, vec![public.clone()])).unwrap_or_else(|e| panic!("{e}"));
        let jwks: serde_json::Value =
            serde_json::from_slice(&rotated.jwks_json()).unwrap_or_else(|e| panic!("{e}"));
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .map(|k| k.iter().filter_map(|k| k["kid"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(kids, vec![rotated.kid(), a.kid()]);
        // A public key is not a signing key.
        assert!(matches!(
            Signer::new(&cfg(Some(public), vec![])),
            Err(KeyError::Parse { .. })
        ));
    }

    #[test]
    fn token_is_cached_per_session() {
        let s = Signer::new(&cfg(None, vec![])).unwrap_or_else(|e| panic!("{e}"));
        let id = Identity {
            subject: "alice@example.com".into(),
            ..Identity::default()
        };
        let t1 = s.token("aaaa", &id).unwrap_or_else(|e| panic!("{e}"));
        let t2 = s.token("aaaa", &id).unwrap_or_else(|e| panic!("{e}"));
        let t3 = s.token("bbbb", &id).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t1, t2);
        assert_ne!(t1, t3);
    }
}
