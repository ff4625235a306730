//! The `samlgate` command and its config, black-box: `check` on every shipped config, collected
//! errors naming each key, secrets never printed, env overrides, graceful SIGTERM, a Redis
//! outage logged once when it starts and once when it ends, and a closed log pipe survived.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::dashboard::Dashboard;
use support::gateway::{Opts, get, run_cli};
use support::local::{OwnRedis, free_port, redis_cli};
use support::process::{Served, config_on_ports, serve, terminate, write_config};

#[test]
fn every_shipped_config_checks_ok() {
    let mut checked = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (code, out, err) = run_cli(&["check", "--config", path.to_str().unwrap()], &[]);
            assert_eq!(code, 0, "{}: {out}{err}", path.display());
            assert!(out.contains("config ok"));
            checked += 1;
        }
    }
    assert!(checked >= 1);
}

/// `config/samlgate.toml`, the reference config every key is documented in.
fn shipped_idp_metadata() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/idp-metadata.xml"
    ))
    .unwrap()
}

fn shipped_config() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/samlgate.toml")).unwrap()
}

#[test]
fn config_errors_are_collected_and_name_each_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        r#"
[server]
listen = "not-an-address"
public_url = "ftp://x"
header_read_timeout = "10ms"
send_timeout = "0s"
[upstream]
url = "http://127.0.0.1:3000"
request_timeout = "soon"
keepalive_timeout = "500ms"
public_paths = ["static/*"]
[saml]
idp_metadata_file = "/nonexistent/idp.xml"
allowed_algorithms = ["rsa-md5"]
[session]
secret = "short-secret-value"
store = "postgres"
"#,
    );
    let (code, out, err) = run_cli(&["check", "--config", &path], &[]);
    assert_eq!(code, 2, "{out}{err}");
    for key in [
        "server.listen",
        "server.public_url",
        "server.header_read_timeout",
        "server.send_timeout",
        "upstream.request_timeout",
        "upstream.keepalive_timeout",
        "upstream.public_paths",
        "saml.idp_metadata_file",
        "saml.allowed_algorithms",
        "session.secret",
        "session.store",
    ] {
        assert!(err.contains(&format!("{key}:")), "missing {key} in:\n{err}");
    }
    // The secret, even a short one, is never printed.
    assert!(
        !out.contains("short-secret-value") && !err.contains("short-secret-value"),
        "{err}"
    );
    // serve refuses the same config with the same status.
    let (code, _, _) = run_cli(&["serve", "--config", &path], &[]);
    assert_eq!(code, 2);
}

/// `session.redis_ca_file` is checked by `check`: it must hold a PEM certificate, and it needs a
/// `rediss://` URL (with `redis://` Redis would be reached without TLS, which the operator who
/// set a CA did not mean).
#[test]
fn a_redis_ca_file_needs_a_certificate_and_a_rediss_url() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = shipped_config();
    let not_pem = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let (cert, _, _) = support::local::localhost_cert(dir.path());
    let with = |url: &str, ca: &std::path::Path| {
        let text = shipped.replace(
            "store = \"memory\"",
            &format!("store = \"redis\"\nredis_ca_file = \"{}\"", ca.display()),
        );
        let text = text.replace(
            "redis_url = \"redis://127.0.0.1:6379/0\"",
            &format!("redis_url = \"{url}\""),
        );
        let path = write_config(&dir, &text);
        run_cli(&["check", "--config", &path], &[])
    };
    let (code, _, err) = with("rediss://127.0.0.1:6379/0", &not_pem);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("session.redis_ca_file:") && err.contains("no PEM certificate"),
        "{err}"
    );
    let (code, _, err) = with("redis://:pw@127.0.0.1:6379/0", &cert);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("session.redis_ca_file:") && err.contains("not rediss://"),
        "{err}"
    );
    assert!(
        !err.contains(":pw@"),
        "the URL (and its password) was echoed: {err}"
    );
    let (code, out, err) = with("rediss://127.0.0.1:6379/0", &cert);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn misspelt_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = shipped_config();
    let path = write_config(&dir, &shipped.replace("idle_timeout = ", "idle_timeuot = "));
    let (code, _, err) = run_cli(&["check", "--config", &path], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("session.idle_timeuot: unknown key"), "{err}");
}

#[test]
fn check_never_prints_secrets_and_env_overrides_apply() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/samlgate.toml");
    let secret = "env-secret-that-must-never-be-printed-0123456789";
    let (code, out, err) = run_cli(
        &["check", "--config", shipped],
        &[
            ("SAMLGATE_SESSION__SECRET", secret),
            ("SAMLGATE_PROVISIONING__TOKEN", "tok-never-printed"),
            ("SAMLGATE_UPSTREAM__URL", "nope"),
        ],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("upstream.url"), "{err}");
    assert!(!out.contains(secret) && !err.contains(secret));
    assert!(!out.contains("tok-never-printed") && !err.contains("tok-never-printed"));
    // $SAMLGATE_CONFIG is where --config defaults to.
    let (code, out, _) = run_cli(&["check"], &[("SAMLGATE_CONFIG", shipped)]);
    assert_eq!(code, 0);
    assert!(out.contains("config ok"));
    let (code, _, err) = run_cli(&["check"], &[("SAMLGATE_CONFIG", "/nonexistent.toml")]);
    assert_eq!(code, 2);
    assert!(err.contains("not found"));
}

#[test]
fn secret_debug_is_redacted() {
    let s = samlgate::config::Secret::new("hunter2-hunter2");
    assert_eq!(format!("{s:?} {s}"), "*** ***");
}

/// `samlgate serve` alone on ports of its own in front of `dash`, with `opts`, its config text
/// passed through `edit`. Returns the process, its port, and the directory of its config.
async fn serve_alone(
    dash: &Dashboard,
    opts: Opts<'_>,
    edit: impl Fn(String) -> String,
    stderr: std::process::Stdio,
) -> (Served, u16, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let public_url = format!("http://127.0.0.1:{port}");
    let text = edit(config_on_ports(&public_url, port, admin, &dash.url(), opts));
    let path = write_config(&dir, &text);
    (serve(&path, admin, stderr).await, port, admin, dir)
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let dash = Dashboard::start().await;
    let (child, port, _admin, _dir) = serve_alone(
        &dash,
        Opts::default(),
        |t| t.replace("request_timeout = \"2s\"", "request_timeout = \"10s\""),
        std::process::Stdio::null(),
    )
    .await;
    let base = format!("http://127.0.0.1:{port}");
    let slow = tokio::spawn({
        let base = base.clone();
        async move { get(&format!("{base}/slow?ms=1500"), &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !dash.seen().is_empty(),
        "the slow request has not reached the dashboard yet"
    );
    let exit = tokio::spawn(terminate(child));
    let (resp, body) = slow.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(&body[..], b"slow done");
    assert_eq!(exit.await.unwrap().code(), Some(0));
    // And it no longer accepts connections.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );
}

#[test]
fn metadata_command_prints_sp_metadata() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/samlgate.toml");
    let (code, out, err) = run_cli(&["metadata", "--config", shipped], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("entityID=\"https://dash.example.com/saml/metadata\""),
        "{out}"
    );
    assert!(out.contains("https://dash.example.com/saml/acs"));
    assert!(out.contains("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"));
}

#[test]
fn idp_metadata_without_a_signing_key_fails_check() {
    let dir = tempfile::tempdir().unwrap();
    let meta = shipped_idp_metadata();
    let meta_path = dir.path().join("idp.xml");
    std::fs::write(
        &meta_path,
        meta.replace("use=\"signing\"", "use=\"encryption\""),
    )
    .unwrap();
    let shipped = shipped_config();
    let path = write_config(
        &dir,
        &shipped.replace("config/idp-metadata.xml", meta_path.to_str().unwrap()),
    );
    let (code, _, err) = run_cli(&["check", "--config", &path], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("saml.idp_metadata_file") && err.to_lowercase().contains("signing"),
        "{err}"
    );
    let (code, _, _) = run_cli(&["serve", "--config", &path], &[]);
    assert_eq!(
        code, 2,
        "serve must refuse metadata without a signing key (S1)"
    );
}

#[tokio::test]
async fn a_redis_outage_is_logged_once_when_it_starts_and_once_when_it_ends() {
    let dash = Dashboard::start().await;
    let mut redis = OwnRedis::start(free_port());
    let (served, port, _admin, _dir, lines) = serve_on_redis(&dash, &redis.url()).await;
    // Starting a login writes the pending login to the store.
    let login = format!("http://127.0.0.1:{port}/saml/login");
    assert_eq!(get(&login, &[]).await.0.status(), 302, "Redis up");

    redis.stop();
    for _ in 0..20 {
        assert_eq!(get(&login, &[]).await.0.status(), 503, "Redis down");
    }
    let _redis = OwnRedis::start(redis.port);
    let mut recovered = false;
    for _ in 0..50 {
        if get(&login, &[]).await.0.status() == 302 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(recovered, "no recovery after Redis came back");
    for _ in 0..5 {
        assert_eq!(get(&login, &[]).await.0.status(), 302, "Redis up again");
    }

    let log = stop(served, lines).await;
    let (count, all) = (|what: &str| log.count(what), log.all());
    assert_eq!(count("session store unavailable"), 1, "{all}");
    assert_eq!(count("session store answers again"), 1, "{all}");
    // Each refused request is in the access log, not in a line of its own above info.
    assert_eq!(count("request failed"), 0, "{all}");
    assert!(count("\"status\":503") >= 20, "{all}");
    // This Redis has no memory limit, so it never evicts: no warning about it.
    assert_eq!(count("maxmemory"), 0, "{all}");
}

/// A Redis that answers but refuses writes (out of memory under `noeviction`) is not an
/// outage that comes and goes with every request: each request that needs a write gets a 503,
/// reads and `/readyz` go on working, and the logs say so in one warning naming Redis's
/// reason, not a pair of "unavailable" / "answers again" lines per request.
#[tokio::test]
async fn a_redis_that_refuses_writes_is_one_warning_not_an_outage_per_request() {
    let dash = Dashboard::start().await;
    let redis = OwnRedis::start(free_port());
    let (served, port, admin, _dir, lines) = serve_on_redis(&dash, &redis.url()).await;
    let login = format!("http://127.0.0.1:{port}/saml/login");
    assert_eq!(get(&login, &[]).await.0.status(), 302, "Redis with room");
    redis_cli(redis.port, &["CONFIG", "SET", "maxmemory", "1"]);
    let readyz = format!("http://127.0.0.1:{admin}/readyz");
    for _ in 0..10 {
        assert_eq!(get(&login, &[]).await.0.status(), 503, "Redis full");
        assert_eq!(get(&readyz, &[]).await.0.status(), 200, "Redis answers");
    }
    redis_cli(redis.port, &["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(
        get(&login, &[]).await.0.status(),
        302,
        "Redis with room again"
    );
    // The refusals are counted apart from outages.
    let (_, metrics) = get(&format!("http://127.0.0.1:{admin}/metrics"), &[]).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("samlgate_session_store_refusals_total 10\n"),
        "{metrics}"
    );
    let log = stop(served, lines).await;
    let (count, all) = (|what: &str| log.count(what), log.all());
    assert_eq!(count("session store unavailable"), 0, "{all}");
    assert_eq!(count("session store answers again"), 0, "{all}");
    assert_eq!(count("session store refuses"), 1, "{all}");
    assert!(all.contains("OOM"), "{all}");
}

/// A `serve` process on the Redis at `redis_url` (operation timeout 250 ms), logging at info
/// (so that lines saying the store answers again are there to count), its stderr collected.
async fn serve_on_redis(
    dash: &Dashboard,
    redis_url: &str,
) -> (
    Served,
    u16,
    u16,
    tempfile::TempDir,
    std::thread::JoinHandle<Vec<String>>,
) {
    let session =
        format!("store = \"redis\"\nredis_url = \"{redis_url}\"\noperation_timeout = \"250ms\"");
    let opts = Opts {
        session: &session,
        ..Opts::default()
    };
    let (mut served, port, admin, dir) = serve_alone(
        dash,
        opts,
        |t| t.replace("level = \"warn\"", "level = \"info\""),
        std::process::Stdio::piped(),
    )
    .await;
    let lines = stderr_lines(&mut served);
    (served, port, admin, dir, lines)
}

/// What a `serve` process logged, read after it stopped.
struct Log(Vec<String>);

impl Log {
    /// Lines that contain `what`.
    fn count(&self, what: &str) -> usize {
        self.0.iter().filter(|l| l.contains(what)).count()
    }

    fn all(&self) -> String {
        self.0.join("\n")
    }
}

/// Stops a `serve` process with SIGTERM (it must exit 0) and returns what it logged.
async fn stop(served: Served, lines: std::thread::JoinHandle<Vec<String>>) -> Log {
    assert_eq!(terminate(served).await.code(), Some(0));
    Log(lines.join().unwrap())
}

/// Reads the piped stderr of a `serve` process on a thread of its own: its lines once it ends.
fn stderr_lines(served: &mut Served) -> std::thread::JoinHandle<Vec<String>> {
    let stderr = served.0.as_mut().unwrap().stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect()
    })
}

/// A Redis that may evict keys (a memory limit and a policy other than `noeviction`) is named
/// in one warning: it could drop sessions and replay-cache entries under memory pressure.
#[tokio::test]
async fn an_evicting_redis_is_warned_about_once() {
    let dash = Dashboard::start().await;
    let port = free_port();
    let port_arg = port.to_string();
    let redis = OwnRedis::start_with(
        port,
        &[
            "--port",
            &port_arg,
            "--maxmemory",
            "64mb",
            "--maxmemory-policy",
            "allkeys-lru",
        ],
    );
    let (served, port, _admin, _dir, lines) = serve_on_redis(&dash, &redis.url()).await;
    let login = format!("http://127.0.0.1:{port}/saml/login");
    for _ in 0..3 {
        assert_eq!(get(&login, &[]).await.0.status(), 302);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = stop(served, lines).await;
    let warned: Vec<&String> = log.0.iter().filter(|l| l.contains("maxmemory")).collect();
    assert_eq!(warned.len(), 1, "{}", log.all());
    assert!(
        warned[0].contains("allkeys-lru") && warned[0].contains("WARN"),
        "{}",
        warned[0]
    );
}

#[tokio::test]
async fn a_closed_log_pipe_stops_neither_serving_nor_shutdown() {
    let dash = Dashboard::start().await;
    let (mut served, port, _admin, _dir) = serve_alone(
        &dash,
        Opts::default(),
        |t| t.replace("level = \"warn\"", "level = \"info\""),
        std::process::Stdio::piped(),
    )
    .await;
    // The reader of its stderr goes away, as a log shipper that died would.
    drop(served.0.as_mut().unwrap().stderr.take());
    // Every request writes an access line that now cannot be written.
    for i in 0..20 {
        let (resp, body) = get(&format!("http://127.0.0.1:{port}/static/{i}"), &[]).await;
        assert_eq!(
            resp.status(),
            200,
            "request {i}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(terminate(served).await.code(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// Audit findings: each config problem `check` must report (once, without secrets), and what it
// must accept.
// ---------------------------------------------------------------------------------------------

/// `check` on `text` (written into `dir`) with `env`: the exit status and everything printed.
fn check_text(dir: &tempfile::TempDir, text: &str, env: &[(&str, &str)]) -> (i32, String) {
    let path = write_config(dir, text);
    let (code, out, err) = run_cli(&["check", "--config", &path], env);
    (code, format!("{out}{err}"))
}

/// The shipped config with each `(from, to)` replaced (each `from` must be there).
fn shipped_with(edits: &[(&str, &str)]) -> String {
    let mut text = shipped_config();
    for (from, to) in edits {
        assert!(text.contains(from), "{from:?} not in the shipped config");
        text = text.replacen(from, to, 1);
    }
    text
}

/// `check` of `text` fails (exit 2) with exactly one problem line about `key`; returns the
/// output.
fn one_problem(dir: &tempfile::TempDir, text: &str, key: &str) -> String {
    let (code, out) = check_text(dir, text, &[]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(lines_about(&out, key).len(), 1, "{out}");
    out
}

/// `check` of `text` passes (exit 0).
fn accepted(dir: &tempfile::TempDir, text: &str) {
    let (code, out) = check_text(dir, text, &[]);
    assert_eq!(code, 0, "{out}");
}

/// `check` of `text` fails (exit 2) with `expect` in its output, which is returned.
fn refused(dir: &tempfile::TempDir, text: &str, expect: &str) -> String {
    let (code, out) = check_text(dir, text, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(expect), "{expect:?} not in: {out}");
    out
}

/// The problem lines of a `check` output that mention `key`.
fn lines_about<'a>(output: &'a str, key: &str) -> Vec<&'a str> {
    output
        .lines()
        .filter(|l| l.trim_start().starts_with("- ") && l.contains(key))
        .collect()
}

/// Kubernetes gives every pod `<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT`... for each Service;
/// for a Service named `samlgate` (or `samlgate-redis`) they start with `SAMLGATE_` and are not
/// config. Only `SAMLGATE_<SECTION>__<KEY>` is, and an unknown key in that form is still refused.
#[test]
fn kubernetes_service_link_variables_are_not_config() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/samlgate.toml");
    let links = [
        ("SAMLGATE_SERVICE_HOST", "10.96.0.12"),
        ("SAMLGATE_SERVICE_PORT", "80"),
        ("SAMLGATE_SERVICE_PORT_HTTP", "80"),
        ("SAMLGATE_PORT", "tcp://10.96.0.12:80"),
        ("SAMLGATE_PORT_80_TCP", "tcp://10.96.0.12:80"),
        ("SAMLGATE_PORT_80_TCP_ADDR", "10.96.0.12"),
        ("SAMLGATE_REDIS_SERVICE_HOST", "10.96.0.13"),
        ("SAMLGATE_REDIS_PORT", "tcp://10.96.0.13:6379"),
        ("SAMLGATE_SAMLGATE_PORT_8080_TCP_ADDR", "10.96.0.14"),
    ];
    let (code, out, err) = run_cli(&["check", "--config", shipped], &links);
    assert_eq!(code, 0, "{out}{err}");
    let mut with_typo = links.to_vec();
    with_typo.push(("SAMLGATE_SESSION__SECRETT", "x"));
    let (code, _, err) = run_cli(&["check", "--config", shipped], &with_typo);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("session.secrett: unknown key"), "{err}");
    assert_eq!(err.matches("unknown key").count(), 1, "{err}");
}

/// A value of the wrong type is described by its type, never shown: it may be a secret.
#[test]
fn type_errors_and_url_errors_never_print_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/samlgate.toml");
    // A table where a list is expected, from the environment.
    let (code, out) = {
        let (code, out, err) = run_cli(
            &["check", "--config", shipped],
            &[(
                "SAMLGATE_SESSION__PREVIOUS_SECRETS",
                "{a = \"prevSECRETinatable\"}",
            )],
        );
        (code, format!("{out}{err}"))
    };
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("session.previous_secrets:"), "{out}");
    assert!(out.contains("SAMLGATE_SESSION__PREVIOUS_SECRETS"), "{out}");
    assert!(!out.contains("prevSECRET"), "{out}");
    // A number where a string is expected, in the file.
    let out = refused(
        &dir,
        &shipped_with(&[("token = \"change-me\"", "token = 987654321")]),
        "provisioning.token: expected a string, found an integer",
    );
    assert!(!out.contains("987654321"), "{out}");
    // A TOML syntax error on a secret's line: the position and the reason, not the line.
    let out = refused(
        &dir,
        &shipped_with(&[(
            "secret = \"change-me-to-48-random-bytes-openssl-rand-base64-48\"",
            "secret = \"unterminatedSECRET0123456789abcdef0123",
        )]),
        "line",
    );
    assert!(!out.contains("unterminatedSECRET"), "{out}");
    // URLs with user:password@ are shown with it masked.
    for (from, to) in [
        (
            "url = \"http://127.0.0.1:3000\"",
            "url = \"gopher://u:hunter2pass@host/\"",
        ),
        (
            "url = \"http://127.0.0.1:3000/scim/v2\"",
            "url = \"ftp://u:hunter2pass@host/scim\"",
        ),
        (
            "idp_metadata_file = \"config/idp-metadata.xml\"",
            "idp_metadata_url = \"gopher://u:hunter2pass@idp/\"",
        ),
        (
            "public_url = \"https://dash.example.com\"",
            "public_url = \"gopher://u:hunter2pass@dash/\"",
        ),
    ] {
        let out = refused(&dir, &shipped_with(&[(from, to)]), "***@");
        assert!(!out.contains("hunter2pass"), "{to}: {out}");
    }
}

/// Every environment variable is text: a token of digits (leading zero and all) is the token,
/// and previous secrets may be given as one comma-separated string.
#[test]
fn secrets_from_the_environment_are_taken_as_written() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/samlgate.toml");
    let (code, out, err) = run_cli(
        &["check", "--config", shipped],
        &[
            ("SAMLGATE_PROVISIONING__TOKEN", "0987654321"),
            (
                "SAMLGATE_SESSION__SECRET",
                "12345678901234567890123456789012345678901",
            ),
            (
                "SAMLGATE_SESSION__PREVIOUS_SECRETS",
                "prevSECRET0123456789abcdef0123456789, prevSECRET9876543210fedcba9876543210",
            ),
            // Number and boolean keys still read their text as a number or boolean.
            ("SAMLGATE_SERVER__MAX_CONNECTIONS", "500"),
            ("SAMLGATE_SAML__FORCE_AUTHN", "true"),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    // A TOML list works too; a short one is refused without being printed.
    let (code, out, err) = run_cli(
        &["check", "--config", shipped],
        &[(
            "SAMLGATE_SESSION__PREVIOUS_SECRETS",
            "[\"prevSECRET0123456789abcdef0123456789\", \"prevSHORT\"]",
        )],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("session.previous_secrets:"), "{err}");
    assert!(!err.contains("prevS"), "{err}");
}

/// What `serve` would refuse, `check` reports: a token that cannot be an HTTP header value, a
/// Redis URL the redis client refuses, both listeners on one address.
#[test]
fn check_reports_what_serve_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "first-line\nsecond-line\n").unwrap();
    let out = refused(
        &dir,
        &shipped_with(&[(
            "token = \"change-me\"",
            &format!("token_file = \"{}\"", token_file.display()),
        )]),
        "provisioning.token: contains characters not allowed in an HTTP header",
    );
    assert!(!out.contains("first-line"), "{out}");
    let out = refused(
        &dir,
        &shipped_with(&[
            ("store = \"memory\"", "store = \"redis\""),
            (
                "redis_url = \"redis://127.0.0.1:6379/0\"",
                "redis_url = \"redis://:pw@127.0.0.1:6379/notadb\"",
            ),
        ]),
        "session.redis_url: the database (the URL's path) must be a number",
    );
    assert!(!out.contains(":pw@"), "{out}");
    refused(
        &dir,
        &shipped_with(&[
            ("payload = \"scim\"", "payload = \"braze\""),
            (
                "# [provisioning.braze]",
                "[provisioning.braze]\nrequest_origin = \"https://dash.example.com\\r\\nX-Evil: 1\"\n#",
            ),
        ]),
        "provisioning.braze.request_origin: contains characters not allowed",
    );
    for admin in ["0.0.0.0:8080", "127.0.0.1:8080"] {
        refused(
            &dir,
            &shipped_with(&[(
                "admin_listen = \"127.0.0.1:9090\"",
                &format!("admin_listen = \"{admin}\""),
            )]),
            "server.admin_listen:",
        );
    }
    // 0.0.0.0 takes the port on IPv4 addresses only: an IPv6 loopback admin listener is free.
    accepted(
        &dir,
        &shipped_with(&[(
            "admin_listen = \"127.0.0.1:9090\"",
            "admin_listen = \"[::1]:8080\"",
        )]),
    );
}

/// An empty or blank token (inline, from the environment or from its file) is no token.
#[test]
fn an_empty_provisioning_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "  \n").unwrap();
    for (text, env) in [
        (
            shipped_with(&[("token = \"change-me\"", "token = \"\"")]),
            vec![],
        ),
        (
            shipped_with(&[("token = \"change-me\"", "token = \"   \"")]),
            vec![],
        ),
        (
            shipped_config(),
            vec![("SAMLGATE_PROVISIONING__TOKEN", " ")],
        ),
        (
            shipped_with(&[(
                "token = \"change-me\"",
                &format!("token_file = \"{}\"", token_file.display()),
            )]),
            vec![],
        ),
    ] {
        let (code, out) = check_text(&dir, &text, &env);
        assert_eq!(code, 2, "{env:?}: {out}");
        assert!(out.contains("provisioning.token: empty"), "{env:?}: {out}");
    }
}

/// Identity headers may not take names that HTTP, credentials or the proxy own, nor share one.
#[test]
fn identity_header_names_must_be_free_and_distinct() {
    let dir = tempfile::tempdir().unwrap();
    for (from, to, key) in [
        (
            "user = \"X-Forwarded-User\"",
            "user = \"Host\"",
            "headers.user",
        ),
        (
            "email = \"X-Forwarded-Email\"",
            "email = \"authorization\"",
            "headers.email",
        ),
        (
            "name = \"X-Forwarded-Name\"",
            "name = \"Transfer_Encoding\"",
            "headers.name",
        ),
        (
            "groups = \"X-Forwarded-Groups\"",
            "groups = \"X-Forwarded-For\"",
            "headers.groups",
        ),
        (
            "workspace = \"X-Forwarded-Workspace\"",
            "workspace = \"cookie\"",
            "headers.workspace",
        ),
        (
            "permission_set = \"X-Forwarded-Permission-Set\"",
            "permission_set = \"x_forwarded_user\"",
            "headers.permission_set",
        ),
        (
            "# [headers.jwt]                  # optional signed identity assertion (ES256), like Pomerium's\n# header = \"X-Samlgate-Jwt-Assertion\"",
            "[headers.jwt]\nheader = \"Proxy-Authorization\"",
            "headers.jwt.header",
        ),
    ] {
        let (code, out) = check_text(&dir, &shipped_with(&[(from, to)]), &[]);
        assert_eq!(code, 2, "{to}: {out}");
        assert_eq!(
            lines_about(&out, &format!("{key}:")).len(),
            1,
            "{to}: {out}"
        );
    }
    // Under the grafana preset, a name set as well would be ignored: said, naming both keys.
    // The shipped config's names are the defaults, which the preset may simply replace.
    accepted(
        &dir,
        &shipped_with(&[("# preset = \"grafana\"", "preset = \"grafana\"")]),
    );
    let out = refused(
        &dir,
        &shipped_with(&[
            ("# preset = \"grafana\"", "preset = \"grafana\""),
            ("user = \"X-Forwarded-User\"", "user = \"X-Remote-User\""),
        ]),
        "headers.preset",
    );
    let lines = lines_about(&out, "headers.preset");
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0].contains("headers.user:"), "{out}");
    // The preset alone is fine.
    let text = shipped_config();
    let start = text.find("[headers]").unwrap();
    let end = text.find("max_groups_bytes").unwrap();
    let text = format!(
        "{}[headers]\npreset = \"grafana\"\n{}",
        &text[..start],
        &text[end..]
    );
    accepted(&dir, &text);
}

/// `public_url` is normalised (an upper-case `HTTPS` is https, with everything that follows:
/// the metadata's URLs, `Secure` cookies); a fragment or `user:password@` is refused.
#[test]
fn public_url_is_normalised_and_refuses_fragments_and_userinfo() {
    let dir = tempfile::tempdir().unwrap();
    let text = shipped_with(&[
        (
            "public_url = \"https://dash.example.com\"",
            "public_url = \"HTTPS://Dash.Example.COM:443/\"",
        ),
        ("entity_id = \"https://dash.example.com/saml/metadata\"", ""),
    ]);
    accepted(&dir, &text);
    let path = write_config(&dir, &text);
    let (code, out, err) = run_cli(&["metadata", "--config", &path], &[]);
    assert_eq!(code, 0, "{err}");
    // Only the scheme lower-cased (the cookies are Secure): host and port as written, since the
    // ACS URL and entity ID the IdP has registered are compared byte for byte.
    assert!(
        out.contains("\"https://Dash.Example.COM:443/saml/acs\""),
        "{out}"
    );
    assert!(
        out.contains("entityID=\"https://Dash.Example.COM:443/saml/metadata\""),
        "{out}"
    );
    for bad in [
        "https://dash.example.com/#frag",
        "https://admin:s3cretpw@dash.example.com",
    ] {
        let out = one_problem(
            &dir,
            &shipped_with(&[(
                "public_url = \"https://dash.example.com\"",
                &format!("public_url = \"{bad}\""),
            )]),
            "server.public_url:",
        );
        assert!(!out.contains("s3cretpw"), "{out}");
    }
}

/// A zero (or sub-millisecond) timeout is refused, naming the key and its minimum; a zero
/// shutdown grace (no drain) is allowed.
#[test]
fn zero_timeouts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (from, key) in [
        ("connect_timeout = \"5s\"", "upstream.connect_timeout"),
        ("request_timeout = \"60s\"", "upstream.request_timeout"),
        ("max_issue_age = \"5m\"", "saml.max_issue_age"),
        ("login_timeout = \"10m\"", "saml.login_timeout"),
        ("operation_timeout = \"250ms\"", "session.operation_timeout"),
        ("\ntimeout = \"5s\"", "provisioning.timeout"),
    ] {
        let field = from.split(' ').next().unwrap();
        for zero in ["0s", "500us"] {
            let (code, out) = check_text(
                &dir,
                &shipped_with(&[(from, &format!("{field} = \"{zero}\""))]),
                &[],
            );
            assert_eq!(code, 2, "{key} = {zero}: {out}");
            let lines = lines_about(&out, &format!("{key}:"));
            assert_eq!(lines.len(), 1, "{out}");
            assert!(lines[0].contains("must be at least"), "{out}");
        }
    }
    accepted(
        &dir,
        &shipped_with(&[("shutdown_grace = \"25s\"", "shutdown_grace = \"0s\"")]),
    );
    // "30M" is 30 months to the parser, surely not what was meant; past ten years is too long
    // for the caches the durations go into.
    let idle = |value: &str| {
        shipped_with(&[(
            "idle_timeout = \"1h\"",
            &format!("idle_timeout = \"{value}\""),
        )])
    };
    for (value, why) in [
        ("30M", "ambiguous"),
        ("2 M", "ambiguous"),
        ("2000years", "ten years"),
    ] {
        let out = one_problem(&dir, &idle(value), "session.idle_timeout:");
        assert!(out.contains(why), "{value}: {out}");
    }
    for value in ["30m", "2months", "1h 30m"] {
        accepted(&dir, &idle(value));
    }
}

/// `upstream.ca_file` is checked as `session.redis_ca_file` is: it must hold a certificate.
#[test]
fn an_upstream_ca_file_needs_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let (code, out) = check_text(
        &dir,
        &shipped_with(&[(
            "# ca_file = \"/etc/ssl/dashboard-ca.pem\"",
            &format!("ca_file = \"{}\"", not_pem.display()),
        )]),
        &[],
    );
    assert_eq!(code, 2, "{out}");
    let lines = lines_about(&out, "upstream.ca_file:");
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0].contains("no PEM certificate"), "{out}");
    let (cert, _, _) = support::local::localhost_cert(dir.path());
    accepted(
        &dir,
        &shipped_with(&[(
            "# ca_file = \"/etc/ssl/dashboard-ca.pem\"",
            &format!("ca_file = \"{}\"", cert.display()),
        )]),
    );
}

/// The upstream URL is a base: a query or fragment in it would be silently dropped.
#[test]
fn upstream_url_refuses_a_query_or_fragment() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "http://h/app?token=1",
        "http://h/app#top",
        "http://user:pw@h/app",
    ] {
        one_problem(
            &dir,
            &shipped_with(&[(
                "url = \"http://127.0.0.1:3000\"",
                &format!("url = \"{url}\""),
            )]),
            "upstream.url:",
        );
    }
    accepted(
        &dir,
        &shipped_with(&[(
            "url = \"http://127.0.0.1:3000\"",
            "url = \"http://127.0.0.1:3000/app/\"",
        )]),
    );
}

/// `*` in a public path is not a glob: only `/x/*` (a whole last segment) is accepted.
#[test]
fn public_paths_take_a_star_only_as_a_whole_last_segment() {
    let dir = tempfile::tempdir().unwrap();
    let with = |paths: &str| {
        shipped_with(&[(
            "public_paths = [\"/healthz\", \"/static/*\"]",
            &format!("public_paths = {paths}"),
        )])
    };
    for bad in [
        "[\"/st*\"]",
        "[\"/static*\"]",
        "[\"/*/x\"]",
        "[\"/a/*/*\"]",
        "[\"/a*/\"]",
    ] {
        let (code, out) = check_text(&dir, &with(bad), &[]);
        assert_eq!(code, 2, "{bad}: {out}");
        let lines = lines_about(&out, "upstream.public_paths:");
        assert_eq!(lines.len(), 1, "{out}");
        assert!(lines[0].contains("\"/static/*\""), "{out}");
    }
    accepted(
        &dir,
        &with("[\"/healthz\", \"/static/*\", \"/favicon.ico\", \"/assets/\"]"),
    );
}

/// Each problem is one accurate line: not "missing" on top of "not both" or "cannot read",
/// not "too short" on top of "not a duration", the port named when it is the problem.
#[test]
fn each_problem_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "0123456789abcdef0123456789abcdef\n").unwrap();
    let secret_line = "secret = \"change-me-to-48-random-bytes-openssl-rand-base64-48\"";
    let cases: Vec<(String, &str)> = vec![
        (
            shipped_with(&[(
                secret_line,
                &format!("{secret_line}\nsecret_file = \"{}\"", secret_file.display()),
            )]),
            "session.secret",
        ),
        (
            shipped_with(&[(secret_line, "secret_file = \"/nonexistent/secret\"")]),
            "session.secret",
        ),
        (
            shipped_with(&[(
                "token = \"change-me\"",
                &format!("token = \"t\"\ntoken_file = \"{}\"", secret_file.display()),
            )]),
            "provisioning.token",
        ),
        (
            shipped_with(&[(
                "token = \"change-me\"",
                "token_file = \"/nonexistent/token\"",
            )]),
            "provisioning.token",
        ),
        (
            shipped_with(&[("lifetime = \"12h\"", "lifetime = \"abc\"")]),
            "session.lifetime",
        ),
        (
            shipped_with(&[
                ("store = \"memory\"", "store = \"redis\""),
                (
                    "redis_url = \"redis://127.0.0.1:6379/0\"",
                    "redis_url = \"redis://127.0.0.1:99999/0\"",
                ),
            ]),
            "session.redis_url",
        ),
        // redis_url_file does not silently win over redis_url.
        (
            shipped_with(&[(
                "redis_url = \"redis://127.0.0.1:6379/0\"",
                &format!(
                    "redis_url = \"redis://127.0.0.1:6379/0\"\nredis_url_file = \"{}\"",
                    secret_file.display()
                ),
            )]),
            "session.redis_url",
        ),
    ];
    for (text, key) in &cases {
        let (code, out) = check_text(&dir, text, &[]);
        assert_eq!(code, 2, "{out}");
        let lines = lines_about(&out, key);
        assert_eq!(lines.len(), 1, "{key}: {out}");
    }
    let (_, out) = check_text(&dir, &cases[0].0, &[]);
    assert!(out.contains("not both"), "{out}");
    let (_, out) = check_text(&dir, &cases[1].0, &[]);
    assert!(out.contains("session.secret_file: cannot read"), "{out}");
    let (_, out) = check_text(&dir, &cases[5].0, &[]);
    assert!(out.contains("port"), "{out}");
    let (_, out) = check_text(&dir, &cases[6].0, &[]);
    assert!(
        out.contains("set either session.redis_url or session.redis_url_file, not both"),
        "{out}"
    );
    // The same from the environment: SAMLGATE_SESSION__REDIS_URL and a redis_url_file.
    let (code, out) = check_text(
        &dir,
        &shipped_with(&[(
            "redis_url = \"redis://127.0.0.1:6379/0\"",
            &format!("redis_url_file = \"{}\"", secret_file.display()),
        )]),
        &[("SAMLGATE_SESSION__REDIS_URL", "redis://127.0.0.1:6379/1")],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not both"), "{out}");
}

/// `serve` failing to bind says the OS error once, not once per level of the error chain.
#[test]
fn a_serve_error_prints_its_cause_once() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        &shipped_with(&[
            (
                "listen = \"0.0.0.0:8080\"",
                &format!("listen = \"127.0.0.1:{port}\""),
            ),
            (
                "admin_listen = \"127.0.0.1:9090\"",
                &format!("admin_listen = \"127.0.0.1:{}\"", free_port()),
            ),
        ]),
    );
    let (code, out, err) = run_cli(&["serve", "--config", &path], &[]);
    assert_ne!(code, 0, "{out}{err}");
    let eprinted: Vec<&str> = err.lines().filter(|l| l.starts_with("samlgate:")).collect();
    assert_eq!(eprinted.len(), 1, "{err}");
    assert!(eprinted[0].contains("server.listen"), "{err}");
    assert_eq!(eprinted[0].matches("os error").count(), 1, "{err}");
    drop(busy);
}

/// IdP metadata is refused where it could be stale or swapped: a file past its `validUntil`
/// (as a fetched copy would be), and a metadata URL over plain http to anything but loopback
/// (the metadata carries the signing certificate and is not signature-checked).
#[test]
fn stale_or_unprotected_idp_metadata_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shipped_md = shipped_idp_metadata();
    let expired = dir.path().join("expired.xml");
    std::fs::write(
        &expired,
        shipped_md.replacen(
            "<md:EntityDescriptor ",
            "<md:EntityDescriptor validUntil=\"2001-01-01T00:00:00Z\" ",
            1,
        ),
    )
    .unwrap();
    let line = "idp_metadata_file = \"config/idp-metadata.xml\"";
    let text = shipped_with(&[(
        line,
        &format!("idp_metadata_file = {:?}", expired.display().to_string()),
    )]);
    let (code, out) = check_text(&dir, &text, &[]);
    assert_eq!(code, 2, "{out}");
    let lines = lines_about(&out, "saml.idp_metadata_file:");
    assert_eq!(lines.len(), 1, "{out}");
    assert!(
        lines[0].contains("expired") && lines[0].contains("2001-01-01"),
        "{out}"
    );
    // The same file, valid for another year: accepted.
    let later = (chrono::Utc::now() + chrono::Duration::days(365)).format("%Y-%m-%dT%H:%M:%SZ");
    std::fs::write(
        &expired,
        shipped_md.replacen(
            "<md:EntityDescriptor ",
            &format!("<md:EntityDescriptor validUntil=\"{later}\" "),
            1,
        ),
    )
    .unwrap();
    accepted(&dir, &text);

    for (url, ok) in [
        ("http://idp.example.com/metadata", false),
        ("http://10.0.0.5/metadata", false),
        ("https://idp.example.com/metadata", true),
        ("http://127.0.0.1:8081/metadata", true),
        ("http://localhost:8081/metadata", true),
    ] {
        let text = shipped_with(&[(line, &format!("idp_metadata_url = \"{url}\""))]);
        let (code, out) = check_text(&dir, &text, &[]);
        let about = lines_about(&out, "saml.idp_metadata_url:");
        if ok {
            assert!(about.is_empty(), "{url}: {out}");
        } else {
            assert_eq!(code, 2, "{url}: {out}");
            assert_eq!(about.len(), 1, "{url}: {out}");
            assert!(about[0].contains("https://"), "{url}: {out}");
        }
    }
    // An operator who trusts the network (mesh mTLS) can say so.
    let text = shipped_with(&[(
        line,
        "idp_metadata_url = \"http://keycloak.auth.svc/metadata\"\nidp_metadata_allow_http = true",
    )]);
    let (_, out) = check_text(&dir, &text, &[]);
    assert!(
        lines_about(&out, "saml.idp_metadata_url:").is_empty(),
        "{out}"
    );
}
