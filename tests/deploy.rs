//! `deploy/`: every Kubernetes manifest parses as YAML, every `samlgate.toml` a manifest embeds
//! passes `samlgate check`, and the Secret keys and probes the manifests rely on line up.
//!
//! The Helm chart cannot be rendered here (`helm` is not packaged in Debian bookworm), so its
//! config template is kept trivial — `{{ .Values.config | toToml }}` — and this test renders
//! that one template itself: values.yaml's `config` (alone, and merged with each file in the
//! chart's `examples/`, with Helm's "null deletes a key" rule) written out as TOML, then checked.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

fn load(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).unwrap();
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

/// Points every `*_file` key at a stub file in `dir` (the IdP metadata at a real metadata
/// document) and returns the config text plus the original paths.
fn stub_files(toml: &str, dir: &Path) -> (String, Vec<String>) {
    let re = regex::Regex::new(r#"(?m)^(\s*)([a-z_]+_file)\s*=\s*["']([^"']*)["']"#).unwrap();
    let mut originals = Vec::new();
    let out = re.replace_all(toml, |c: &regex::Captures<'_>| {
        let key = &c[2];
        originals.push(c[3].to_string());
        let stub = dir.join(key);
        match key {
            "idp_metadata_file" => {
                std::fs::copy(root().join("config/idp-metadata.xml"), &stub).unwrap();
            }
            "secret_file" | "previous_secrets_file" => {
                std::fs::write(&stub, "0123456789abcdef0123456789abcdef0123456789\n").unwrap();
            }
            "token_file" => std::fs::write(&stub, "scim-token\n").unwrap(),
            "redis_url_file" => std::fs::write(&stub, "redis://127.0.0.1:6379/0\n").unwrap(),
            // `[headers.jwt] key_file`: an EC P-256 key in PKCS#8 PEM.
            "key_file" => {
                use openssl::{ec, nid::Nid, pkey::PKey};
                let group = ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
                let key = PKey::from_ec_key(ec::EcKey::generate(&group).unwrap()).unwrap();
                std::fs::write(&stub, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
            }
            other => panic!("no stub for {other}: teach tests/deploy.rs"),
        }
        format!("{}{key} = \"{}\"", &c[1], stub.display())
    });
    (out.into_owned(), originals)
}

/// Runs `samlgate check` on `toml` (files stubbed) and expects `config ok`.
fn expect_config_ok(toml: &str, what: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let (text, originals) = stub_files(toml, dir.path());
    let path = dir.path().join("samlgate.toml");
    std::fs::write(&path, &text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_samlgate"));
    cmd.args(["check", "--config"]).arg(&path);
    for (k, _) in std::env::vars() {
        if k.starts_with("SAMLGATE_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("config ok"),
        "{what}: samlgate check failed ({}):\n{}{}\n--- config ---\n{text}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    originals
}

#[test]
fn every_manifest_parses_and_every_embedded_config_passes_check() {
    let mut files = Vec::new();
    yaml_files(&root().join("deploy/kubernetes"), &mut files);
    assert!(files.len() >= 4, "manifests missing: {files:?}");
    let mut configs = 0;
    for dir in ["deploy/kubernetes/sidecar", "deploy/kubernetes/replicas"] {
        let mut docs = Vec::new();
        let mut in_dir = Vec::new();
        yaml_files(&root().join(dir), &mut in_dir);
        for f in &in_dir {
            for doc in load(f) {
                for key in ["apiVersion", "kind"] {
                    assert!(doc[key].as_str().is_some(), "{}: no {key}", f.display());
                }
                assert!(
                    doc["metadata"]["name"].as_str().is_some(),
                    "{}: no metadata.name",
                    f.display()
                );
                docs.push(doc);
            }
        }
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        for want in ["ConfigMap", "Secret", "Deployment", "Service"] {
            assert!(kinds.contains(&want), "{dir}: no {want}");
        }
        let secret_keys: Vec<String> = docs
            .iter()
            .filter(|d| d["kind"].as_str() == Some("Secret"))
            .filter_map(|d| d["stringData"].as_hash())
            .flat_map(|h| h.keys().filter_map(|k| k.as_str().map(str::to_string)))
            .collect();
        for doc in docs
            .iter()
            .filter(|d| d["kind"].as_str() == Some("ConfigMap"))
        {
            let Some(data) = doc["data"].as_hash() else {
                continue;
            };
            for (k, v) in data {
                let key = k.as_str().unwrap();
                if !key.ends_with(".toml") {
                    continue;
                }
                let what = format!("{dir} ConfigMap {key}");
                let files = expect_config_ok(v.as_str().unwrap(), &what);
                configs += 1;
                // Every secret file the config names is a key of the Secret mounted there.
                for f in files
                    .iter()
                    .filter_map(|f| f.strip_prefix("/etc/samlgate/secrets/"))
                {
                    assert!(
                        secret_keys.iter().any(|k| k == f),
                        "{what}: names secret file {f}, which no Secret holds ({secret_keys:?})"
                    );
                }
            }
        }
        // samlgate's probes: /healthz and /readyz on the admin port.
        let samlgate = docs
            .iter()
            .filter(|d| d["kind"].as_str() == Some("Deployment"))
            .filter_map(|d| d["spec"]["template"]["spec"]["containers"].as_vec())
            .flatten()
            .find(|c| c["name"].as_str() == Some("samlgate"))
            .unwrap_or_else(|| panic!("{dir}: no samlgate container"));
        assert_eq!(
            samlgate["livenessProbe"]["httpGet"]["path"].as_str(),
            Some("/healthz")
        );
        assert_eq!(
            samlgate["readinessProbe"]["httpGet"]["path"].as_str(),
            Some("/readyz")
        );
        assert_eq!(
            samlgate["readinessProbe"]["httpGet"]["port"].as_str(),
            Some("admin")
        );
    }
    assert_eq!(
        configs, 2,
        "one samlgate.toml each in sidecar/ and replicas/"
    );

    // The sidecar Deployment runs the dashboard next to samlgate; the replicas run three.
    let sidecar = load(&root().join("deploy/kubernetes/sidecar/deployment.yaml"));
    let names: Vec<&str> = sidecar[0]["spec"]["template"]["spec"]["containers"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["dashboard", "samlgate"]);
    let replicas = load(&root().join("deploy/kubernetes/replicas/samlgate.yaml"));
    let dep = replicas
        .iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .unwrap();
    assert_eq!(dep["spec"]["replicas"].as_i64(), Some(3));
    let redis = load(&root().join("deploy/kubernetes/replicas/redis.yaml"));
    let kinds: Vec<&str> = redis.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["Deployment", "Service", "Secret", "NetworkPolicy"]);
}

/// Helm's toToml over values: maps become tables, `null` values are dropped. Numbers are
/// refused: Helm reads them as floats, and toToml would write `262144.0`.
/// The ingress and forward-auth recipes embed samlgate configs too (ConfigMaps with a
/// `*.toml` key): each passes `check`.
#[test]
fn recipe_configs_pass_check() {
    let mut files = Vec::new();
    for dir in ["deploy/ingress", "deploy/forward-auth"] {
        yaml_files(&root().join(dir), &mut files);
    }
    let mut configs = 0;
    for f in &files {
        for doc in load(f) {
            if doc["kind"].as_str() != Some("ConfigMap") {
                continue;
            }
            for (k, v) in doc["data"].as_hash().into_iter().flatten() {
                let key = k.as_str().unwrap();
                if key.ends_with(".toml") {
                    expect_config_ok(v.as_str().unwrap(), &format!("{} {key}", f.display()));
                    configs += 1;
                }
            }
        }
    }
    assert!(configs >= 1, "no samlgate config found in {files:?}");
}

fn to_toml(y: &Yaml, key: &str) -> Option<toml::Value> {
    Some(match y {
        Yaml::Null => return None,
        Yaml::String(s) => toml::Value::String(s.clone()),
        Yaml::Boolean(b) => toml::Value::Boolean(*b),
        Yaml::Array(a) => toml::Value::Array(a.iter().filter_map(|v| to_toml(v, key)).collect()),
        Yaml::Hash(h) => {
            let mut t = toml::map::Map::new();
            for (k, v) in h {
                let k = k
                    .as_str()
                    .unwrap_or_else(|| panic!("{key}: non-string key"));
                if let Some(v) = to_toml(v, &format!("{key}.{k}")) {
                    t.insert(k.to_string(), v);
                }
            }
            toml::Value::Table(t)
        }
        other => panic!(
            "{key}: {other:?} in the chart's config: Helm would write numbers as floats; \
             set numeric keys through `env` (SAMLGATE_SECTION__KEY)"
        ),
    })
}

/// Helm's values merge: maps merge key by key, `null` deletes a key, anything else replaces.
fn merge(base: &mut Yaml, over: &Yaml) {
    match (base, over) {
        (Yaml::Hash(b), Yaml::Hash(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(k);
                } else if let Some(slot) = b.get_mut(k) {
                    merge(slot, v);
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

#[test]
fn helm_chart_config_renders_to_a_config_that_passes_check() {
    let chart = root().join("deploy/helm/samlgate");
    let meta = load(&chart.join("Chart.yaml"));
    assert_eq!(meta[0]["name"].as_str(), Some("samlgate"));
    assert_eq!(meta[0]["apiVersion"].as_str(), Some("v2"));

    // The one template this test renders must be exactly the one Helm renders.
    let template = std::fs::read_to_string(chart.join("templates/configmap.yaml")).unwrap();
    assert!(
        template.contains("samlgate.toml: |\n    {{- .Values.config | toToml | nindent 4 }}"),
        "templates/configmap.yaml no longer renders .Values.config with toToml:\n{template}"
    );

    let values = load(&chart.join("values.yaml")).remove(0);
    for section in [
        "server",
        "upstream",
        "saml",
        "session",
        "provisioning",
        "headers",
        "access",
        "log",
    ] {
        assert!(
            values["config"][section].as_hash().is_some(),
            "values.yaml has no config.{section}"
        );
    }
    for mode in ["sidecar", "standalone"] {
        assert!(
            std::fs::read_to_string(chart.join("values.yaml"))
                .unwrap()
                .contains(mode),
            "values.yaml does not describe mode {mode}"
        );
    }
    let render =
        |values: &Yaml| toml::to_string(&to_toml(&values["config"], "config").unwrap()).unwrap();
    let files = expect_config_ok(&render(&values), "helm values.yaml");
    let mount = values["secrets"]["mountPath"].as_str().unwrap();
    assert!(files.iter().any(|f| f.starts_with(mount)));

    let mut examples = Vec::new();
    yaml_files(&chart.join("examples"), &mut examples);
    assert!(!examples.is_empty(), "no example values");
    for ex in examples {
        let mut merged = values.clone();
        merge(&mut merged, &load(&ex).remove(0));
        let toml = render(&merged);
        expect_config_ok(&toml, &ex.display().to_string());
        if merged["replicaCount"].as_i64().unwrap_or(1) > 1 {
            assert!(
                toml.contains("store = \"redis\""),
                "{}: several replicas need the redis store",
                ex.display()
            );
        }
    }
}

#[test]
fn dockerfile_builds_in_two_stages_and_runs_unprivileged() {
    let text = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    for want in [
        "FROM rust:1-bookworm AS build",
        "libxmlsec1-dev libclang1-14 libclang-common-14-dev",
        "FROM debian:bookworm-slim",
        "libxmlsec1 libxmlsec1-openssl libxml2 ca-certificates",
        "USER 10001:10001",
        "EXPOSE 8080 9090",
        "ENTRYPOINT [\"samlgate\", \"serve\"]",
    ] {
        assert!(text.contains(want), "deploy/Dockerfile lacks `{want}`");
    }
}

/// The full-proxy nginx recipe is a valid nginx config (`nginx -t`, with a throwaway
/// certificate in place of the example's): directives the installed nginx does not know, or
/// buffer sizes it refuses, fail here rather than at an operator's reload.
#[test]
fn the_full_proxy_nginx_recipe_passes_nginx_t() {
    use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509::X509};
    let dir = tempfile::tempdir().unwrap();
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut cert = X509::builder().unwrap();
    cert.set_pubkey(&key).unwrap();
    cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    cert.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    cert.sign(&key, MessageDigest::sha256()).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.build().to_pem().unwrap()).unwrap();
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let recipe =
        std::fs::read_to_string(root().join("deploy/ingress/nginx-full-proxy.conf")).unwrap();
    let cert_re = regex::Regex::new(r"(?m)^(\s*ssl_certificate(_key)?)\s+[^;]+;").unwrap();
    let included = cert_re.replace_all(&recipe, |c: &regex::Captures<'_>| {
        let path = if c.get(2).is_some() {
            &key_path
        } else {
            &cert_path
        };
        format!("{} {};", &c[1], path.display())
    });
    assert_ne!(included, recipe, "no ssl_certificate lines to replace");
    std::fs::write(dir.path().join("recipe.conf"), included.as_bytes()).unwrap();
    let main = dir.path().join("nginx.conf");
    std::fs::write(
        &main,
        format!(
            "pid {0}/nginx.pid;\nerror_log {0}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  include {0}/recipe.conf;\n}}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new("nginx")
        .args(["-t", "-c"])
        .arg(&main)
        .arg("-p")
        .arg(dir.path())
        .output()
        .expect("nginx must be installed for this test (scripts/install-deps.sh test)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
