//! samlgate: a reverse-proxy authentication gateway that terminates SAML 2.0 single sign-on as
//! the Service Provider, provisions first-time users through the dashboard's SCIM admin API,
//! and forwards every authenticated request upstream with identity headers added.

pub mod config;
pub mod demo;
pub mod identity;
pub mod saml;
