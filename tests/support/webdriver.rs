//! A small W3C WebDriver client (JSON over HTTP, https://www.w3.org/TR/webdriver2/) on hyper,
//! enough to drive chromedriver: sessions, navigation, elements, clicks, typing, screenshots.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// The key under which WebDriver returns an element reference (WebDriver §12.1).
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver error: the `error` code and `message` of the answer (WebDriver §6.6).
#[derive(Debug)]
pub struct WdError {
    pub status: u16,
    pub error: String,
    pub message: String,
}

/// A chromedriver child process; killed when dropped.
pub struct Driver {
    pub child: Child,
    pub url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// Starts `chromedriver` on a free loopback port and waits until `/status` says ready.
    pub async fn start(chromedriver: &Path, log: &Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(v) = call(&driver.url, Method::GET, "/status", None).await
                && v["ready"] == json!(true)
            {
                return driver;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens a browser session with these capabilities (WebDriver §8.1 New Session).
    pub async fn session(&self, capabilities: Value) -> Session {
        let v = call(
            &self.url,
            Method::POST,
            "/session",
            Some(json!({"capabilities": {"alwaysMatch": capabilities}})),
        )
        .await
        .unwrap_or_else(|e| panic!("new session failed: {e:?}"));
        Session {
            base: format!("{}/session/{}", self.url, v["sessionId"].as_str().unwrap()),
        }
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// One WebDriver command: `value` of the answer, or the error it carries.
async fn call(
    base: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, WdError> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = client().request(req).await.map_err(|e| WdError {
        status: 0,
        error: "transport".into(),
        message: e.to_string(),
    })?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let value = v.get("value").cloned().unwrap_or(Value::Null);
    if status >= 400 {
        return Err(WdError {
            status,
            error: value["error"].as_str().unwrap_or("").into(),
            message: value["message"].as_str().unwrap_or("").into(),
        });
    }
    Ok(value)
}

/// A browser session.
pub struct Session {
    base: String,
}

/// An element reference.
pub struct Element {
    id: String,
}

impl Session {
    async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, WdError> {
        call(&self.base, method, path, body).await
    }

    /// Navigates to `url` (WebDriver §10.1).
    pub async fn goto(&self, url: &str) {
        self.cmd(Method::POST, "/url", Some(json!({"url": url})))
            .await
            .unwrap_or_else(|e| panic!("navigate to {url}: {e:?}"));
    }

    /// The current URL (WebDriver §10.2), as a string.
    pub async fn current_url(&self) -> String {
        self.cmd(Method::GET, "/url", None)
            .await
            .unwrap()
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// The page title.
    pub async fn title(&self) -> String {
        self.cmd(Method::GET, "/title", None)
            .await
            .unwrap()
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// The page source as the browser serialises it.
    pub async fn source(&self) -> String {
        self.cmd(Method::GET, "/source", None)
            .await
            .unwrap()
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// The first element matching a CSS selector, if any (WebDriver §12.3.2).
    pub async fn find(&self, css: &str) -> Option<Element> {
        let v = self
            .cmd(
                Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .ok()?;
        Some(Element {
            id: v[ELEMENT_KEY].as_str()?.to_string(),
        })
    }

    /// Waits (up to `timeout`) for an element matching `css`; panics with the URL and page
    /// source when none appears.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            if Instant::now() > deadline {
                panic!(
                    "no `{css}` after {timeout:?} at {}:\n{}",
                    self.current_url().await,
                    self.source().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `text` into an element (WebDriver §12.5.3).
    pub async fn type_into(&self, e: &Element, text: &str) {
        self.cmd(
            Method::POST,
            &format!("/element/{}/value", e.id),
            Some(json!({"text": text})),
        )
        .await
        .unwrap_or_else(|err| panic!("typing failed: {err:?}"));
    }

    /// Clicks an element (WebDriver §12.5.1).
    pub async fn click(&self, e: &Element) {
        self.cmd(
            Method::POST,
            &format!("/element/{}/click", e.id),
            Some(json!({})),
        )
        .await
        .unwrap_or_else(|err| panic!("click failed: {err:?}"));
    }

    /// An element's rendered text.
    pub async fn text(&self, e: &Element) -> String {
        self.cmd(Method::GET, &format!("/element/{}/text", e.id), None)
            .await
            .unwrap()
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Saves a PNG of the viewport (WebDriver §17.1).
    pub async fn screenshot(&self, path: &Path) {
        let v = self.cmd(Method::GET, "/screenshot", None).await.unwrap();
        save_png(&v, path);
    }

    /// Saves a PNG of one element, scrolled into view (WebDriver §17.2).
    pub async fn element_screenshot(&self, e: &Element, path: &Path) {
        let v = self
            .cmd(Method::GET, &format!("/element/{}/screenshot", e.id), None)
            .await
            .unwrap();
        save_png(&v, path);
    }

    /// The browser's cookies (WebDriver §14.1).
    pub async fn cookies(&self) -> Vec<Value> {
        self.cmd(Method::GET, "/cookie", None)
            .await
            .unwrap()
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Ends the session and closes the browser.
    pub async fn quit(&self) {
        let _ = self.cmd(Method::DELETE, "", None).await;
    }
}

fn save_png(v: &Value, path: &Path) {
    let png = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    std::fs::write(path, png).unwrap();
}
