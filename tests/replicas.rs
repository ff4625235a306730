//! Two gateway replicas sharing one real Redis, black-box: a session made on A works on B,
//! a logout on B is refused on A at once, a login started on A finishes on B, a response
//! accepted by A is refused by B, and Redis going away gives 503 pages until it returns —
//! without restarting samlgate. The same sharing also between two `samlgate serve` processes,
//! where nothing in one process's memory can stand in for Redis.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use samlgate::demo::signer::{ResponseSpec, TestIdp};
use support::dashboard::Dashboard;
use support::gateway::Opts;
use support::local::{OwnRedis, free_port};
use support::process::{config_on_ports, serve, terminate, write_config};
use support::sso::{Browser, IDP_ENTITY, Sso, sets_session};

fn redis_opts(prefix: &str) -> String {
    format!("store = \"redis\"\nredis_key_prefix = \"{prefix}\"\nlocal_ttl = \"5s\"")
}

fn prefix() -> String {
    format!("replicas-{}:", rand::random::<u64>())
}

#[tokio::test]
async fn sessions_logins_and_replay_cache_are_shared() {
    let session = redis_opts(&prefix());
    let sso = Sso::start(Opts {
        session: &session,
        saml: "allow_idp_initiated = true",
        ..Opts::default()
    })
    .await;
    let b_gw = sso
        .replica(Opts {
            session: &session,
            saml: "allow_idp_initiated = true",
            ..Opts::default()
        })
        .await;
    let a = sso.gw.addr;
    let b = b_gw.addr;

    // Log in through A; the session works on A and on B.
    let mut browser = Browser::new();
    assert_eq!(sso.login(&mut browser, "/").await.0.status(), 303);
    assert_eq!(browser.get(&format!("http://{a}/x")).await.0.status(), 200);
    assert_eq!(browser.get(&format!("http://{b}/x")).await.0.status(), 200);

    // Log out on B: A (whose local tier holds the session) refuses it at once.
    let kept = browser.clone();
    assert_eq!(
        browser
            .get(&format!("http://{b}/saml/logout"))
            .await
            .0
            .status(),
        302, // to the IdP's SLO endpoint with our LogoutRequest
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut kept2 = kept.clone();
    assert_eq!(
        kept2.get(&format!("http://{a}/x")).await.0.status(),
        302,
        "A still honours a session logged out on B"
    );

    // A login started on A finishes on B.
    let mut c = Browser::new();
    let start = c.start_login(&sso.gw, "/from-a").await;
    let value = sso.form_value(&sso.spec(Some(&start.request_id)));
    let (resp, _) = c.post_acs(&b_gw, &value, &start.relay_state).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/from-a");

    // A response accepted by A is refused by B.
    let value = sso.form_value(&sso.spec(None));
    assert_eq!(
        Browser::new()
            .post_acs(&sso.gw, &value, "")
            .await
            .0
            .status(),
        303
    );
    let (resp, _) = Browser::new().post_acs(&b_gw, &value, "").await;
    assert_eq!(resp.status(), 403);
    assert!(!sets_session(&resp));
}

#[tokio::test]
async fn redis_outage_gives_503_and_recovers_by_itself() {
    let port = free_port();
    let redis = OwnRedis::start(port);
    let session = format!(
        "store = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}/0\"\nlocal_ttl = \"1s\"\noperation_timeout = \"250ms\""
    );
    let sso = Sso::start(Opts {
        session: &session,
        ..Opts::default()
    })
    .await;
    let mut browser = Browser::new();
    assert_eq!(sso.login(&mut browser, "/").await.0.status(), 303);
    let (resp, _) = support::gateway::get(&format!("http://{}/readyz", sso.gw.admin), &[]).await;
    assert_eq!(resp.status(), 200);

    drop(redis);
    tokio::time::sleep(Duration::from_millis(1200)).await; // past the local tier
    let started = std::time::Instant::now();
    let (resp, body) = browser.get(&format!("{}/x", sso.gw.public_url)).await;
    assert_eq!(resp.status(), 503, "{}", String::from_utf8_lossy(&body));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let (resp, _) = support::gateway::get(&format!("http://{}/readyz", sso.gw.admin), &[]).await;
    assert_eq!(resp.status(), 503);
    // A new login cannot start either, and says so quickly.
    let (resp, _) = Browser::new()
        .get(&format!("{}/saml/login", sso.gw.public_url))
        .await;
    assert_eq!(resp.status(), 503);

    let _redis = OwnRedis::start(port);
    // The session was lost with the Redis that kept nothing; a new login works without a restart.
    let mut ok = false;
    for _ in 0..50 {
        let mut b = Browser::new();
        if sso.login(&mut b, "/").await.0.status() == 303
            && b.get(&format!("{}/x", sso.gw.public_url)).await.0.status() == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "the gateway did not recover after Redis came back");
    let (resp, _) = support::gateway::get(&format!("http://{}/readyz", sso.gw.admin), &[]).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_share_sessions_logins_and_the_replay_cache() {
    let dash = Dashboard::start().await;
    let idp = TestIdp::generate(IDP_ENTITY).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("idp.xml");
    std::fs::write(
        &meta,
        idp.metadata_xml("https://idp.test/sso", Some("https://idp.test/slo"))
            .unwrap(),
    )
    .unwrap();
    let meta = meta.display().to_string();
    let session = redis_opts(&prefix());
    let (a_port, b_port) = (free_port(), free_port());
    // Both replicas tell browsers A's address, as replicas behind one load balancer would.
    let public_url = format!("http://127.0.0.1:{a_port}");
    let (a, b) = (public_url.clone(), format!("http://127.0.0.1:{b_port}"));
    let mut replicas = Vec::new();
    for (name, port) in [("a", a_port), ("b", b_port)] {
        let admin = free_port();
        let text = config_on_ports(
            &public_url,
            port,
            admin,
            &dash.url(),
            Opts {
                metadata: Some(&meta),
                session: &session,
                saml: "allow_idp_initiated = true",
                ..Opts::default()
            },
        );
        let replica_dir = tempfile::Builder::new().prefix(name).tempdir().unwrap();
        let path = write_config(&replica_dir, &text);
        replicas.push((
            serve(&path, admin, std::process::Stdio::null()).await,
            replica_dir,
        ));
    }
    let acs = format!("{public_url}/saml/acs");
    let spec = |in_response_to: Option<&str>| ResponseSpec {
        destination: Some(acs.clone()),
        recipient: Some(acs.clone()),
        audiences: vec![format!("{public_url}/saml/metadata")],
        in_response_to: in_response_to.map(str::to_string),
        ..ResponseSpec::default()
    };

    // A login started on A finishes on B, and the session works on both.
    let mut browser = Browser::new();
    let start = browser.start_login_at(&a, "/from-a").await;
    let value = idp
        .response_form_value(&spec(Some(&start.request_id)))
        .unwrap();
    let (resp, _) = browser
        .try_post_acs_at(&b, &value, &start.relay_state)
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        303,
        "the login started on A did not finish on B"
    );
    assert_eq!(resp.headers()["location"], "/from-a");
    for base in [&a, &b] {
        let seen = dash.seen().len();
        let (resp, _) = browser.get(&format!("{base}/x")).await;
        assert_eq!(resp.status(), 200, "the session is not honoured by {base}");
        assert_eq!(
            dash.seen().len(),
            seen + 1,
            "{base} did not forward the request"
        );
        assert_eq!(dash.last().uri, "/x");
    }

    // A response accepted by A is refused by B.
    let unsolicited = idp.response_form_value(&spec(None)).unwrap();
    let (resp, _) = Browser::new()
        .try_post_acs_at(&a, &unsolicited, "")
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let (resp, _) = Browser::new()
        .try_post_acs_at(&b, &unsolicited, "")
        .await
        .unwrap();
    assert!(
        resp.status().is_client_error(),
        "replayed on B: {}",
        resp.status()
    );
    assert!(!sets_session(&resp));

    // A logout on B is refused by A at once (A's in-process tier held the session).
    let kept = browser.clone();
    assert_eq!(
        browser.get(&format!("{b}/saml/logout")).await.0.status(),
        302
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = dash.seen().len();
    assert_eq!(
        kept.clone().get(&format!("{a}/x")).await.0.status(),
        302,
        "A still honours a session logged out on B"
    );
    assert_eq!(
        dash.seen().len(),
        seen,
        "the dashboard saw the logged-out request"
    );

    for (served, _) in replicas {
        assert_eq!(terminate(served).await.code(), Some(0));
    }
}
