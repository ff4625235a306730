//! Test support: fakes of samlgate's neighbours speaking the real wire format on 127.0.0.1
//! port 0, and helpers that start the real gateway there.
#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a different part

pub mod attacks;
pub mod dashboard;
pub mod fake_scim;
pub mod gateway;
pub mod local;
pub mod process;
pub mod provisioning;
pub mod sso;
pub mod webdriver;
