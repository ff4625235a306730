//! Test support: fakes of samlgate's neighbours speaking the real wire format, and helpers that
//! start the real gateway on 127.0.0.1 port 0.
#![allow(dead_code, clippy::unwrap_used)]

pub mod dashboard;
pub mod gateway;
