//! FakeScim: an in-memory SCIM 2.0 admin API (RFC 7643/7644 Users) on 127.0.0.1 port 0 that
//! records every request and can be told to misbehave.
//!
//! ```ignore
//! let scim = FakeScim::start("token").await;
//! // point provisioning.url at scim.url(), provisioning.token at "token"
//! scim.add_user("ann@example.com", true);           // preload
//! scim.set_failure(Some(503));                       // every answer 503 until None
//! scim.set_delay(Duration::from_millis(500));        // answer late
//! scim.conflict_on_next_create();                    // another replica wins the next create
//! scim.refuse_connections();                         // close the listener and every connection
//! scim.set_lookup_answer(Some((200, raw_json)));     // answer lookups with these bytes as is
//! scim.create_without_id_next();                     // the next create: stored, 201 without id
//! scim.set_create_answer_delay(Duration::from_secs(3)); // creates stored at once, answered late
//! assert_eq!(scim.creates().len(), 1);               // what was asked, in order
//! ```
//!
//! Speaks: `GET /scim/v2/Users?filter=userName eq "…"` (JSON-string compValue, attribute and
//! operator case-insensitive, value compared case-insensitively; without a filter: every user)
//! → ListResponse; `POST /scim/v2/Users` → 201 with `id` and `meta`, 409 (`scimType:
//! uniqueness`, none in the Braze flavour) on a duplicate userName (the Braze flavour also
//! answers 400 to a create without a non-empty `name.givenName` and `name.familyName`, which
//! Braze requires); `GET`/`PUT`/`DELETE /scim/v2/Users/{id}`; 401 without the bearer token; 400 for a filter it does not support.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The base path the fake serves under (`url()` includes it).
pub const BASE_PATH: &str = "/scim/v2";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

/// Which server the fake imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// RFC 7644 as written: `application/scim+json`, 409 with `scimType: uniqueness`.
    Rfc7644,
    /// Braze's dashboard-user API: `application/json`, 409 without `scimType`.
    Braze,
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: Method,
    /// The path, e.g. `/scim/v2/Users`.
    pub path: String,
    /// The raw (percent-encoded) query, if any.
    pub query: Option<String>,
    /// The decoded `filter` query parameter, if any.
    pub filter: Option<String>,
    /// Every header as sent.
    pub headers: HeaderMap,
    /// The body parsed as JSON (`Null` when empty or not JSON).
    pub body: Value,
}

impl Recorded {
    /// A header's value as a string ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

struct State {
    token: String,
    flavor: Flavor,
    users: Vec<Value>,
    next_id: u64,
    requests: Vec<Recorded>,
    failure: Option<u16>,
    delay: Duration,
    conflict_next_create: bool,
    lookup_answer: Option<(u16, String)>,
    create_without_id_next: bool,
    create_answer_delay: Duration,
}

/// A running fake SCIM server; stops when dropped.
pub struct FakeScim {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Drop for FakeScim {
    fn drop(&mut self) {
        self.refuse_connections();
    }
}

impl FakeScim {
    /// Starts an RFC 7644 fake that accepts `Authorization: Bearer <token>`.
    pub async fn start(token: &str) -> FakeScim {
        Self::start_flavor(token, Flavor::Rfc7644).await
    }

    /// Starts a fake of the given flavour.
    pub async fn start_flavor(token: &str, flavor: Flavor) -> FakeScim {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake SCIM server");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State {
            token: token.to_string(),
            flavor,
            users: vec![],
            next_id: 1,
            requests: vec![],
            failure: None,
            delay: Duration::ZERO,
            conflict_next_create: false,
            lookup_answer: None,
            create_without_id_next: false,
            create_answer_delay: Duration::ZERO,
        }));
        let (stop, stop_rx) = watch::channel(false);
        let accept_state = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = accept_state.clone();
                let mut stop_rx = stop_rx.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = stop_rx.changed() => {}
                    }
                });
            }
        });
        FakeScim {
            addr,
            state,
            stop,
            accept,
        }
    }

    /// The SCIM base URL, e.g. `http://127.0.0.1:41234/scim/v2` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}{BASE_PATH}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// The lookups (`GET /Users` with a filter) received so far.
    pub fn lookups(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == Method::GET && r.path.ends_with("/Users"))
            .collect()
    }

    /// The creates (`POST /Users`) received so far.
    pub fn creates(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == Method::POST)
            .collect()
    }

    /// The replaces (`PUT /Users/{id}`) received so far.
    pub fn replaces(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == Method::PUT)
            .collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    /// Answers every request with this status (and a SCIM error body) until set to `None`.
    pub fn set_failure(&self, status: Option<u16>) {
        self.state().failure = status;
    }

    /// Waits this long before answering each request.
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// Closes the listener and every open connection: from now on connections are refused.
    pub fn refuse_connections(&self) {
        self.accept.abort();
        let _ = self.stop.send(true);
    }

    /// The next create behaves as if another replica had created the user a moment earlier:
    /// the user is stored, then 409 is answered.
    pub fn conflict_on_next_create(&self) {
        self.state().conflict_next_create = true;
    }

    /// Answers every lookup (`GET /Users`) with this status and these bytes as they are (a
    /// server's own spelling, an odd `active`, an oversized list), until set to `None`.
    pub fn set_lookup_answer(&self, answer: Option<(u16, String)>) {
        self.state().lookup_answer = answer;
    }

    /// The next create stores the user as usual but answers 201 with the resource minus its `id`.
    pub fn create_without_id_next(&self) {
        self.state().create_without_id_next = true;
    }

    /// Creates are carried out at once, but their answer is held back this long (a create that
    /// times out at the client although the account exists).
    pub fn set_create_answer_delay(&self, delay: Duration) {
        self.state().create_answer_delay = delay;
    }

    /// Stores a user resource as is (an `id` and `meta` are added when missing); returns its id.
    pub fn preload(&self, mut user: Value) -> String {
        let mut st = self.state();
        let id = user
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| st.new_id());
        user["id"] = json!(id);
        if user.get("meta").is_none() {
            user["meta"] = meta(&id);
        }
        st.users.push(user);
        id
    }

    /// Preloads a plain core User with this userName and `active`; returns its id.
    pub fn add_user(&self, user_name: &str, active: bool) -> String {
        self.preload(json!({
            "schemas": [USER_SCHEMA],
            "userName": user_name,
            "name": {"givenName": "Pre", "familyName": "Loaded"},
            "emails": [{"value": user_name, "primary": true}],
            "active": active,
        }))
    }

    /// Sets `active` on the user with this userName (case-insensitive).
    pub fn set_active(&self, user_name: &str, active: bool) {
        let mut st = self.state();
        if let Some(u) = st.users.iter_mut().find(|u| same_name(u, user_name)) {
            u["active"] = json!(active);
        }
    }

    /// The stored user with this userName (case-insensitive).
    pub fn user(&self, user_name: &str) -> Option<Value> {
        self.state()
            .users
            .iter()
            .find(|u| same_name(u, user_name))
            .cloned()
    }

    /// Every stored user.
    pub fn users(&self) -> Vec<Value> {
        self.state().users.clone()
    }
}

impl State {
    fn new_id(&mut self) -> String {
        let id = format!("u-{:04}", self.next_id);
        self.next_id += 1;
        id
    }
}

fn meta(id: &str) -> Value {
    json!({"resourceType": "User", "created": "2024-01-01T00:00:00Z", "lastModified": "2024-01-01T00:00:00Z",
           "location": format!("{BASE_PATH}/Users/{id}"), "version": "W/\"1\""})
}

fn same_name(u: &Value, name: &str) -> bool {
    u.get("userName")
        .and_then(Value::as_str)
        .is_some_and(|n| n.to_lowercase() == name.to_lowercase())
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let query = parts.uri.query().map(str::to_string);
    let filter = query.as_deref().and_then(|q| query_param(q, "filter"));
    let recorded = Recorded {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query,
        filter: filter.clone(),
        headers: parts.headers.clone(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    };
    let (delay, flavor) = {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.requests.push(recorded.clone());
        (st.delay, st.flavor)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (status, body, answer_delay) = {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        let is_lookup = recorded.method == Method::GET
            && recorded.path == format!("{BASE_PATH}/Users")
            && authorized(&st, &recorded);
        match st.lookup_answer.clone() {
            Some((code, raw)) if is_lookup => (
                StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
                raw,
                Duration::ZERO,
            ),
            _ => {
                let (status, body) = answer(&mut st, &recorded);
                let after = if recorded.method == Method::POST {
                    st.create_answer_delay
                } else {
                    Duration::ZERO
                };
                (status, body.to_string(), after)
            }
        }
    };
    if !answer_delay.is_zero() {
        tokio::time::sleep(answer_delay).await;
    }
    let media = if flavor == Flavor::Braze {
        "application/json"
    } else {
        "application/scim+json"
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(media),
    );
    Ok(resp)
}

fn error(status: StatusCode, scim_type: Option<&str>, detail: &str) -> (StatusCode, Value) {
    let mut v =
        json!({"schemas": [ERROR_SCHEMA], "status": status.as_u16().to_string(), "detail": detail});
    if let Some(t) = scim_type {
        v["scimType"] = json!(t);
    }
    (status, v)
}

fn authorized(st: &State, req: &Recorded) -> bool {
    req.header("authorization") == format!("Bearer {}", st.token)
}

fn answer(st: &mut State, req: &Recorded) -> (StatusCode, Value) {
    if !authorized(st, req) {
        return error(
            StatusCode::UNAUTHORIZED,
            None,
            "missing or wrong bearer token",
        );
    }
    if let Some(code) = st.failure {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return error(status, None, "failure switched on");
    }
    let Some(rest) = req.path.strip_prefix(BASE_PATH) else {
        return error(StatusCode::NOT_FOUND, None, "no such endpoint");
    };
    let id = rest.strip_prefix("/Users/").map(percent_decode);
    match (&req.method, rest, id) {
        (&Method::GET, "/Users", _) => list(st, req.filter.as_deref()),
        (&Method::POST, "/Users", _) => create(st, &req.body),
        (&Method::GET, _, Some(id)) => match st.users.iter().find(|u| u["id"] == json!(id)) {
            Some(u) => (StatusCode::OK, u.clone()),
            None => error(StatusCode::NOT_FOUND, None, "no such user"),
        },
        (&Method::PUT, _, Some(id)) => {
            let Some(u) = st.users.iter_mut().find(|u| u["id"] == json!(id)) else {
                return error(StatusCode::NOT_FOUND, None, "no such user");
            };
            let mut new = req.body.clone();
            if !new.is_object() {
                return error(
                    StatusCode::BAD_REQUEST,
                    Some("invalidSyntax"),
                    "body is not a JSON object",
                );
            }
            // RFC 7644 §3.5.1: id and meta are the server's; userName kept when not sent (Braze).
            new["id"] = json!(id);
            new["meta"] = u["meta"].clone();
            if new.get("userName").is_none() {
                new["userName"] = u["userName"].clone();
            }
            *u = new;
            (StatusCode::OK, u.clone())
        }
        (&Method::DELETE, _, Some(id)) => {
            let before = st.users.len();
            st.users.retain(|u| u["id"] != json!(id));
            if st.users.len() == before {
                error(StatusCode::NOT_FOUND, None, "no such user")
            } else {
                (StatusCode::NO_CONTENT, Value::Null)
            }
        }
        _ => error(StatusCode::NOT_FOUND, None, "no such endpoint"),
    }
}

fn list(st: &State, filter: Option<&str>) -> (StatusCode, Value) {
    let matching: Vec<Value> = match filter {
        None => st.users.clone(),
        Some(f) => {
            let Some(name) = parse_user_name_filter(f) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    Some("invalidFilter"),
                    "only `userName eq \"…\"` is supported",
                );
            };
            st.users
                .iter()
                .filter(|u| same_name(u, &name))
                .cloned()
                .collect()
        }
    };
    (
        StatusCode::OK,
        json!({"schemas": [LIST_SCHEMA], "totalResults": matching.len(), "startIndex": 1,
               "itemsPerPage": matching.len(), "Resources": matching}),
    )
}

fn create(st: &mut State, body: &Value) -> (StatusCode, Value) {
    let Some(name) = body
        .get("userName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
            "userName is required",
        );
    };
    let uniqueness = if st.flavor == Flavor::Braze {
        None
    } else {
        Some("uniqueness")
    };
    if st.flavor == Flavor::Braze {
        let part = |p: &str| {
            body.get("name")
                .and_then(|n| n.get(p))
                .and_then(Value::as_str)
                .is_some_and(|s| !s.trim().is_empty())
        };
        if !part("givenName") || !part("familyName") {
            return error(
                StatusCode::BAD_REQUEST,
                None,
                "name.givenName and name.familyName are required",
            );
        }
    }
    if std::mem::take(&mut st.conflict_next_create) {
        let mut other = body.clone();
        let id = st.new_id();
        other["id"] = json!(id);
        other["meta"] = meta(&id);
        st.users.push(other);
        return error(
            StatusCode::CONFLICT,
            uniqueness,
            "userName is already taken (by another replica)",
        );
    }
    if st.users.iter().any(|u| same_name(u, name)) {
        return error(
            StatusCode::CONFLICT,
            uniqueness,
            "userName is already taken",
        );
    }
    let mut user = body.clone();
    let id = st.new_id();
    user["id"] = json!(id);
    user["meta"] = meta(&id);
    st.users.push(user.clone());
    if std::mem::take(&mut st.create_without_id_next)
        && let Some(obj) = user.as_object_mut()
    {
        obj.remove("id");
    }
    (StatusCode::CREATED, user)
}

/// Parses `userName eq "<JSON string>"` (RFC 7644 §3.4.2.2): the same parser the demo's
/// admin API uses.
pub use samlgate::demo::scim::parse_user_name_filter;

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(&v.replace('+', " ")))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
