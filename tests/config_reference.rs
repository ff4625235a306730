//! `config/samlgate.toml` is the config reference: every key the config accepts must be
//! documented there (with its default and meaning). The accepted keys are read from the config
//! itself (the "expected one of" list it gives for an unknown key), so a key added to the code
//! but not to the reference fails this test.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use samlgate::config::Config;

const BASE: &str = "[server]\npublic_url = \"http://127.0.0.1\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[saml]\nidp_metadata_file = \"config/idp-metadata.xml\"\n[session]\nsecret = \"0123456789abcdef0123456789abcdef\"\n";

/// The keys a section accepts, as the config's own error message lists them.
fn accepted_keys(section: &str) -> Vec<String> {
    let toml = if let Some(array) = section.strip_suffix("[]") {
        format!("{BASE}[[{array}]]\naaa_unknown = 1\n")
    } else if ["server", "upstream", "saml", "session"].contains(&section) {
        BASE.replacen(
            &format!("[{section}]\n"),
            &format!("[{section}]\naaa_unknown = 1\n"),
            1,
        )
    } else {
        format!("{BASE}[{section}]\naaa_unknown = 1\n")
    };
    let err = Config::from_toml_str(&toml, Path::new(env!("CARGO_MANIFEST_DIR")))
        .unwrap_err()
        .to_string();
    let list = err
        .split("expected one of: ")
        .nth(1)
        .unwrap_or_else(|| panic!("{section}: {err}"));
    let list = list.split(')').next().unwrap();
    list.split(", ")
        .map(|k| k.trim_matches('`').to_string())
        .collect()
}

#[test]
fn every_accepted_key_is_documented_in_the_reference() {
    let reference =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/samlgate.toml"))
            .unwrap();
    let mut checked = 0;
    let mut missing = Vec::new();
    for section in [
        "server",
        "server.tls",
        "upstream",
        "saml",
        "saml.attributes",
        "session",
        "provisioning",
        "provisioning.braze",
        "provisioning.rules[]",
        "headers",
        "headers.jwt",
        "access",
        "access.rules[]",
        "log",
    ] {
        let keys = accepted_keys(section);
        assert!(!keys.is_empty(), "{section}");
        for key in keys {
            let documented = reference.lines().any(|l| {
                let l = l.trim_start().trim_start_matches('#').trim_start();
                l.starts_with(&format!("{key} ="))
                    || l.starts_with(&format!("{key}="))
                    // a sub-table such as `[server.tls]` or `[[access.rules]]`
                    || (l.starts_with('[') && l.contains(&format!(".{key}]")))
            });
            if !documented {
                missing.push(format!("{section}.{key}"));
            }
            checked += 1;
        }
    }
    assert!(
        missing.is_empty(),
        "accepted but not documented in config/samlgate.toml: {missing:?}"
    );
    assert!(checked > 60, "only {checked} keys found");
}
