//! Module configurations (`CONFIG SET jwks.<name>`, `jwks.<name>` lines in redis.conf, or
//! `<name> <value>` arguments after `loadmodule`) with their defaults and ranges. Read
//! through the accessors so the rest of the code never sees atomics.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use redis_module::RedisString;

use redis_jwks_core::error::{Error, Result, Shown};
use redis_jwks_core::jwk::Policy;

/// `MODULE LIST`'s version: the crate's, as major * 10000 + minor * 100 + patch.
pub(crate) const MODULE_VERSION: i32 = {
    const fn num(s: &str) -> i32 {
        let b = s.as_bytes();
        let mut i = 0;
        let mut n = 0;
        while i < b.len() {
            n = n * 10 + (b[i] - b'0') as i32;
            i += 1;
        }
        n
    }
    num(env!("CARGO_PKG_VERSION_MAJOR")) * 10_000
        + num(env!("CARGO_PKG_VERSION_MINOR")) * 100
        + num(env!("CARGO_PKG_VERSION_PATCH"))
};

pub(crate) const DEFAULT_CACHE_TTL_S: i64 = 3600;
pub(crate) const DEFAULT_AUDIT_MAXLEN: i64 = 10_000;
pub(crate) const DEFAULT_MIN_RSA_BITS: i64 = 2048;
pub(crate) const CACHE_TTL_RANGE: (i64, i64) = (1, 31_536_000);
pub(crate) const DEFAULT_VERIFIER_BEHIND_MS: i64 = 60_000;
pub(crate) const VERIFIER_BEHIND_RANGE: (i64, i64) = (0, 86_400_000);
pub(crate) const AUDIT_MAXLEN_RANGE: (i64, i64) = (1, 100_000_000);
pub(crate) const MIN_RSA_BITS_RANGE: (i64, i64) =
    (redis_jwks_core::keyset::RSA_FLOOR_BITS as i64, 16384);

/// Seconds a rendered JWKS stays cached: the bound on staleness if an invalidation fails.
pub(crate) static CACHE_TTL: AtomicI64 = AtomicI64::new(DEFAULT_CACHE_TTL_S);
/// Approximate cap on each audit stream (`XADD MAXLEN ~`).
pub(crate) static AUDIT_MAXLEN: AtomicI64 = AtomicI64::new(DEFAULT_AUDIT_MAXLEN);
/// Smallest RSA modulus accepted from clients.
pub(crate) static MIN_RSA_BITS: AtomicI64 = AtomicI64::new(DEFAULT_MIN_RSA_BITS);
/// How long a live verifier may hold an older generation than its key set's before
/// JWKS.STATS counts it as behind (the `JwksVerifiersBehind` alert).
pub(crate) static VERIFIER_BEHIND_MS: AtomicI64 = AtomicI64::new(DEFAULT_VERIFIER_BEHIND_MS);
/// Load-time only (immutable), off by default, like Redis's `enable-debug-command`: lets
/// `JWKS.DEBUG` make invalidations fail so the failure path can be exercised for real.
pub(crate) static FAULT_INJECTION: AtomicBool = AtomicBool::new(false);

/// Load-time only (immutable), off by default: subscribe to the server's generic and string
/// keyspace events, so a value written at a key set's cache name by another command is
/// removed at once and a renamed key set is registered at once. Every `SET`, `DEL`,
/// `EXPIRE` of the server then pays for a call into the module (10-20 % of pipelined
/// throughput, bench/other_workloads.py); without it those cases heal at the key set's
/// next use (docs/data-model.md, "What the module owns").
pub(crate) static KEYSPACE_HOOK: AtomicBool = AtomicBool::new(false);

pub(crate) fn keyspace_hook() -> bool {
    KEYSPACE_HOOK.load(Ordering::Relaxed)
}

pub(crate) fn cache_ttl_ms() -> i64 {
    CACHE_TTL.load(Ordering::Relaxed).saturating_mul(1000)
}

pub(crate) fn verifier_behind_ms() -> i64 {
    VERIFIER_BEHIND_MS.load(Ordering::Relaxed)
}

pub(crate) fn audit_maxlen() -> i64 {
    AUDIT_MAXLEN.load(Ordering::Relaxed)
}

pub(crate) fn policy() -> Policy {
    Policy {
        min_rsa_bits: usize::try_from(MIN_RSA_BITS.load(Ordering::Relaxed)).unwrap_or(0),
    }
}

pub(crate) fn fault_injection_enabled() -> bool {
    FAULT_INJECTION.load(Ordering::Relaxed)
}

/// The integer configurations and their ranges, as `CONFIG SET` enforces them.
const INTEGERS: [(&str, (i64, i64)); 4] = [
    ("cache-ttl", CACHE_TTL_RANGE),
    ("verifier-behind-ms", VERIFIER_BEHIND_RANGE),
    ("audit-maxlen", AUDIT_MAXLEN_RANGE),
    ("min-rsa-bits", MIN_RSA_BITS_RANGE),
];

/// Checks the `loadmodule` arguments exactly as `CONFIG SET` would check the same values,
/// so a typo or an out-of-range value stops the load instead of being ignored or applied.
pub(crate) fn check_load_args(args: &[&[u8]]) -> Result<()> {
    let bad = |name: &[u8], why: String| Error::LoadArg(Shown::bytes(name), why);
    if !args.len().is_multiple_of(2) {
        return Err(bad(
            args.last().copied().unwrap_or_default(),
            "has no value (arguments are name value pairs)".into(),
        ));
    }
    let mut seen: Vec<&[u8]> = Vec::new();
    for pair in args.chunks(2) {
        let [name, value] = pair else { continue };
        if seen.contains(name) {
            return Err(bad(name, "is given twice".into()));
        }
        seen.push(name);
        if let Some(bare) = name.strip_prefix(b"jwks.") {
            return Err(bad(
                name,
                format!(
                    "is the redis.conf / CONFIG SET spelling; as a module argument write '{}'",
                    String::from_utf8_lossy(bare)
                ),
            ));
        }
        let text = std::str::from_utf8(value).unwrap_or("");
        if *name == b"fault-injection" || *name == b"keyspace-hook" {
            if !matches!(text, "yes" | "no") {
                return Err(bad(name, "must be yes or no".into()));
            }
            continue;
        }
        let Some((_, (min, max))) = INTEGERS.iter().find(|(n, _)| n.as_bytes() == *name) else {
            return Err(bad(
                name,
                "is not a redis-jwks configuration (cache-ttl, audit-maxlen, min-rsa-bits, verifier-behind-ms, fault-injection, keyspace-hook)"
                    .into(),
            ));
        };
        match text.parse::<i64>() {
            Ok(v) if (*min..=*max).contains(&v) => {}
            _ => {
                return Err(bad(
                    name,
                    format!(
                        "must be an integer from {min} to {max}, not {}",
                        Shown::bytes(value)
                    ),
                ))
            }
        }
    }
    Ok(())
}

pub(crate) fn check_module_args(args: &[RedisString]) -> Result<()> {
    let args: Vec<&[u8]> = args.iter().map(RedisString::as_slice).collect();
    check_load_args(&args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &[&str]) -> std::result::Result<(), String> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        check_load_args(&args).map_err(|e| e.to_string())
    }

    #[test]
    fn load_args_are_checked_like_config_set() {
        assert!(check(&[]).is_ok());
        assert!(check(&["cache-ttl", "600", "fault-injection", "yes"]).is_ok());
        for (args, needle) in [
            (&["cache-ttl", "-5"][..], "from 1 to 31536000"),
            (&["min-rsa-bits", "0"], "from 1024 to 16384"),
            (&["audit-maxlen", "0"], "from 1 to 100000000"),
            (&["audit-maxlen", "1e3"], "not '1e3'"),
            (&["bogus", "1"], "not a redis-jwks configuration"),
            (&["jwks.cache-ttl", "600"], "write 'cache-ttl'"),
            (&["cache-ttl"], "has no value"),
            (&["cache-ttl", "5", "cache-ttl", "6"], "twice"),
            (&["fault-injection", "1"], "yes or no"),
        ] {
            let e = check(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        assert_eq!(MODULE_VERSION, {
            let v: Vec<i32> = env!("CARGO_PKG_VERSION")
                .split('.')
                .map(|p| p.parse().unwrap())
                .collect();
            v[0] * 10_000 + v[1] * 100 + v[2]
        });
    }
}
