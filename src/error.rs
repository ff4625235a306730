//! Error: every way a request can fail on the request path, and the one `match` that turns it
//! into a status and a page. The client sees a reason and a correlation id, never a cause.

use http::{HeaderValue, Response, StatusCode, header};

use crate::access::Denied;
use crate::body::{Body, full};
use crate::pages;
use crate::proxy::ProxyError;

/// A request-path failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No (valid) session; `login_url` is where an API client should send its user.
    #[error("not signed in")]
    Unauthenticated {
        /// `/saml/login?return_to=…`
        login_url: String,
    },
    /// Signed in, but an access rule refuses.
    #[error("access denied: {0}")]
    Denied(#[from] Denied),
    /// A login that must not produce a session; `reason` is shown, `detail` only logged.
    #[error("login refused: {detail}")]
    LoginRefused {
        /// What the user reads.
        reason: String,
        /// What the log line carries (precise, never a secret or the raw assertion).
        detail: String,
    },
    /// A single-logout message (LogoutRequest/LogoutResponse) that was refused; `detail`
    /// is only logged.
    #[error("logout message refused: {detail}")]
    LogoutRefused {
        /// Logged cause (never the message itself).
        detail: String,
    },
    /// A dependency (session store, admin API, IdP metadata) is down; retry later.
    #[error("{what} unavailable: {detail}")]
    Unavailable {
        /// What is down, as the user reads it.
        what: &'static str,
        /// Logged cause.
        detail: String,
    },
    /// The session store does not answer (an outage it logs itself, once when it starts and
    /// once when it ends); retry later.
    #[error("session store unavailable: {0}")]
    StoreOutage(String),
    /// A sign-out the session store could not carry out: the session is still valid, and the
    /// page says so rather than let the user believe they are out.
    #[error("sign-out failed: {0}")]
    SignOutFailed(String),
    /// The dashboard could not be reached or did not answer in time.
    #[error(transparent)]
    Upstream(#[from] ProxyError),
    /// Malformed request.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// A body over its cap.
    #[error("request body too large")]
    PayloadTooLarge,
    /// A form to one of our endpoints not sent within `server.header_read_timeout`.
    #[error("request body not sent in time")]
    RequestTimeout,
    /// Wrong method on one of our endpoints; the methods it takes, for `Allow`.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// One of our endpoints that is not configured (e.g. JWKS without `[headers.jwt]`).
    #[error("not found")]
    NotFound,
}

impl Error {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Error::Denied(_) | Error::LoginRefused { .. } | Error::LogoutRefused { .. } => {
                StatusCode::FORBIDDEN
            }
            Error::Unavailable { .. } | Error::StoreOutage(_) | Error::SignOutFailed(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Upstream(ProxyError::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            Error::Upstream(ProxyError::Unreachable(_)) => StatusCode::BAD_GATEWAY,
            Error::BadRequest(_) | Error::Upstream(ProxyError::ClientBody) => {
                StatusCode::BAD_REQUEST
            }
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::NotFound => StatusCode::NOT_FOUND,
        }
    }

    /// The response the client sees.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let status = self.status();
        match self {
            Error::Unauthenticated { login_url } => {
                let body = serde_json::json!({
                    "error": "unauthenticated",
                    "message": "sign in first",
                    "login_url": login_url,
                    "request_id": request_id,
                });
                let mut resp = Response::new(full(body.to_string()));
                *resp.status_mut() = status;
                let h = resp.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("SAML realm=\"samlgate\""),
                );
                if let Ok(v) = HeaderValue::from_str(&login_url) {
                    h.insert("x-auth-request-redirect", v);
                }
                resp
            }
            Error::Denied(d) => pages::page(
                status,
                "Access denied",
                &format!("You are signed in, but {d}."),
                request_id,
            ),
            Error::LoginRefused { reason, .. } => {
                pages::page(status, "Sign-in refused", &reason, request_id)
            }
            Error::LogoutRefused { .. } => pages::page(
                status,
                "Sign-out refused",
                "The sign-out message from the identity provider was not accepted.",
                request_id,
            ),
            Error::Unavailable { what, .. } => unavailable_page(status, what, request_id),
            Error::StoreOutage(_) => unavailable_page(status, "session store", request_id),
            Error::SignOutFailed(_) => pages::page(
                status,
                "Not signed out",
                "The session store is not answering, so you are still signed in. Please try again in a minute.",
                request_id,
            ),
            Error::Upstream(ProxyError::Timeout) => pages::page(
                status,
                "Gateway timeout",
                "The dashboard did not answer in time.",
                request_id,
            ),
            Error::Upstream(ProxyError::Unreachable(_)) => pages::page(
                status,
                "Bad gateway",
                "The dashboard cannot be reached right now.",
                request_id,
            ),
            Error::BadRequest(why) => pages::page(status, "Bad request", why, request_id),
            Error::Upstream(e @ ProxyError::ClientBody) => {
                pages::page(status, "Bad request", &e.to_string(), request_id)
            }
            Error::PayloadTooLarge => pages::page(
                status,
                "Request too large",
                "The request body is too large.",
                request_id,
            ),
            Error::RequestTimeout => pages::page(
                status,
                "Request timeout",
                "The request body was not sent in time.",
                request_id,
            ),
            Error::MethodNotAllowed(allow) => {
                let mut resp = pages::page(
                    status,
                    "Method not allowed",
                    "This endpoint does not take that method.",
                    request_id,
                );
                // RFC 9110 §15.5.6: a 405 names the methods the resource takes.
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                resp
            }
            Error::NotFound => pages::page(
                status,
                "Not found",
                "Nothing is configured here.",
                request_id,
            ),
        }
    }
}

/// The page of a dependency that does not answer.
fn unavailable_page(status: StatusCode, what: &str, request_id: &str) -> Response<Body> {
    pages::page(
        status,
        "Temporarily unavailable",
        &format!("The {what} is not answering right now. Please try again in a minute."),
        request_id,
    )
}
