//! `JWKS.INVALIDATE K [REASON reason]`: deletes the cached JWKS of the key set at K, and
//! audits, counts and logs the attempt. Refused (`NOKEYSET`) where no key set is: it would
//! have nothing to invalidate, and must not create an audit stream or counters for a name.

use redis_module::{Context, RedisValue};

use super::{debug, RedisEffects, Targets};
use crate::args;
use crate::commit::{self, Plan};
use crate::error::{Error, Result, Shown};
use crate::glue::call::{now_ms, Args, Caller};
use crate::glue::key::{Key, Mode};
use crate::keys;
use crate::observe::events::Kind;
use crate::observe::{audit, log};

pub fn run(ctx: &Context, args: &Args) -> Result<RedisValue> {
    if args.len() < 2 {
        return Err(Error::Arity("jwks.invalidate"));
    }
    let name = args.bytes(1);
    keys::check_name(name)?;
    let reason = args::parse_invalidate(&args.rest(2))?;
    let key = Key::arg(ctx, args.string(1).ok_or(Error::Arity("jwks.invalidate"))?, Mode::Read)?;
    let stored = key.keyset()?.ok_or_else(|| Error::NoKeySet(Shown::bytes(name)))?;

    let caller = Caller::new(ctx);
    let targets = Targets::check(ctx, &caller, name)?;
    let actx = audit::Context {
        timestamp: audit::timestamp(now_ms()),
        reason,
        generation: stored.set().generation(),
        user: caller.name(),
        forced: false,
    };
    let plan = Plan {
        actx: &actx,
        changes: &[],
        cached: targets.cached(ctx)?,
        fault: debug::take_injected_failure(),
    };
    let mut effects = RedisEffects::new(ctx, &targets, Kind::Invalidated, stored, None, &actx.reason);
    let outcome = commit::commit(&mut effects, &plan)?;
    stored.forget_cache();
    log::invalidation(name, &actx.reason, actx.generation, 0, &outcome);
    match outcome.error {
        Some(e) => Err(Error::InvalidationFailed(e)),
        None => Ok(RedisValue::Integer(i64::from(outcome.deleted))),
    }
}
