//! ScimStore and ScimApi: the demo dashboard's in-memory SCIM 2.0 admin API (RFC 7643 Users,
//! RFC 7644 protocol) that the gateway provisions first-time users into.
//!
//! Speaks what samlgate's SCIM client sends: `GET /Users?filter=userName eq "…"` (RFC 7644
//! §3.4.2.2) → ListResponse; `POST /Users` → 201, or 409 `uniqueness` on a duplicate userName
//! (§3.3); `GET` and `PUT /Users/{id}` (§3.4.1, §3.5.1); every call needs the bearer token.

use std::sync::{Arc, Mutex, MutexGuard};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::{random_hex, read_body};
use crate::body::{Body, full};

/// The base path of the API on the dashboard's listener.
pub const BASE_PATH: &str = "/scim/v2";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// The largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// The users of the demo dashboard, shared by the SCIM API and the dashboard page.
#[derive(Clone, Default)]
pub struct ScimStore {
    users: Arc<Mutex<Vec<Value>>>,
}

impl std::fmt::Debug for ScimStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScimStore")
            .field("users", &self.lock().len())
            .finish()
    }
}

impl ScimStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The demo's starting accounts: dora (active, Demo / Viewer) and eve (deactivated).
    pub fn with_demo_accounts() -> Self {
        let store = Self::new();
        for (email, first, last, active) in [
            ("dora@example.com", "Dora", "Explorer", true),
            ("eve@example.com", "Eve", "Mallory", false),
        ] {
            store.insert(json!({
                "schemas": [USER_SCHEMA],
                "userName": email,
                "name": {"givenName": first, "familyName": last},
                "emails": [{"value": email, "primary": true}],
                "active": active,
                "roles": [{"value": "Viewer", "type": "permissionSet", "primary": true}],
                "entitlements": [{"value": "Demo", "type": "workspace"}],
            }));
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Value>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores a user as sent, adding `id` and `meta` (RFC 7643 §3.1); returns the stored user.
    pub fn insert(&self, mut user: Value) -> Value {
        let id = random_hex(8);
        user["id"] = json!(id);
        user["meta"] = meta(&id);
        self.lock().push(user.clone());
        user
    }

    /// Every stored user, oldest first.
    pub fn users(&self) -> Vec<Value> {
        self.lock().clone()
    }
}

fn meta(id: &str) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    json!({"resourceType": "User", "created": now, "lastModified": now,
           "location": format!("{BASE_PATH}/Users/{id}")})
}

fn user_name(u: &Value) -> Option<&str> {
    u.get("userName").and_then(Value::as_str)
}

/// RFC 7643 §2.1: userName is case-insensitive for uniqueness.
fn same_name(u: &Value, name: &str) -> bool {
    user_name(u).is_some_and(|n| n.eq_ignore_ascii_case(name))
}

/// The SCIM API over a store, guarded by a bearer token.
#[derive(Clone)]
pub struct ScimApi {
    store: ScimStore,
    token: String,
}

impl std::fmt::Debug for ScimApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScimApi").finish_non_exhaustive()
    }
}

impl ScimApi {
    /// The API over `store`, accepting `Authorization: Bearer <token>`.
    pub fn new(store: ScimStore, token: &str) -> Self {
        Self {
            store,
            token: token.to_string(),
        }
    }

    /// Answers one request whose path starts with [`BASE_PATH`].
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let expected = format!("Bearer {}", self.token);
        let sent = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if !bool::from(sent.ct_eq(expected.as_bytes())) {
            return scim_error(
                StatusCode::UNAUTHORIZED,
                None,
                "missing or wrong bearer token",
            );
        }
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let filter = req
            .uri()
            .query()
            .and_then(|q| super::form_value(q, "filter"));
        let Some(body) = read_body(req.into_body(), MAX_BODY).await else {
            return scim_error(StatusCode::PAYLOAD_TOO_LARGE, None, "body too large");
        };
        let rest = path.strip_prefix(BASE_PATH).unwrap_or("");
        let id = rest
            .strip_prefix("/Users/")
            .filter(|id| !id.is_empty() && !id.contains('/'));
        match (&method, rest, id) {
            (&Method::GET, "/Users", _) => self.list(filter.as_deref()),
            (&Method::POST, "/Users", _) => self.create(&body),
            (&Method::GET, _, Some(id)) => match self.store.lock().iter().find(|u| u["id"] == id) {
                Some(u) => scim_json(StatusCode::OK, u),
                None => scim_error(StatusCode::NOT_FOUND, None, "no such user"),
            },
            (&Method::PUT, _, Some(id)) => self.replace(id, &body),
            _ => scim_error(StatusCode::NOT_FOUND, None, "no such endpoint"),
        }
    }

    fn list(&self, filter: Option<&str>) -> Response<Body> {
        let users = self.store.lock();
        let matching: Vec<&Value> = match filter {
            None => users.iter().collect(),
            Some(f) => {
                let Some(name) = parse_user_name_filter(f) else {
                    return scim_error(
                        StatusCode::BAD_REQUEST,
                        Some("invalidFilter"),
                        "only `userName eq \"…\"` is supported",
                    );
                };
                users.iter().filter(|u| same_name(u, &name)).collect()
            }
        };
        scim_json(
            StatusCode::OK,
            &json!({"schemas": [LIST_SCHEMA], "totalResults": matching.len(), "startIndex": 1,
                    "itemsPerPage": matching.len(), "Resources": matching}),
        )
    }

    fn create(&self, body: &str) -> Response<Body> {
        let Ok(user @ Value::Object(_)) = serde_json::from_str::<Value>(body) else {
            return scim_error(
                StatusCode::BAD_REQUEST,
                Some("invalidSyntax"),
                "body is not a JSON object",
            );
        };
        let Some(name) = user_name(&user).filter(|n| !n.is_empty()) else {
            return scim_error(
                StatusCode::BAD_REQUEST,
                Some("invalidValue"),
                "userName is required",
            );
        };
        // Check and insert under one lock: two creates of one userName cannot both win.
        let mut users = self.store.lock();
        if users.iter().any(|u| same_name(u, name)) {
            return scim_error(
                StatusCode::CONFLICT,
                Some("uniqueness"),
                "userName is already taken",
            );
        }
        let mut user = user.clone();
        let id = random_hex(8);
        user["id"] = json!(id);
        user["meta"] = meta(&id);
        users.push(user.clone());
        scim_json(StatusCode::CREATED, &user)
    }

    fn replace(&self, id: &str, body: &str) -> Response<Body> {
        let Ok(mut new @ Value::Object(_)) = serde_json::from_str::<Value>(body) else {
            return scim_error(
                StatusCode::BAD_REQUEST,
                Some("invalidSyntax"),
                "body is not a JSON object",
            );
        };
        let mut users = self.store.lock();
        let Some(old) = users.iter_mut().find(|u| u["id"] == id) else {
            return scim_error(StatusCode::NOT_FOUND, None, "no such user");
        };
        // RFC 7644 §3.5.1: id and meta belong to the server.
        new["id"] = json!(id);
        new["meta"] = old["meta"].clone();
        new["meta"]["lastModified"] =
            json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        if new.get("userName").is_none() {
            new["userName"] = old["userName"].clone();
        }
        *old = new.clone();
        scim_json(StatusCode::OK, &new)
    }
}

fn scim_json(status: StatusCode, v: &Value) -> Response<Body> {
    let mut resp = Response::new(full(v.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/scim+json"),
    );
    resp
}

/// RFC 7644 §3.12 error response.
fn scim_error(status: StatusCode, scim_type: Option<&str>, detail: &str) -> Response<Body> {
    let mut v =
        json!({"schemas": [ERROR_SCHEMA], "status": status.as_u16().to_string(), "detail": detail});
    if let Some(t) = scim_type {
        v["scimType"] = json!(t);
    }
    scim_json(status, &v)
}

/// Parses `userName eq "<JSON string>"` (RFC 7644 §3.4.2.2; attribute and operator are
/// case-insensitive).
pub fn parse_user_name_filter(f: &str) -> Option<String> {
    let (attr, rest) = f.trim().split_once(char::is_whitespace)?;
    let (op, value) = rest.trim_start().split_once(char::is_whitespace)?;
    if !attr.eq_ignore_ascii_case("userName") || !op.eq_ignore_ascii_case("eq") {
        return None;
    }
    match serde_json::from_str::<Value>(value.trim()) {
        Ok(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// The workspace and permission set a stored user holds: SCIM `entitlements`/`roles`, or
/// Braze's first `appGroup`.
pub fn workspace_and_permission_set(u: &Value) -> (Option<String>, Option<String>) {
    let typed = |attr: &str, ty: &str| {
        u.get(attr)?
            .as_array()?
            .iter()
            .find(|e| e.get("type").and_then(Value::as_str) == Some(ty))
            .and_then(|e| e.get("value"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let group = u.pointer("/permissions/appGroup/0");
    let ws = typed("entitlements", "workspace").or_else(|| {
        group
            .and_then(|g| g.get("appGroupName"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let ps = typed("roles", "permissionSet").or_else(|| {
        group
            .and_then(|g| g.pointer("/appGroupPermissionSets/0/appGroupPermissionSetName"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    (ws, ps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_parses_json_string_values() {
        assert_eq!(
            parse_user_name_filter(r#"userName eq "a\"b@x.com""#).as_deref(),
            Some("a\"b@x.com")
        );
        assert_eq!(
            parse_user_name_filter(r#"USERNAME EQ "a@x.com""#).as_deref(),
            Some("a@x.com")
        );
        assert!(parse_user_name_filter(r#"emails eq "a@x.com""#).is_none());
    }

    #[test]
    fn reads_workspace_from_scim_and_braze_shapes() {
        let scim = json!({"roles": [{"value": "Admin", "type": "permissionSet"}],
                          "entitlements": [{"value": "Ops", "type": "workspace"}]});
        assert_eq!(
            workspace_and_permission_set(&scim),
            (Some("Ops".into()), Some("Admin".into()))
        );
        let braze = json!({"permissions": {"appGroup": [{"appGroupName": "W",
            "appGroupPermissionSets": [{"appGroupPermissionSetName": "P"}]}]}});
        assert_eq!(
            workspace_and_permission_set(&braze),
            (Some("W".into()), Some("P".into()))
        );
    }
}
