//! Two gateway replicas sharing one real Redis, black-box: a session made on A works on B,
//! a logout on B is refused on A at once, a login started on A finishes on B, a response
//! accepted by A is refused by B, and Redis going away gives 503 pages until it returns —
//! without restarting samlgate.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::gateway::Opts;
use support::local::{OwnRedis, free_port};
use support::sso::{Browser, Sso, sets_session};

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
