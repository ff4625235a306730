//! Fakes of samlgate's neighbours, speaking the real wire formats on 127.0.0.1 port 0.
#![allow(dead_code)] // each test binary uses a different part

pub mod fake_scim;
