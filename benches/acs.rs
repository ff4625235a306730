//! ACS verification cost: a ~4 KB signed response, and one with 1,000 group values, under both
//! reduce modes (S13).

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use samlgate::demo::signer::{
    DEFAULT_ACS_URL, DEFAULT_REQUEST_ID, DEFAULT_SP_ENTITY_ID, ResponseSpec, TestIdp, to_form_value,
};
use samlgate::saml::{IdpMetadata, Policy, Reduce, Saml};

fn acs(c: &mut Criterion) {
    let idp = TestIdp::generate("https://idp.example.com/metadata").expect("idp");
    let md = IdpMetadata::parse(
        &idp.metadata_xml("https://idp.example.com/sso", None)
            .expect("md"),
    )
    .expect("md");
    let now = Utc::now();
    let small = ResponseSpec::at(now);
    let groups: Vec<String> = (0..1000)
        .map(|i| format!("dashboard-group-{i:04}"))
        .collect();
    let mut large = ResponseSpec::at(now);
    large.attributes.retain(|(n, _)| n != "groups");
    large.attributes.push(("groups".into(), groups));
    for (name, spec) in [("4k", &small), ("1000_groups", &large)] {
        let form = to_form_value(&idp.response_xml(spec).expect("sign"));
        let xml = idp.response_xml(spec).expect("sign");
        let limits = samlgate::saml::harden::Limits::default();
        let algorithms = [samlgate::config::SignatureAlgorithm::RsaSha256];
        let sp = samlgate::saml::harden::StructurePolicy {
            allow_advice_assertions: false,
            algorithms: &algorithms,
            limits: &limits,
        };
        c.bench_function(&format!("harden_only_{name}"), |b| {
            b.iter(|| samlgate::saml::harden::inspect(black_box(&xml), &sp).expect("ok"))
        });
        for (mode_name, mode) in [("predigest", Reduce::PreDigest), ("marked", Reduce::Marked)] {
            let mut policy = Policy::new(DEFAULT_SP_ENTITY_ID, DEFAULT_ACS_URL);
            policy.reduce = mode;
            let saml = Saml::new(policy, md.clone(), None, None).expect("saml");
            saml.verify(&form, Some(DEFAULT_REQUEST_ID), now)
                .expect("valid");
            c.bench_function(
                &format!("verify_{name}_{}B_{mode_name}", form.len() * 3 / 4),
                |b| {
                    b.iter(|| {
                        saml.verify(black_box(&form), Some(DEFAULT_REQUEST_ID), now)
                            .expect("valid")
                    })
                },
            );
        }
    }
}

criterion_group!(benches, acs);
criterion_main!(benches);
