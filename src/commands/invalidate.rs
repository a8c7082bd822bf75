//! `JWKS.INVALIDATE K [REASON reason]`: deletes the cached JWKS of the key set at K, and
//! audits, counts and logs the attempt. Refused (`NOKEYSET`) where no key set is: it would
//! have nothing to invalidate, and must not create an audit stream or counters for a name.

use redis_module::{Context, RedisValue};

use crate::glue::args::Args;
use crate::glue::caller::Caller;
use crate::glue::clock::now_ms;
use crate::glue::redis_key::{Key, Mode};
use crate::write::{self, Targets, What, Write};
use redis_jwks_core::args;
use redis_jwks_core::error::{Error, Result};
use redis_jwks_core::names;

pub(crate) fn run(ctx: &Context, args: &Args) -> Result<RedisValue> {
    if args.len() < 2 {
        return Err(Error::Arity("jwks.invalidate"));
    }
    let name = args.bytes(1);
    names::check_name(name)?;
    let reason = args::parse_invalidate(&args.rest(2))?;
    let key = Key::arg(
        ctx,
        args.string(1).ok_or(Error::Arity("jwks.invalidate"))?,
        Mode::Read,
    )?;
    let stored = key.existing_keyset()?;

    let caller = Caller::new(ctx);
    let targets = Targets::check(ctx, &caller, name)?;
    let outcome = write::commit(
        ctx,
        &caller,
        &targets,
        Write {
            what: What::Invalidate { current: stored },
            at_ms: now_ms(),
            reason,
            forced: false,
        },
    )?;
    match outcome.error {
        Some(e) => Err(Error::InvalidationFailed(e)),
        None => Ok(RedisValue::Integer(i64::from(outcome.deleted))),
    }
}
