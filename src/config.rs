//! Module configurations (`CONFIG SET jwks.<name>` or load-time arguments) and their
//! defaults. Read through the accessors so the rest of the code never sees atomics.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use crate::jwk::Policy;

pub const DEFAULT_CACHE_TTL_S: i64 = 3600;
pub const DEFAULT_AUDIT_MAXLEN: i64 = 10_000;
pub const DEFAULT_MIN_RSA_BITS: i64 = 2048;

/// Seconds a rendered JWKS stays cached: the bound on staleness if an invalidation fails.
pub static CACHE_TTL: AtomicI64 = AtomicI64::new(DEFAULT_CACHE_TTL_S);
/// Approximate cap on each audit stream (`XADD MAXLEN ~`).
pub static AUDIT_MAXLEN: AtomicI64 = AtomicI64::new(DEFAULT_AUDIT_MAXLEN);
/// Smallest RSA modulus accepted from clients.
pub static MIN_RSA_BITS: AtomicI64 = AtomicI64::new(DEFAULT_MIN_RSA_BITS);
/// Load-time only (immutable), off by default, like Redis's `enable-debug-command`: lets
/// `JWKS.DEBUG` make invalidations fail so the failure path can be exercised for real.
pub static FAULT_INJECTION: AtomicBool = AtomicBool::new(false);

pub fn cache_ttl_ms() -> i64 {
    CACHE_TTL.load(Ordering::Relaxed).saturating_mul(1000)
}

pub fn audit_maxlen() -> i64 {
    AUDIT_MAXLEN.load(Ordering::Relaxed)
}

pub fn policy() -> Policy {
    Policy {
        min_rsa_bits: usize::try_from(MIN_RSA_BITS.load(Ordering::Relaxed)).unwrap_or(0),
    }
}

pub fn fault_injection_enabled() -> bool {
    FAULT_INJECTION.load(Ordering::Relaxed)
}
