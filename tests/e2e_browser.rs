//! End to end in a real browser: headless Debian Chromium, driven over W3C WebDriver by
//! chromedriver, walks through `samlgate demo` (the built binary, on free ports): the dashboard
//! sends it to the dev IdP → a new user signs in → the dashboard shows the injected identity
//! headers and the account created just in time → sign out → a protected page sends it back to
//! the IdP. A screenshot of each step lands in `<target>/e2e/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`bash scripts/install-deps.sh e2e`, which
//! `make test` runs). Without them this test fails; it never skips.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::webdriver::{Driver, Session};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const STEP: Duration = Duration::from_secs(20);

/// `<target dir>/e2e`, next to the binary under test (honours CARGO_TARGET_DIR).
fn e2e_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_samlgate"));
    let target = bin.parent().and_then(Path::parent).unwrap();
    let dir = target.join("e2e");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `samlgate demo` as a child process on free ports; killed when dropped.
struct Demo {
    child: Child,
    gateway: String,
    idp: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    fn start(log: &Path) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_samlgate"))
            .args([
                "demo",
                "--port",
                "0",
                "--admin-port",
                "0",
                "--idp-port",
                "0",
                "--dashboard-port",
                "0",
            ])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut gateway, mut idp) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = String::new();
        while gateway.is_none() || idp.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                panic!("samlgate demo did not print its URLs:\n{seen}");
            };
            seen.push_str(&line);
            seen.push('\n');
            let url = || {
                line.split_whitespace()
                    .find(|w| w.starts_with("http://"))
                    .map(|u| u.trim_end_matches('/').to_string())
            };
            if line.trim_start().starts_with("Open:") {
                gateway = url();
            } else if line.contains("development IdP") {
                idp = url().map(|u| u.trim_end_matches("/sso").to_string());
            }
        }
        assert!(seen.contains("DEMO — not for production"), "{seen}");
        // Keep draining stdout so the demo never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Demo {
            child,
            gateway: gateway.unwrap(),
            idp: idp.unwrap(),
        }
    }

    /// SIGINT, then the exit status (the contract: 0 on SIGINT).
    fn interrupt(mut self) -> Option<i32> {
        let ok = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -INT failed");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "demo did not stop on SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn shot(session: &Session, dir: &Path, name: &str) {
    session.screenshot(&dir.join(name)).await;
}

/// Waits until the condition on the current URL holds.
async fn wait_url(session: &Session, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + STEP;
    loop {
        let url = session.current_url().await;
        if ok(&url) {
            return url;
        }
        assert!(
            Instant::now() < deadline,
            "expected {what}, still at {url}:\n{}",
            session.source().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_signs_in_through_the_demo_in_a_real_browser() {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: install Debian's {package} with `bash scripts/install-deps.sh e2e` \
             (make test does). This test fails rather than skips without a browser."
        );
    }
    let started = Instant::now();
    let dir = e2e_dir();
    for old in std::fs::read_dir(&dir).unwrap().flatten() {
        if old.path().extension().is_some_and(|e| e == "png") {
            let _ = std::fs::remove_file(old.path());
        }
    }
    let demo = Demo::start(&dir.join("demo.log"));
    let driver = Driver::start(Path::new(CHROMEDRIVER), &dir.join("chromedriver.log")).await;
    let profile = tempfile::tempdir().unwrap();
    let session = driver
        .session(json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }))
        .await;
    let gw = demo.gateway.clone();
    let idp = demo.idp.clone();

    // 1. The dashboard, without a session, sends the browser to the dev IdP's sign-in form.
    session.goto(&format!("{gw}/")).await;
    session.wait_for("#new-user", STEP).await;
    let at = session.current_url().await;
    assert!(
        at.starts_with(&format!("{idp}/sso?SAMLRequest=")),
        "not at the IdP: {at}"
    );
    assert!(
        session.find("#demo-banner").await.is_some(),
        "no demo banner"
    );
    shot(&session, &dir, "01-idp-sign-in-form.png").await;

    // 2. A user the dashboard has never seen fills in the form.
    let email = "grace.hopper@example.com";
    for (field, value) in [
        ("#email", email),
        ("#first_name", "Grace"),
        ("#last_name", "Hopper"),
        ("#groups", "admins, engineering"),
    ] {
        let input = session.wait_for(field, STEP).await;
        session.type_into(&input, value).await;
    }
    shot(&session, &dir, "02-idp-form-filled.png").await;
    let submit = session.find("#sign-in").await.unwrap();
    session.click(&submit).await;

    // 3. Signed response → ACS → 303 → the dashboard, which shows the injected headers.
    let headers = session.wait_for("#identity-headers", STEP).await;
    wait_url(&session, "the dashboard at the gateway", |u| {
        u == format!("{gw}/")
    })
    .await;
    let text = session.text(&headers).await;
    for (name, value) in [
        ("X-Forwarded-Email", email),
        ("X-Forwarded-Name", "Grace Hopper"),
        ("X-Forwarded-Groups", "admins,engineering"),
        ("X-Forwarded-Workspace", "Operations"),
        ("X-Forwarded-Permission-Set", "Admin"),
    ] {
        assert!(
            text.lines().any(|l| l.contains(name) && l.contains(value)),
            "{name}: {value} not shown:\n{text}"
        );
    }
    assert!(
        session.find("#demo-banner").await.is_some(),
        "no demo banner"
    );
    let cookies = session.cookies().await;
    assert!(
        cookies.iter().any(|c| c["name"] == "samlgate"),
        "no session cookie: {cookies:?}"
    );
    shot(&session, &dir, "03-dashboard-identity-headers.png").await;

    // 4. The account samlgate created over SCIM is listed (and is the signed-in user's).
    let mine = session.wait_for("#accounts tr.me", STEP).await;
    let row = session.text(&mine).await;
    for want in [email, "Grace Hopper", "Operations", "Admin", "yes"] {
        assert!(row.contains(want), "account row lacks {want}: {row}");
    }
    let user_id = text
        .lines()
        .find(|l| l.contains("X-Forwarded-User"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .to_string();
    assert!(row.contains(&user_id), "row {row} is not user {user_id}");
    let accounts = session.find("#accounts").await.unwrap();
    session
        .element_screenshot(&accounts, &dir.join("04-accounts-with-new-user.png"))
        .await;

    // 5. Sign out: the session cookie is gone.
    let sign_out = session.find("#sign-out").await.unwrap();
    session.click(&sign_out).await;
    let deadline = Instant::now() + STEP;
    while session
        .cookies()
        .await
        .iter()
        .any(|c| c["name"] == "samlgate")
    {
        assert!(Instant::now() < deadline, "still signed in after sign-out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_url(&session, "the sign-out answer", |u| u != format!("{gw}/")).await;
    shot(&session, &dir, "05-signed-out.png").await;

    // 6. A protected page now sends the browser back to the IdP.
    session.goto(&format!("{gw}/reports?month=may")).await;
    session.wait_for("#new-user", STEP).await;
    let at = session.current_url().await;
    assert!(
        at.starts_with(&format!("{idp}/sso?")),
        "not back at the IdP: {at}"
    );
    shot(&session, &dir, "06-protected-page-back-at-idp.png").await;

    session.quit().await;
    drop(driver);
    assert_eq!(
        demo.interrupt(),
        Some(0),
        "samlgate demo must exit 0 on SIGINT"
    );
    eprintln!(
        "e2e: 6 steps in {:.1}s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
}
