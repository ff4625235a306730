//! Interop with a SAML implementation no one here wrote: pysaml2 (PyPI) acts as the IdP. It
//! reads our live SP metadata, parses our AuthnRequest and issues a signed response, which the
//! running gateway must accept. Run by `scripts/saml-interop.sh` (part of `make test`), which
//! makes the venv and sets PYSAML2_PYTHON.
#![allow(clippy::unwrap_used)]

mod support;

use support::gateway::{self, Opts};
use support::sso::Browser;

fn python() -> String {
    std::env::var("PYSAML2_PYTHON").expect("PYSAML2_PYTHON is not set: run scripts/saml-interop.sh")
}

fn idp(args: &[&str]) -> String {
    let out = std::process::Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/pysaml2_idp.py"
        ))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pysaml2 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
#[ignore = "needs pysaml2: run scripts/saml-interop.sh"]
async fn pysaml2_idp_response_is_accepted() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path().to_str().unwrap();
    let meta_path = work.path().join("idp.xml");
    std::fs::write(&meta_path, idp(&["metadata", w])).unwrap();
    let dash = support::dashboard::Dashboard::start().await;
    let toml = gateway::toml(
        "{public_url}",
        &dash.url(),
        Opts {
            metadata: Some(meta_path.to_str().unwrap()),
            extra: "",
            saml: "[saml.attributes]\nemail = \"mail\"\nfirst_name = \"givenName\"\nlast_name = \"sn\"\ngroups = \"eduPersonAffiliation\"",
            ..Opts::default()
        },
    );
    let gw = gateway::start_toml(&toml).await;

    // pysaml2 learns about us from our live metadata endpoint.
    let (_, sp_meta) = gateway::get(&format!("{}/saml/metadata", gw.public_url), &[]).await;
    let sp_meta_path = work.path().join("sp.xml");
    std::fs::write(&sp_meta_path, &sp_meta).unwrap();

    let mut b = Browser::new();
    let start = b.start_login(&gw, "/interop").await;
    let location = start
        .location
        .replace("https://idp.test/sso", "https://pysaml2-idp.test/sso");
    let response = idp(&["respond", w, sp_meta_path.to_str().unwrap(), &location]);
    let (resp, body) = b.post_acs(&gw, response.trim(), &start.relay_state).await;
    assert_eq!(resp.status(), 303, "{}", String::from_utf8_lossy(&body));
    assert_eq!(resp.headers()["location"], "/interop");
    let (resp, _) = b.get(&format!("{}/interop", gw.public_url)).await;
    assert_eq!(resp.status(), 200);
    let seen = dash.last();
    assert_eq!(seen.headers["x-forwarded-user"], "interop@example.com");
    assert_eq!(seen.headers["x-forwarded-email"], "interop@example.com");
    assert_eq!(seen.headers["x-forwarded-name"], "Inter Operability");
    assert_eq!(seen.headers["x-forwarded-groups"], "staff,member");

    // pysaml2 signing with RSA-SHA1 (its historical default) is refused under the default
    // SHA-256-or-stronger policy (S3), and no session is made.
    let mut b = Browser::new();
    let start = b.start_login(&gw, "/").await;
    let location = start
        .location
        .replace("https://idp.test/sso", "https://pysaml2-idp.test/sso");
    let response = idp(&[
        "respond",
        w,
        sp_meta_path.to_str().unwrap(),
        &location,
        "sha1",
    ]);
    let (resp, _) = b.post_acs(&gw, response.trim(), &start.relay_state).await;
    assert_eq!(resp.status(), 403);
    assert!(!support::sso::sets_session(&resp));
}
