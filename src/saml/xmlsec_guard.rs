//! xmlsec guard: silences xmlsec's stderr error reporting (S12) and removes its network and
//! file I/O callbacks (S16), once per process, after xmlsec is initialised.
//!
//! This is the crate's only `unsafe` code: two calls into libxmlsec1 (already linked through
//! samael), which does not expose them. The callback does nothing at all: the ACS logs its
//! own single line per refused response instead of xmlsec's stderr chatter.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int};
use std::sync::Once;

use samael::crypto::{CertificateDer, Crypto, CryptoProvider};

type ErrorsCallback = unsafe extern "C" fn(
    file: *const c_char,
    line: c_int,
    func: *const c_char,
    error_object: *const c_char,
    error_subject: *const c_char,
    reason: c_int,
    msg: *const c_char,
);

unsafe extern "C" {
    /// xmlsec/errors.h: replaces the default callback that prints to stderr.
    fn xmlSecErrorsSetCallback(callback: Option<ErrorsCallback>);
    /// xmlsec/io.h: unregisters every I/O callback (http, ftp, file) xmlsec registered.
    fn xmlSecIOCleanupCallbacks();
}

static ONCE: Once = Once::new();

unsafe extern "C" fn ignore_error(
    _file: *const c_char,
    _line: c_int,
    _func: *const c_char,
    _error_object: *const c_char,
    _error_subject: *const c_char,
    _reason: c_int,
    _msg: *const c_char,
) {
}

/// Makes xmlsec quiet and I/O-free; idempotent, cheap after the first call.
pub fn install() {
    ONCE.call_once(|| {
        // SAFETY: sets a global function pointer; `ignore_error` has the C signature xmlsec
        // expects and touches nothing.
        unsafe { xmlSecErrorsSetCallback(Some(ignore_error)) };
        // samael initialises xmlsec lazily on first key use; do it now, so that the cleanup
        // below is not undone by a later xmlSecInit registering the default I/O callbacks
        // again. A throw-away certificate loads cleanly; the document has no signature, so
        // samael stops before xmlsec has anything to report.
        if let Some(cert) = throwaway_cert() {
            let _ = Crypto::verify_signed_xml("<x/>", &CertificateDer::from(cert), None);
        }
        // SAFETY: both are plain global-state calls made after xmlSecInit, before any
        // concurrent verification can run (we are inside Once).
        unsafe {
            xmlSecErrorsSetCallback(Some(ignore_error));
            xmlSecIOCleanupCallbacks();
        }
    });
}

/// A self-signed P-256 certificate (DER), made only to initialise xmlsec.
fn throwaway_cert() -> Option<Vec<u8>> {
    use openssl::{asn1::Asn1Time, ec, hash::MessageDigest, nid::Nid, pkey::PKey, x509};
    let group = ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).ok()?;
    let key = PKey::from_ec_key(ec::EcKey::generate(&group).ok()?).ok()?;
    let mut name = x509::X509NameBuilder::new().ok()?;
    name.append_entry_by_text("CN", "xmlsec-init").ok()?;
    let name = name.build();
    let mut b = x509::X509Builder::new().ok()?;
    b.set_subject_name(&name).ok()?;
    b.set_issuer_name(&name).ok()?;
    b.set_pubkey(&key).ok()?;
    let (from, until) = (
        Asn1Time::days_from_now(0).ok()?,
        Asn1Time::days_from_now(1).ok()?,
    );
    b.set_not_before(&from).ok()?;
    b.set_not_after(&until).ok()?;
    b.sign(&key, MessageDigest::sha256()).ok()?;
    b.build().to_der().ok()
}
