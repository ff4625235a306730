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
    let meta = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/idp-metadata.xml"
    ))
    .unwrap();
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
