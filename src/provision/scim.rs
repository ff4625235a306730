//! The SCIM 2.0 wire format (RFC 7643/7644) as samlgate speaks it to the dashboard's admin API:
//! look a user up by `userName`, create one, replace one; and where each payload shape puts the
//! workspace and permission set.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use serde_json::{Map, Value, json};

use crate::config::{Payload, TEMPLATE_PLACEHOLDERS};

/// RFC 7643 §8.7.1: the core User schema URI.
pub(crate) const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// RFC 7644 §3.4.2: the media type of SCIM requests and responses.
const SCIM_MEDIA_TYPE: &str = "application/scim+json";
/// Admin-API answers larger than this are refused (a user or a one-user list is a few KiB).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Why one admin-API call failed. Carries no secret: the bearer token is never part of it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScimError {
    /// No complete answer within the call's time budget.
    #[error("no answer within the timeout")]
    Timeout,
    /// Connection refused, reset, TLS failure, ...
    #[error("transport error: {0}")]
    Transport(String),
    /// An HTTP status the operation does not expect.
    #[error("HTTP {status}{}", .detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status {
        /// The status code.
        status: u16,
        /// The SCIM error `detail`, when the body held one (RFC 7644 §3.12).
        detail: Option<String>,
    },
    /// 409 on create: the user already exists (RFC 7644 §3.3).
    #[error("HTTP 409: the user already exists")]
    Conflict,
    /// An answer that is not the SCIM resource it should be.
    #[error("unexpected answer: {0}")]
    BadResponse(String),
    /// An answer over [`MAX_RESPONSE_BYTES`]: refused unread, not retried.
    #[error("the answer is too large (over {} KiB); refused", MAX_RESPONSE_BYTES / 1024)]
    TooLarge,
    /// A lookup listed several users whose `userName` equals the one asked for case-insensitively
    /// and none (or more than one) exactly: the dashboard's data is ambiguous, samlgate does not
    /// guess which account is meant.
    #[error(
        "{0} users have this userName case-insensitively and not exactly one has it exactly; refusing to guess"
    )]
    Ambiguous(usize),
    /// The payload template did not fill into JSON.
    #[error("the payload template does not fill into JSON: {0}")]
    Template(String),
}

impl ScimError {
    /// Whether trying the same idempotent call again may help: transport errors, 5xx and 429.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// Whether a create that failed this way may still have been carried out by the server
    /// (its answer was lost, late, cut or unusable), so that a lookup is due before giving up.
    pub(crate) fn create_may_have_happened(&self) -> bool {
        match self {
            Self::Timeout | Self::Transport(_) | Self::BadResponse(_) | Self::TooLarge => true,
            Self::Status { status, .. } => *status >= 500,
            Self::Conflict | Self::Ambiguous(_) | Self::Template(_) => false,
        }
    }
}

/// A dashboard user as the admin API returned it, with the fields samlgate reads.
#[derive(Clone, Debug)]
pub(crate) struct ScimUser {
    /// The SCIM `id`.
    pub id: String,
    /// `active`; absent means active (Braze has no such attribute).
    pub active: bool,
    /// `name.givenName`.
    pub given_name: Option<String>,
    /// `name.familyName`.
    pub family_name: Option<String>,
    /// The workspace, read back from where the payload shape puts it.
    pub workspace: Option<String>,
    /// The permission set, read back from where the payload shape puts it.
    pub permission_set: Option<String>,
    /// The whole resource, the base of a PUT.
    pub raw: Value,
}

/// What a create (or a sync) sends.
#[derive(Clone, Debug)]
pub(crate) struct NewUser<'a> {
    /// `userName` and the primary email.
    pub email: &'a str,
    /// The NameID, kept in `externalId`.
    pub external_id: &'a str,
    /// `name.givenName`.
    pub given_name: Option<&'a str>,
    /// `name.familyName`.
    pub family_name: Option<&'a str>,
    /// The asserted groups (template `{{groups}}`, comma-separated).
    pub groups: &'a [std::sync::Arc<str>],
    /// The chosen workspace.
    pub workspace: &'a str,
    /// The chosen permission set.
    pub permission_set: &'a str,
}

// ---------------------------------------------------------------------------------------------
// Payload shapes
// ---------------------------------------------------------------------------------------------

/// One step of the path to a value inside a template-shaped resource.
#[derive(Clone, Debug)]
pub(crate) enum Step {
    /// An object member.
    Key(String),
    /// An array element: the first object whose members include all `literals` (the template's
    /// fixed members, such as `"type": "workspace"`), else the element at `index`.
    Item {
        index: usize,
        literals: Vec<(String, Value)>,
    },
}

/// Where the create payload puts the workspace and permission set, compiled from [`Payload`].
#[derive(Clone, Debug)]
pub(crate) enum Shape {
    /// RFC 7643 §4.1.2 `roles` (type `permissionSet`) and `entitlements` (type `workspace`).
    Scim,
    /// Braze: `department` and `permissions.appGroup[0]`.
    Braze { department: String },
    /// A JSON template; the paths say where `{{workspace}}`/`{{permission_set}}` sit in it.
    Template {
        text: String,
        workspace: Option<Vec<Step>>,
        permission_set: Option<Vec<Step>>,
    },
}

/// The sentinel a placeholder becomes when the template is parsed to find paths.
fn sentinel(name: &str) -> String {
    format!("@@samlgate:{name}@@")
}

impl Shape {
    /// Compiles the configured payload.
    pub(crate) fn new(payload: &Payload) -> Self {
        match payload {
            Payload::Scim => Self::Scim,
            Payload::Braze { department, .. } => Self::Braze {
                department: department.clone(),
            },
            Payload::Template { text, .. } => {
                let probe = fill_template(text, &|name| sentinel(name));
                let parsed: Value = serde_json::from_str(&probe).unwrap_or(Value::Null);
                Self::Template {
                    text: text.clone(),
                    workspace: find_path(&parsed, &sentinel("workspace")),
                    permission_set: find_path(&parsed, &sentinel("permission_set")),
                }
            }
        }
    }

    /// The create body.
    pub(crate) fn create_body(&self, u: &NewUser<'_>) -> Result<Value, ScimError> {
        let mut name = Map::new();
        if let Some(g) = u.given_name {
            name.insert("givenName".into(), g.into());
        }
        if let Some(f) = u.family_name {
            name.insert("familyName".into(), f.into());
        }
        Ok(match self {
            Self::Scim => json!({
                "schemas": [USER_SCHEMA],
                "userName": u.email,
                "externalId": u.external_id,
                "name": name,
                "emails": [{"value": u.email, "type": "work", "primary": true}],
                "active": true,
                "roles": [{"value": u.permission_set, "type": "permissionSet", "primary": true}],
                "entitlements": [{"value": u.workspace, "type": "workspace"}],
            }),
            // Braze's dashboard-user API: exactly the attributes its docs list.
            Self::Braze { department } => json!({
                "schemas": [USER_SCHEMA],
                "userName": u.email,
                "name": braze_name(u.given_name, u.family_name, u.email),
                "department": department,
                "permissions": {
                    "companyPermissions": [],
                    "appGroup": [braze_app_group(u.workspace, u.permission_set)],
                },
            }),
            Self::Template { text, .. } => {
                let groups = u.groups.join(",");
                let filled = fill_template(text, &|p| {
                    json_escape(match p {
                        "email" => u.email,
                        "first_name" => u.given_name.unwrap_or_default(),
                        "last_name" => u.family_name.unwrap_or_default(),
                        "workspace" => u.workspace,
                        "permission_set" => u.permission_set,
                        "groups" => &groups,
                        _ => "",
                    })
                });
                serde_json::from_str(&filled).map_err(|e| ScimError::Template(e.to_string()))?
            }
        })
    }

    /// Reads the workspace and permission set back from a resource.
    fn read_back(&self, v: &Value) -> (Option<String>, Option<String>) {
        match self {
            Self::Scim => scim_read_back(v),
            Self::Braze { .. } => {
                let group = attr_path(v, &["permissions", "appGroup", "0"]);
                let ws = group
                    .and_then(|g| attr(g, "appGroupName"))
                    .and_then(as_string);
                let ps = group
                    .and_then(|g| {
                        attr_path(
                            g,
                            &["appGroupPermissionSets", "0", "appGroupPermissionSetName"],
                        )
                    })
                    .and_then(as_string);
                (ws, ps)
            }
            Self::Template {
                workspace,
                permission_set,
                ..
            } => {
                let (scim_ws, scim_ps) = scim_read_back(v);
                let ws = workspace
                    .as_ref()
                    .map_or(scim_ws, |p| follow(v, p).and_then(as_string));
                let ps = permission_set
                    .as_ref()
                    .map_or(scim_ps, |p| follow(v, p).and_then(as_string));
                (ws, ps)
            }
        }
    }

    /// The body of a PUT that gives an existing user `u`'s names, workspace and permission set,
    /// keeping everything else the dashboard holds (RFC 7644 §3.5.1: PUT replaces the resource).
    pub(crate) fn replace_body(&self, existing: &ScimUser, u: &NewUser<'_>) -> Value {
        let mut v = existing.raw.clone();
        if let Some(obj) = v.as_object_mut() {
            obj.retain(|k, _| !k.eq_ignore_ascii_case("meta"));
        }
        set_name(&mut v, u.given_name, u.family_name);
        match self {
            Self::Scim => {
                replace_typed(
                    &mut v,
                    "roles",
                    "permissionSet",
                    json!({"value": u.permission_set, "type": "permissionSet", "primary": true}),
                );
                replace_typed(
                    &mut v,
                    "entitlements",
                    "workspace",
                    json!({"value": u.workspace, "type": "workspace"}),
                );
            }
            Self::Braze { department } => {
                // Braze's PUT takes name, department and permissions; the first appGroup entry
                // is the one read back, so ours goes first and replaces the old first entry.
                let mut groups: Vec<Value> = attr_path(&v, &["permissions", "appGroup"])
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .skip(1)
                            .filter(|g| {
                                attr(g, "appGroupName").and_then(Value::as_str) != Some(u.workspace)
                            })
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                groups.insert(0, braze_app_group(u.workspace, u.permission_set));
                let company = attr_path(&v, &["permissions", "companyPermissions"])
                    .cloned()
                    .unwrap_or_else(|| json!([]));
                let department = attr(&v, "department")
                    .cloned()
                    .unwrap_or_else(|| department.as_str().into());
                // Braze's canonical spellings; a name part still missing (neither the dashboard
                // nor the IdP has it) is filled in as on create.
                let given = attr_path(&v, &["name", "givenName"]).and_then(as_string);
                let family = attr_path(&v, &["name", "familyName"]).and_then(as_string);
                let name = braze_name(given.as_deref(), family.as_deref(), u.email);
                v = json!({
                    "schemas": [USER_SCHEMA],
                    "name": name,
                    "department": department,
                    "permissions": {"companyPermissions": company, "appGroup": groups},
                });
            }
            Self::Template {
                workspace,
                permission_set,
                ..
            } => {
                if let Some(p) = workspace {
                    set_at(&mut v, p, u.workspace);
                }
                if let Some(p) = permission_set {
                    set_at(&mut v, p, u.permission_set);
                }
                if workspace.is_none() || permission_set.is_none() {
                    // The template does not say where; fall back to the RFC 7643 places.
                    if workspace.is_none() {
                        replace_typed(
                            &mut v,
                            "entitlements",
                            "workspace",
                            json!({"value": u.workspace, "type": "workspace"}),
                        );
                    }
                    if permission_set.is_none() {
                        replace_typed(
                            &mut v,
                            "roles",
                            "permissionSet",
                            json!({"value": u.permission_set, "type": "permissionSet", "primary": true}),
                        );
                    }
                }
            }
        }
        v
    }

    /// Parses a user resource.
    fn user(&self, v: Value) -> Result<ScimUser, ScimError> {
        let id = match attr(&v, "id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(ScimError::BadResponse("a user without an id".into())),
        };
        let active = read_active(&v, &id);
        let given_name = attr_path(&v, &["name", "givenName"]).and_then(as_string);
        let family_name = attr_path(&v, &["name", "familyName"]).and_then(as_string);
        let (workspace, permission_set) = self.read_back(&v);
        Ok(ScimUser {
            id,
            active,
            given_name,
            family_name,
            workspace,
            permission_set,
            raw: v,
        })
    }
}

/// Braze requires both `givenName` and `familyName`: a part the IdP did not send (or sent
/// blank) becomes the email's local part (docs/provisioning/braze.md).
fn braze_name(given: Option<&str>, family: Option<&str>, email: &str) -> Value {
    let local = email.rsplit_once('@').map_or(email, |(local, _)| local);
    let or_local = |part: Option<&str>| {
        part.filter(|p| !p.trim().is_empty())
            .unwrap_or(local)
            .to_string()
    };
    json!({"givenName": or_local(given), "familyName": or_local(family)})
}

fn braze_app_group(workspace: &str, permission_set: &str) -> Value {
    json!({"appGroupName": workspace, "appGroupPermissionSets": [{"appGroupPermissionSetName": permission_set}]})
}

fn scim_read_back(v: &Value) -> (Option<String>, Option<String>) {
    (
        typed_value(v, "entitlements", "workspace", false),
        typed_value(v, "roles", "permissionSet", true),
    )
}

/// The `value` of the multi-valued attribute `attr`'s entry of `type` (RFC 7643 §2.4), the
/// primary one first when `prefer_primary`.
fn typed_value(v: &Value, attr: &str, ty: &str, prefer_primary: bool) -> Option<String> {
    let items = self::attr(v, attr)?.as_array()?;
    let of_type = |i: &&Value| {
        self::attr(i, "type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case(ty))
    };
    let primary = |i: &&Value| self::attr(i, "primary").and_then(Value::as_bool) == Some(true);
    let pick = if prefer_primary {
        items.iter().filter(of_type).find(primary)
    } else {
        None
    };
    pick.or_else(|| items.iter().find(of_type))
        .and_then(|i| self::attr(i, "value"))
        .and_then(as_string)
}

/// Replaces every entry of `type` in the multi-valued `attr` by `entry`, keeping the others.
/// The attribute keeps the spelling the server gave it.
fn replace_typed(v: &mut Value, attr: &str, ty: &str, entry: Value) {
    let Some(obj) = v.as_object_mut() else { return };
    let key = attr_key(obj, attr).unwrap_or_else(|| attr.to_string());
    let mut items: Vec<Value> = obj
        .get(&key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|i| {
                    !self::attr(i, "type")
                        .and_then(Value::as_str)
                        .is_some_and(|t| t.eq_ignore_ascii_case(ty))
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    items.insert(0, entry);
    obj.insert(key, Value::Array(items));
}

/// Sets `name.givenName`/`name.familyName` where given, under the spellings the server used.
fn set_name(v: &mut Value, given: Option<&str>, family: Option<&str>) {
    let Some(obj) = v.as_object_mut() else { return };
    let key = attr_key(obj, "name").unwrap_or_else(|| "name".to_string());
    let name = obj.entry(key).or_insert_with(|| json!({}));
    if let Some(name) = name.as_object_mut() {
        for (sub, value) in [("givenName", given), ("familyName", family)] {
            if let Some(value) = value {
                let key = attr_key(name, sub).unwrap_or_else(|| sub.to_string());
                name.insert(key, value.into());
            }
        }
    }
}

fn as_string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

// RFC 7643 §2.1: "Attribute names are case insensitive". Every attribute samlgate reads from an
// admin-API answer is read through these, the exact spelling first.

/// The member of object `v` named `name` in any case (the exact spelling preferred).
pub(crate) fn attr<'v>(v: &'v Value, name: &str) -> Option<&'v Value> {
    let obj = v.as_object()?;
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, x)| x)
    })
}

/// [`attr`], mutable.
fn attr_mut<'v>(v: &'v mut Value, name: &str) -> Option<&'v mut Value> {
    let obj = v.as_object_mut()?;
    let key = attr_key(obj, name)?;
    obj.get_mut(&key)
}

/// The spelling under which object `obj` holds `name` (the exact one preferred).
fn attr_key(obj: &Map<String, Value>, name: &str) -> Option<String> {
    if obj.contains_key(name) {
        return Some(name.to_string());
    }
    obj.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

/// Follows `path` through objects (names, case-insensitively) and arrays (decimal indexes).
fn attr_path<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(v, |cur, step| match cur {
        Value::Array(a) => a.get(step.parse::<usize>().ok()?),
        _ => attr(cur, step),
    })
}

/// What an `active` value says.
#[derive(Debug, PartialEq, Eq)]
enum Activeness {
    Active,
    Inactive,
    /// Neither a boolean, "true"/"false" nor 1/0: the JSON type, for the log.
    Unreadable(&'static str),
}

/// RFC 7643 §4.1.1 `active` is a boolean; servers also send "true"/"false" (any case) and 1/0.
fn activeness(v: &Value) -> Activeness {
    match v {
        Value::Bool(true) => Activeness::Active,
        Value::Bool(false) => Activeness::Inactive,
        Value::String(s) if s.eq_ignore_ascii_case("true") => Activeness::Active,
        Value::String(s) if s.eq_ignore_ascii_case("false") => Activeness::Inactive,
        Value::Number(n) if n.as_f64() == Some(1.0) => Activeness::Active,
        Value::Number(n) if n.as_f64() == Some(0.0) => Activeness::Inactive,
        Value::String(_) => Activeness::Unreadable("string"),
        Value::Number(_) => Activeness::Unreadable("number"),
        Value::Array(_) => Activeness::Unreadable("array"),
        Value::Object(_) => Activeness::Unreadable("object"),
        Value::Null => Activeness::Unreadable("null"),
    }
}

/// Whether user resource `v` (with SCIM id `id`) is active, failing closed: absent (Braze has no
/// such attribute) or `null` (RFC 7643 §2.5: the same as unassigned) is active; a value that is
/// not understood, or several spellings of `active` of which one is not active, is inactive.
fn read_active(v: &Value, id: &str) -> bool {
    let Some(obj) = v.as_object() else {
        return true;
    };
    let mut active = true;
    for (_, value) in obj
        .iter()
        .filter(|(k, x)| k.eq_ignore_ascii_case("active") && !x.is_null())
    {
        match activeness(value) {
            Activeness::Active => {}
            Activeness::Inactive => active = false,
            Activeness::Unreadable(json_type) => {
                tracing::warn!(user_id = %id, json_type,
                    "the admin API gave the user an `active` value that is neither a boolean, \"true\"/\"false\" nor 1/0; treating the user as inactive");
                active = false;
            }
        }
    }
    active
}

/// `s` as the inside of a JSON string literal (RFC 8259 §7).
fn json_escape(s: &str) -> String {
    let quoted = Value::String(s.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

/// Replaces each `{{ name }}` with `value(name)`; unknown names (refused by config) become "".
fn fill_template(text: &str, value: &dyn Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push_str(&rest[..start]);
        let name = after[..end].trim();
        if TEMPLATE_PLACEHOLDERS.contains(&name) {
            out.push_str(&value(name));
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The path to the string equal to `needle` in `v`.
fn find_path(v: &Value, needle: &str) -> Option<Vec<Step>> {
    match v {
        Value::String(s) if s == needle => Some(vec![]),
        Value::Object(m) => m.iter().find_map(|(k, child)| {
            let mut p = find_path(child, needle)?;
            p.insert(0, Step::Key(k.clone()));
            Some(p)
        }),
        Value::Array(a) => a.iter().enumerate().find_map(|(index, child)| {
            let mut p = find_path(child, needle)?;
            let literals = child
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(_, x)| {
                            matches!(x, Value::String(s) if !s.contains("@@samlgate:"))
                                || x.is_boolean()
                                || x.is_number()
                        })
                        .map(|(k, x)| (k.clone(), x.clone()))
                        .collect()
                })
                .unwrap_or_default();
            p.insert(0, Step::Item { index, literals });
            Some(p)
        }),
        _ => None,
    }
}

fn pick_item(a: &[Value], index: usize, literals: &[(String, Value)]) -> Option<usize> {
    if !literals.is_empty()
        && let Some(i) = a
            .iter()
            .position(|x| literals.iter().all(|(k, l)| attr(x, k) == Some(l)))
    {
        return Some(i);
    }
    (index < a.len()).then_some(index)
}

fn follow<'v>(v: &'v Value, path: &[Step]) -> Option<&'v Value> {
    path.iter().try_fold(v, |cur, step| match step {
        Step::Key(k) => attr(cur, k),
        Step::Item { index, literals } => {
            let a = cur.as_array()?;
            a.get(pick_item(a, *index, literals)?)
        }
    })
}

fn set_at(v: &mut Value, path: &[Step], value: &str) {
    let mut cur = v;
    for step in path {
        cur = match step {
            Step::Key(k) => match attr_mut(cur, k) {
                Some(next) => next,
                None => return,
            },
            Step::Item { index, literals } => {
                let Some(a) = cur.as_array_mut() else { return };
                let Some(i) = pick_item(a, *index, literals) else {
                    return;
                };
                &mut a[i]
            }
        };
    }
    *cur = value.into();
}

/// RFC 7644 §3.4.2.2: a filter's compValue is a JSON string, so `"` and `\` (and control
/// characters) are escaped the JSON way.
pub(crate) fn user_name_filter(user_name: &str) -> String {
    format!("userName eq {}", Value::String(user_name.to_string()))
}

/// Percent-encodes everything but RFC 3986 unreserved characters (so a space is `%20`, never `+`).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// Admin-API operation label of the latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OpLabel {
    /// `lookup`, `create` or `replace`.
    pub op: &'static str,
}

/// The pooled HTTP(S) client type.
type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Talks SCIM to one admin API: a pooled client built once, the headers compiled once.
pub(crate) struct ScimClient {
    http: HttpClient,
    base: String,
    authorization: HeaderValue,
    media_type: HeaderValue,
    /// Braze: `X-Request-Origin`, and `Content-Type` on every request (bodiless ones too).
    request_origin: Option<HeaderValue>,
    pub(crate) shape: Shape,
    pub(crate) latency: Family<OpLabel, Histogram>,
}

impl fmt::Debug for ScimClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScimClient")
            .field("base", &self.base)
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    /// The token is not a valid header value (the value itself is never shown).
    #[error("provisioning.token contains characters not allowed in an HTTP header")]
    Token,
    /// The request origin is not a valid header value.
    #[error("provisioning.braze.request_origin is not a valid HTTP header value")]
    RequestOrigin,
}

impl ScimClient {
    /// Builds the client for `base` (without a trailing slash).
    pub(crate) fn new(
        base: &str,
        token: &str,
        payload: &Payload,
        connect_timeout: Duration,
    ) -> Result<Self, BuildError> {
        let client = crate::outbound::webpki_client(connect_timeout, 32, Duration::from_secs(60));

        let mut authorization =
            HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| BuildError::Token)?;
        authorization.set_sensitive(true);
        let (media_type, request_origin) = match payload {
            Payload::Braze { request_origin, .. } => (
                HeaderValue::from_static("application/json"),
                Some(
                    HeaderValue::try_from(request_origin.as_str())
                        .map_err(|_| BuildError::RequestOrigin)?,
                ),
            ),
            _ => (HeaderValue::from_static(SCIM_MEDIA_TYPE), None),
        };
        let latency = Family::<OpLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        Ok(Self {
            http: client,
            base: base.trim_end_matches('/').to_string(),
            authorization,
            media_type,
            request_origin,
            shape: Shape::new(payload),
            latency,
        })
    }

    /// Whether this client speaks the Braze preset.
    pub(crate) fn is_braze(&self) -> bool {
        matches!(self.shape, Shape::Braze { .. })
    }

    /// `GET {base}/Users?filter=userName eq "<user_name>"` (RFC 7644 §3.4.2.2): the user whose
    /// `userName` equals `user_name` case-insensitively, if any. One attempt.
    pub(crate) async fn lookup(
        &self,
        user_name: &str,
        deadline: Instant,
    ) -> Result<Option<ScimUser>, ScimError> {
        let uri = format!(
            "{}/Users?filter={}",
            self.base,
            percent_encode(&user_name_filter(user_name))
        );
        let (status, body) = self
            .call("lookup", Method::GET, uri, None, deadline)
            .await?;
        if status != StatusCode::OK {
            return Err(status_error(status, &body));
        }
        let list: Value = serde_json::from_slice(&body)
            .map_err(|e| ScimError::BadResponse(format!("ListResponse is not JSON: {e}")))?;
        // RFC 7644 §3.4.2: `Resources` may be absent when totalResults is 0. RFC 7643 §2.1:
        // attribute names (here `Resources`, `userName`) are case-insensitive.
        let resources = match attr(&list, "Resources") {
            Some(Value::Array(a)) => a.as_slice(),
            None | Some(Value::Null) => &[],
            Some(_) => return Err(ScimError::BadResponse("Resources is not an array".into())),
        };
        // The filter is the server's business; the decision is ours: userName is caseExact=false
        // (RFC 7643 §4.1.1), so compare case-insensitively and ignore anything else returned.
        let wanted = user_name.to_lowercase();
        let matching: Vec<(&Value, bool)> = resources
            .iter()
            .filter_map(|r| {
                let name = attr(r, "userName").and_then(Value::as_str)?;
                (name.to_lowercase() == wanted).then_some((r, name == user_name))
            })
            .collect();
        let exact: Vec<&Value> = matching
            .iter()
            .filter(|(_, exact)| *exact)
            .map(|(r, _)| *r)
            .collect();
        // Several accounts that differ only in case (a dashboard that does not enforce RFC 7643's
        // case-insensitive uniqueness): the one spelled exactly as asked, else none at all.
        let chosen = match (matching.as_slice(), exact.as_slice()) {
            ([], _) => return Ok(None),
            ([(only, _)], _) | (_, [only]) => *only,
            (several, _) => return Err(ScimError::Ambiguous(several.len())),
        };
        self.shape.user(chosen.clone()).map(Some)
    }

    /// `POST {base}/Users` (RFC 7644 §3.3): 201 gives the new user; 409 is [`ScimError::Conflict`].
    pub(crate) async fn create(
        &self,
        user: &NewUser<'_>,
        deadline: Instant,
    ) -> Result<ScimUser, ScimError> {
        let body = self.shape.create_body(user)?;
        let uri = format!("{}/Users", self.base);
        let (status, resp) = self
            .call(
                "create",
                Method::POST,
                uri,
                Some(body.to_string().into_bytes()),
                deadline,
            )
            .await?;
        match status {
            StatusCode::CREATED | StatusCode::OK => {
                let v = serde_json::from_slice(&resp).map_err(|e| {
                    ScimError::BadResponse(format!("created user is not JSON: {e}"))
                })?;
                self.shape.user(v)
            }
            StatusCode::CONFLICT => Err(ScimError::Conflict),
            s => Err(status_error(s, &resp)),
        }
    }

    /// `PUT {base}/Users/{id}` (RFC 7644 §3.5.1) with `body`.
    pub(crate) async fn replace(
        &self,
        id: &str,
        body: &Value,
        deadline: Instant,
    ) -> Result<ScimUser, ScimError> {
        let uri = format!("{}/Users/{}", self.base, percent_encode(id));
        let (status, resp) = self
            .call(
                "replace",
                Method::PUT,
                uri,
                Some(body.to_string().into_bytes()),
                deadline,
            )
            .await?;
        if status != StatusCode::OK {
            return Err(status_error(status, &resp));
        }
        let v = serde_json::from_slice(&resp)
            .map_err(|e| ScimError::BadResponse(format!("replaced user is not JSON: {e}")))?;
        self.shape.user(v)
    }

    /// One request with the bearer token and media types, bounded by `deadline` (headers and
    /// body), its latency observed.
    async fn call(
        &self,
        op: &'static str,
        method: Method,
        uri: String,
        body: Option<Vec<u8>>,
        deadline: Instant,
    ) -> Result<(StatusCode, Bytes), ScimError> {
        let budget = deadline.saturating_duration_since(Instant::now());
        if budget.is_zero() {
            return Err(ScimError::Timeout);
        }
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(h) = req.headers_mut() {
            h.insert(AUTHORIZATION, self.authorization.clone());
            h.insert(ACCEPT, self.media_type.clone());
            // CONTRACT.md: Braze requests carry `Content-Type: application/json`, the lookup's
            // GET included.
            if body.is_some() || self.request_origin.is_some() {
                h.insert(CONTENT_TYPE, self.media_type.clone());
            }
            if let Some(o) = &self.request_origin {
                h.insert("x-request-origin", o.clone());
            }
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ScimError::Transport(format!("cannot build the request: {e}")))?;
        let started = Instant::now();
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| ScimError::Transport(crate::outbound::error_chain(&e)))?;
            let status = resp.status();
            let announced = resp
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if announced.is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
                return Err(ScimError::TooLarge);
            }
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<LengthLimitError>().is_some() {
                        ScimError::TooLarge
                    } else {
                        ScimError::Transport(format!("reading the answer: {e}"))
                    }
                })?
                .to_bytes();
            Ok((status, body))
        };
        let result = match tokio::time::timeout(budget, exchange).await {
            Ok(r) => r,
            Err(_) => Err(ScimError::Timeout),
        };
        self.latency
            .get_or_create(&OpLabel { op })
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

/// An error chain as one line (hyper-util's legacy client error hides the cause in `source`).
fn status_error(status: StatusCode, body: &[u8]) -> ScimError {
    // RFC 7644 §3.12: errors carry `detail`; keep it short, it may end up in a log line.
    let detail = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        attr(&v, "detail")
            .and_then(Value::as_str)
            .map(|d| d.chars().take(200).collect())
    });
    ScimError::Status {
        status: status.as_u16(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_escapes_quotes_and_backslashes() {
        assert_eq!(
            user_name_filter(r#"a"b\c@x.io"#),
            r#"userName eq "a\"b\\c@x.io""#
        );
        assert_eq!(
            percent_encode(r#"userName eq "a+b""#),
            "userName%20eq%20%22a%2Bb%22"
        );
    }

    #[test]
    fn template_fills_with_json_escaping_and_finds_paths() {
        let text = r#"{"userName":"{{email}}","x":{"groups":"{{ groups }}"},
            "roles":[{"type":"other","value":"o"},{"type":"ps","value":"{{permission_set}}"}],
            "ws":"{{workspace}}","n":"{{first_name}} {{last_name}}"}"#;
        let shape = Shape::new(&Payload::Template {
            path: "t.json".into(),
            text: text.into(),
        });
        let groups = crate::identity::groups(["a\"b", "c"]);
        let u = NewUser {
            email: "q\"@x.io",
            external_id: "n",
            given_name: Some("A\\"),
            family_name: None,
            groups: &groups,
            workspace: "W",
            permission_set: "P",
        };
        let body = shape.create_body(&u).expect("fills");
        assert_eq!(body["userName"], "q\"@x.io");
        assert_eq!(body["x"]["groups"], "a\"b,c");
        assert_eq!(body["n"], "A\\ ");
        let mut back = body.clone();
        back["roles"] = json!([{"type":"ps","value":"P2"},{"type":"other","value":"o"}]);
        assert_eq!(
            shape.read_back(&back),
            (Some("W".into()), Some("P2".into()))
        );
    }

    /// A chunked answer (no Content-Length to refuse up front) that grows past the cap while
    /// being read is [`ScimError::TooLarge`], not a transport error retried as transient.
    #[tokio::test]
    async fn an_oversized_chunked_answer_is_too_large_and_not_transient() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut head = vec![0u8; 8192];
            let _ = s.read(&mut head).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/scim+json\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            let chunk = vec![b' '; 64 * 1024];
            for _ in 0..20 {
                let _ = s
                    .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await;
                let _ = s.write_all(&chunk).await;
                let _ = s.write_all(b"\r\n").await;
            }
            let _ = s.write_all(b"0\r\n\r\n").await;
        });
        let client = ScimClient::new(
            &format!("http://{addr}/scim/v2"),
            "t",
            &Payload::Scim,
            Duration::from_secs(2),
        )
        .expect("client");
        let e = client
            .lookup("a@example.com", Instant::now() + Duration::from_secs(5))
            .await
            .expect_err("over 1 MiB");
        assert!(matches!(e, ScimError::TooLarge), "{e}");
        assert!(!e.is_transient());
        assert!(e.to_string().contains("too large"));
    }

    #[test]
    fn active_is_read_fail_closed() {
        let user = |v: Value| {
            Shape::Scim
                .user(v)
                .map(|u| u.active)
                .expect("a user with an id")
        };
        for (key, value, active) in [
            ("active", json!(true), true),
            ("Active", json!("TRUE"), true),
            ("active", json!(1), true),
            ("active", json!(null), true),
            ("ACTIVE", json!(false), false),
            ("active", json!("false"), false),
            ("active", json!(0), false),
            ("active", json!("no"), false),
            ("active", json!(""), false),
            ("active", json!(2), false),
            ("active", json!(-0.5), false),
            ("active", json!([]), false),
            ("active", json!({}), false),
        ] {
            let mut v = json!({"id": "u-1", "userName": "a@x.io"});
            v[key] = value.clone();
            assert_eq!(user(v), active, "{key}: {value}");
        }
        assert!(user(json!({"id": "u-1"})), "absent means active");
        assert!(!user(
            json!({"id": "u-1", "active": true, "aCtIvE": "nope"})
        ));
    }

    #[test]
    fn scim_read_back_prefers_typed_primary() {
        let v = json!({"roles":[{"value":"x","type":"other"},{"value":"A","type":"permissionSet","primary":true}],
                       "entitlements":[{"value":"Prod","type":"workspace"}]});
        assert_eq!(
            Shape::Scim.read_back(&v),
            (Some("Prod".into()), Some("A".into()))
        );
    }
}
