//! samlgate: a reverse-proxy authentication gateway that terminates SAML 2.0 single sign-on as
//! the Service Provider, provisions first-time users through the dashboard's SCIM admin API,
//! and forwards every authenticated request upstream with identity headers added.
//!
//! The pipeline (`app.rs`), for every request on the gateway listener:
//! 1. `/saml/*` endpoints are answered by samlgate itself (metadata, login, ACS, logout, auth).
//! 2. A public path (matched on the normalised path) is forwarded without identity.
//! 3. Otherwise the session cookie is verified and the session loaded; without one, browsers
//!    are redirected to the IdP and API clients get 401.
//! 4. Access rules authorise the identity for the path.
//! 5. Client-sent identity headers and our cookies are removed, ours are set, and the request
//!    is streamed to the dashboard.

pub mod access;
pub mod app;
pub mod body;
pub mod config;
pub mod demo;
pub mod error;
pub mod headers;
pub mod identity;
pub mod jwt;
pub mod keyhash;
pub mod outbound;
pub mod pages;
pub mod provision;
pub mod proxy;
pub mod saml;
pub mod server;
pub mod session;
pub mod telemetry;
