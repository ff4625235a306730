//! Demo: the pieces behind `samlgate demo` (and the tests' development IdP).
//!
//! Nothing here is used by `samlgate serve`; the demo IdP binds only to loopback.

pub mod signer;
