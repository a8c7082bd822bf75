//! `JWKS.DEBUG FAIL-INVALIDATIONS n`: makes the next n invalidations fail, so tests and
//! operators can drive the failure path for real. Refused unless the module was loaded
//! with `jwks.fault-injection yes` (immutable, off by default).

use redis_module::{Context, RedisValue};

use crate::config;
use crate::glue::args::Args;
use crate::write;
use redis_jwks_core::error::{Error, Result, Shown};

pub(crate) fn run(_ctx: &Context, args: &Args) -> Result<RedisValue> {
    if !config::fault_injection_enabled() {
        return Err(Error::Disabled(
            "JWKS.DEBUG is disabled; load the module with 'fault-injection yes' to enable it",
        ));
    }
    if args.len() != 3 {
        return Err(Error::Arity("jwks.debug"));
    }
    let (sub, n) = (args.bytes(1), args.bytes(2));
    if !sub.eq_ignore_ascii_case(b"FAIL-INVALIDATIONS") {
        return Err(Error::Syntax(format!(
            "unknown JWKS.DEBUG subcommand {} (FAIL-INVALIDATIONS)",
            Shown::bytes(sub)
        )));
    }
    let count: u64 = std::str::from_utf8(n)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Syntax("FAIL-INVALIDATIONS needs a non-negative integer".into()))?;
    write::fail_next_invalidations(count);
    Ok(RedisValue::SimpleStringStatic("OK"))
}
