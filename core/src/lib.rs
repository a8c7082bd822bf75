//! redis-jwks's pure core: everything the module decides without Redis. Plain Rust values
//! in and out; this crate does not depend on `redis-module`, so nothing here can reach a
//! server, and its tests and the fuzz targets run without one.
//!
//! - `jwk`: parse and validate one JWK per kty, RFC 7638 thumbprint;
//! - `keyset`: states next/current/previous, the lifecycle policy, rendering, stored form;
//! - `names`: key-set names and the names derived from them (cache, audit, metrics, events);
//! - `args`: command arguments to typed requests;
//! - `commit`: what a change writes and in which order, with `audit` (the audit entries'
//!   fields) and `counter_names` (the counters it bumps);
//! - `fleet`: the verifiers of a key set, from their acks (`JWKS.ACK`);
//! - `error`: the one error vocabulary; `escape`: names and free text made printable.

// No unsafe in the core: FFI is the module crate's business.
#![forbid(unsafe_code)]
// pub means "for the other crate"; inside one, pub(crate) says so.
#![warn(unreachable_pub)]
// A panic in a module takes the server down (catch_unwind guards the entry points, but a
// caught panic still fails the command): no unwrap, expect or panic outside tests; tests
// may (clippy.toml). The module writes to the Redis log, never to the server's stdout.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::dbg_macro,
    clippy::print_stdout,
    clippy::print_stderr
)]

pub mod args;
pub mod audit;
pub mod commit;
pub mod counter_names;
pub mod error;
pub mod escape;
pub mod fleet;
#[cfg(test)]
mod fuzz_replay;
pub mod jwk;
pub mod keyset;
pub mod names;
#[doc(hidden)]
pub mod testkeys;
