//! Decrypt: opens an `saml:EncryptedAssertion` (SAML core §2.3.4, XML Encryption 1.0/1.1) with
//! the SP key, ourselves, with openssl: samael's helpers index the ciphertext without bounds
//! checks and verify before they decrypt (S10). Every failure is the same `Undecryptable`, so
//! that no error distinguishes bad padding from a bad key (no padding oracle).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Padding;
use openssl::symm::{Cipher, Crypter, Mode};
use roxmltree::Node;

use super::harden::{NS_DS, NS_XENC};

const AES128_CBC: &str = "http://www.w3.org/2001/04/xmlenc#aes128-cbc";
const AES256_CBC: &str = "http://www.w3.org/2001/04/xmlenc#aes256-cbc";
const AES128_GCM: &str = "http://www.w3.org/2009/xmlenc11#aes128-gcm";
const AES256_GCM: &str = "http://www.w3.org/2009/xmlenc11#aes256-gcm";
const RSA_OAEP_MGF1P: &str = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p";
const SHA1: &str = "http://www.w3.org/2000/09/xmldsig#sha1";

/// Block encryption algorithms we decrypt (advertised in our SP metadata).
pub const CONTENT_ALGORITHMS: &[&str] = &[AES128_GCM, AES256_GCM, AES128_CBC, AES256_CBC];
/// Key transport algorithms we decrypt. RSA PKCS#1 v1.5 (`rsa-1_5`) is refused: it is the
/// classic Bleichenbacher padding oracle.
pub const KEY_TRANSPORT_ALGORITHMS: &[&str] = &[RSA_OAEP_MGF1P];

/// The one error every decryption failure maps to.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the encrypted assertion could not be decrypted")]
pub struct Undecryptable;

use super::harden::is;

fn cipher_value(n: Node<'_, '_>) -> Result<Vec<u8>, Undecryptable> {
    let cv = n
        .children()
        .find(|c| is(*c, NS_XENC, "CipherData"))
        .and_then(|cd| cd.children().find(|c| is(*c, NS_XENC, "CipherValue")))
        .ok_or(Undecryptable)?;
    let b64: String = cv
        .text()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD.decode(b64).map_err(|_| Undecryptable)
}

fn algorithm<'a, 'i>(n: Node<'a, 'i>) -> Option<Node<'a, 'i>> {
    n.children().find(|c| is(*c, NS_XENC, "EncryptionMethod"))
}

/// Unwraps one EncryptedKey with the SP key; `None` when it is not ours or not allowed.
fn unwrap_key(ek: Node<'_, '_>, key: &PKey<Private>) -> Option<Vec<u8>> {
    let method = algorithm(ek)?;
    if method.attribute("Algorithm") != Some(RSA_OAEP_MGF1P) {
        return None;
    }
    // rsa-oaep-mgf1p: the OAEP digest is SHA-1 unless a DigestMethod says otherwise; we only do SHA-1.
    if let Some(dm) = method.children().find(|c| is(*c, NS_DS, "DigestMethod"))
        && dm.attribute("Algorithm") != Some(SHA1)
    {
        return None;
    }
    let wrapped = cipher_value(ek).ok()?;
    let rsa = key.rsa().ok()?;
    let mut out = vec![0u8; usize::try_from(rsa.size()).ok()?];
    let n = rsa
        .private_decrypt(&wrapped, &mut out, Padding::PKCS1_OAEP)
        .ok()?;
    out.truncate(n);
    Some(out)
}

/// Decrypts an encrypted SAML element `enc` (EncryptedAssertion, EncryptedID: SAML core
/// §2.2.4, §2.3.4) and returns the plaintext XML of the element it hides.
pub fn decrypt_element(enc: Node<'_, '_>, key: &PKey<Private>) -> Result<String, Undecryptable> {
    let data = enc
        .children()
        .find(|c| is(*c, NS_XENC, "EncryptedData"))
        .ok_or(Undecryptable)?;
    let content_alg = algorithm(data)
        .and_then(|m| m.attribute("Algorithm"))
        .ok_or(Undecryptable)?;
    let (cipher, gcm) = match content_alg {
        AES128_CBC => (Cipher::aes_128_cbc(), false),
        AES256_CBC => (Cipher::aes_256_cbc(), false),
        AES128_GCM => (Cipher::aes_128_gcm(), true),
        AES256_GCM => (Cipher::aes_256_gcm(), true),
        _ => return Err(Undecryptable),
    };
    // The EncryptedKey sits in EncryptedData/KeyInfo or, per SAML core §2.3.4, beside the
    // EncryptedData (then referenced by a RetrievalMethod we need not follow: we try each).
    let session_key = enc
        .descendants()
        .filter(|n| is(*n, NS_XENC, "EncryptedKey"))
        .find_map(|ek| unwrap_key(ek, key))
        .ok_or(Undecryptable)?;
    if session_key.len() != cipher.key_len() {
        return Err(Undecryptable);
    }
    let blob = cipher_value(data)?;
    let plaintext = if gcm {
        // XML Encryption 1.1 §5.2.4: 96-bit IV, then ciphertext, then a 128-bit tag.
        if blob.len() < 12 + 16 {
            return Err(Undecryptable);
        }
        let (iv, rest) = blob.split_at(12);
        let (ct, tag) = rest.split_at(rest.len() - 16);
        let mut c = Crypter::new(cipher, Mode::Decrypt, &session_key, Some(iv))
            .map_err(|_| Undecryptable)?;
        c.pad(false);
        c.set_tag(tag).map_err(|_| Undecryptable)?;
        let mut out = vec![0u8; ct.len() + cipher.block_size()];
        let n = c.update(ct, &mut out).map_err(|_| Undecryptable)?;
        let m = c.finalize(&mut out[n..]).map_err(|_| Undecryptable)?;
        out.truncate(n + m);
        out
    } else {
        // XML Encryption 1.0 §5.2.1: IV then ciphertext; the last byte counts the padding
        // bytes, whose other values are arbitrary (so not PKCS#7-strict).
        let bs = cipher.block_size();
        if blob.len() < 2 * bs || blob.len() % bs != 0 {
            return Err(Undecryptable);
        }
        let (iv, ct) = blob.split_at(bs);
        let mut c = Crypter::new(cipher, Mode::Decrypt, &session_key, Some(iv))
            .map_err(|_| Undecryptable)?;
        c.pad(false);
        let mut out = vec![0u8; ct.len() + bs];
        let n = c.update(ct, &mut out).map_err(|_| Undecryptable)?;
        let m = c.finalize(&mut out[n..]).map_err(|_| Undecryptable)?;
        out.truncate(n + m);
        let pad = usize::from(*out.last().ok_or(Undecryptable)?);
        if pad == 0 || pad > bs || pad > out.len() {
            return Err(Undecryptable);
        }
        out.truncate(out.len() - pad);
        out
    };
    String::from_utf8(plaintext).map_err(|_| Undecryptable)
}
