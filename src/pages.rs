//! Pages: the small HTML documents the gateway answers itself (refused login, admin API down,
//! upstream unreachable, signed out). Every page names a reason and a correlation id.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{Body, full};

/// Escapes text for HTML (and XML) element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A complete HTML page with a title, a message (plain text, escaped here) and the request id.
pub fn page(status: StatusCode, title: &str, message: &str, request_id: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}}\
h1{{font-size:1.4rem}}.id{{color:#777;font-size:.85rem}}</style></head>\
<body><h1>{t}</h1><p>{m}</p><p class=\"id\">Status {s}. Reference: <code>{r}</code></p></body></html>",
        t = escape(title),
        m = escape(message),
        s = status.as_u16(),
        r = escape(request_id),
    );
    html_response(status, html)
}

/// Wraps an HTML string in a response that caches nothing.
pub fn html_response(status: StatusCode, html: String) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from(html)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("content-security-policy", HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"));
    resp
}
