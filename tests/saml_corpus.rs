//! Runs every row of the shared SAML corpus (`../shared/saml-corpora/manifest.tsv`) through
//! `Saml::verify` with the row's settings, then again under the default policy.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use samlgate::config::SignatureAlgorithm;
use samlgate::saml::{IdpMetadata, Policy, Reduce, Saml, Verified};

fn corpus_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/saml-corpora");
    assert!(
        dir.join("manifest.tsv").is_file(),
        "the SAML corpus is missing: expected {} (clone the repo beside a copy of shared/)",
        dir.display()
    );
    dir
}

#[derive(Debug, Clone)]
struct Row {
    line: usize,
    file: String,
    accept: bool,
    identity: String,
    metadata: String,
    clock: DateTime<Utc>,
    sp_entity_id: String,
    acs_url: String,
    request_id: String,
    notes: String,
}

impl Row {
    fn needs(&self, what: &str) -> bool {
        self.notes.split("; ").any(|n| n.starts_with(what))
    }
    fn any_needs(&self) -> bool {
        self.notes.split("; ").any(|n| n.starts_with("needs "))
    }
    fn max_issue_age(&self) -> Option<u64> {
        let item = self
            .notes
            .split("; ")
            .find(|n| n.starts_with("needs max issue age >= "))?;
        item["needs max issue age >= ".len()..]
            .split(' ')
            .next()?
            .parse()
            .ok()
    }
    fn sp_key(&self) -> Option<String> {
        let item = self
            .notes
            .split("; ")
            .find(|n| n.starts_with("encrypted: needs SP key "))?;
        Some(item["encrypted: needs SP key ".len()..].to_string())
    }
    fn name(&self) -> String {
        format!("line {} {}", self.line, self.file)
    }
}

fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string(corpus_dir().join("manifest.tsv")).expect("manifest");
    let mut lines = text.lines().enumerate();
    let (_, header) = lines.next().expect("header");
    assert!(
        header.starts_with("corpus\tfile\texpected"),
        "unexpected manifest header"
    );
    lines
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 11, "line {}: {} fields", i + 1, f.len());
            Row {
                line: i + 1,
                file: f[1].into(),
                accept: match f[2] {
                    "accept" => true,
                    "reject" => false,
                    other => panic!("line {}: expected {other}", i + 1),
                },
                identity: f[3].into(),
                metadata: f[4].into(),
                clock: DateTime::parse_from_rfc3339(f[5])
                    .expect("clock")
                    .with_timezone(&Utc),
                sp_entity_id: f[6].into(),
                acs_url: f[7].into(),
                request_id: f[8].into(),
                notes: f[10].into(),
            }
        })
        .collect()
}

fn form_value(row: &Row) -> String {
    let bytes = std::fs::read(corpus_dir().join(&row.file)).expect("fixture");
    if row.needs("base64 (SAMLResponse form value)") || row.notes.starts_with("base64") {
        String::from_utf8(bytes).expect("base64 file")
    } else {
        STANDARD.encode(bytes)
    }
}

/// The row's configuration: with its relaxations (`relaxed`) or samlgate's default policy.
fn saml_for(row: &Row, relaxed: bool, reduce: Reduce) -> Saml {
    let dir = corpus_dir();
    let md = std::fs::read_to_string(dir.join(&row.metadata)).expect("metadata");
    let idp = IdpMetadata::parse(&md).expect("metadata parses");
    let mut policy = Policy::new(&row.sp_entity_id, &row.acs_url);
    policy.reduce = reduce;
    if relaxed {
        if row.needs("needs SHA-1 allowed") {
            policy.allowed_algorithms.push(SignatureAlgorithm::RsaSha1);
        }
        if let Some(age) = row.max_issue_age() {
            policy.max_issue_age = std::time::Duration::from_secs(age);
        }
        policy.require_audience = !row.needs("needs Audience optional");
        policy.allow_advice_assertions = row.needs("needs Advice assertions allowed");
        policy.allow_idp_initiated = row.request_id.is_empty();
    }
    let key = row
        .sp_key()
        .map(|p| std::fs::read(dir.join(p)).expect("sp key"));
    Saml::new(policy, idp, key.as_deref(), None).expect("saml")
}

fn run(row: &Row, relaxed: bool, reduce: Reduce) -> Result<Verified, samlgate::saml::Error> {
    let saml = saml_for(row, relaxed, reduce);
    let pending = (!row.request_id.is_empty()).then_some(row.request_id.as_str());
    saml.verify(&form_value(row), pending, row.clock)
}

fn check_rows(reduce: Reduce) {
    let mut failures = Vec::new();
    for row in rows() {
        let got = run(&row, true, reduce);
        match (&got, row.accept) {
            (Ok(v), true) if v.name_id.trim() == row.identity => {}
            (Ok(v), true) => failures.push(format!(
                "{}: accepted with NameID {:?}",
                row.name(),
                v.name_id
            )),
            (Err(e), true) => failures.push(format!("{}: expected accept, got {e:?}", row.name())),
            (Ok(v), false) => failures.push(format!(
                "{}: expected reject, accepted {:?}",
                row.name(),
                v.name_id
            )),
            (Err(e), false) => {
                // Each group's relaxations are on, so the rejection must come from the defect
                // under test, never from an unrelated protocol rule.
                use samlgate::saml::Error as E;
                let unrelated = matches!(
                    e,
                    E::Issuer
                        | E::Audience
                        | E::MissingConditions
                        | E::Expired
                        | E::NotYetValid
                        | E::IssuedTooLongAgo
                        | E::IssuedInFuture
                        | E::InResponseTo
                        | E::Unsolicited
                        | E::Destination
                        | E::Recipient
                );
                if unrelated {
                    failures.push(format!(
                        "{}: rejected for an unrelated reason: {e:?}",
                        row.name()
                    ));
                }
                eprintln!("{}: rejected: {e:?}", row.name());
            }
        }
        if let Ok(v) = &got {
            assert_ne!(v.name_id, "admin@evil.com");
        }
    }
    assert!(
        failures.is_empty(),
        "{} corpus rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_row_with_its_settings() {
    check_rows(Reduce::PreDigest);
}

#[test]
fn every_row_with_its_settings_marked_reduction() {
    check_rows(Reduce::Marked);
}

#[test]
fn rows_needing_relaxations_are_rejected_by_default() {
    let mut failures = Vec::new();
    let mut default_accepts = Vec::new();
    for row in rows() {
        let got = run(&row, false, Reduce::PreDigest);
        let must_reject = !row.accept || row.any_needs();
        match got {
            Ok(v) if must_reject => failures.push(format!(
                "{}: accepted {:?} under the default policy",
                row.name(),
                v.name_id
            )),
            Ok(_) => default_accepts.push(row.file.clone()),
            Err(e) if !must_reject => failures.push(format!(
                "{}: default policy rejected a clean row: {e:?}",
                row.name()
            )),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The README names exactly two rows that pass without any relaxation.
    default_accepts.sort();
    assert_eq!(
        default_accepts,
        vec![
            "crewjam-saml/testdata/SP_SamlResponse".to_string(),
            "crewjam-saml/testdata/TestSPRejectsInjectedComment_response".to_string()
        ]
    );
}

#[test]
fn sha1_rows_are_rejected_without_sha1() {
    for row in rows()
        .into_iter()
        .filter(|r| r.needs("needs SHA-1 allowed"))
    {
        // Every other relaxation of the row stays on: only SHA-1 is taken away.
        let dir = corpus_dir();
        let md = std::fs::read_to_string(dir.join(&row.metadata)).expect("metadata");
        let saml_relaxed = saml_for(&row, true, Reduce::PreDigest);
        let mut policy = saml_relaxed.policy().clone();
        policy
            .allowed_algorithms
            .retain(|a| *a != SignatureAlgorithm::RsaSha1);
        let key = row
            .sp_key()
            .map(|p| std::fs::read(dir.join(p)).expect("sp key"));
        let saml = Saml::new(
            policy,
            IdpMetadata::parse(&md).expect("md"),
            key.as_deref(),
            None,
        )
        .expect("saml");
        let pending = (!row.request_id.is_empty()).then_some(row.request_id.as_str());
        let got = saml.verify(&form_value(&row), pending, row.clock);
        assert!(got.is_err(), "{}: accepted without SHA-1", row.name());
    }
}

#[test]
fn corpus_identities_and_attributes() {
    let rows = rows();
    let google = rows
        .iter()
        .find(|r| {
            r.file
                .ends_with("testdata/TestSPRejectsInjectedComment_response")
        })
        .expect("row");
    let v = run(google, false, Reduce::PreDigest).expect("google accepted");
    assert_eq!(v.identity.email.as_deref(), Some("ross@octolabs.io"));

    let shib = rows
        .iter()
        .find(|r| r.file.ends_with("SP_SamlResponse"))
        .expect("row");
    let v = run(shib, false, Reduce::PreDigest).expect("testshib accepted");
    let eppn = v
        .attributes
        .iter()
        .find(|a| a.friendly_name.as_deref() == Some("eduPersonPrincipalName"))
        .expect("eppn");
    assert_eq!(eppn.values, vec!["myself@testshib.org".to_string()]);
    assert!(v.session_index.is_some());
}
