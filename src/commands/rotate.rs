//! `JWKS.ROTATE K [IFGEN generation] [REASON reason] op [op ...]`: validates every op,
//! swaps the key set, and deletes the cached JWKS, all in one command.

use redis_module::{Context, RedisValue};

use super::{debug, int, text, Map, RedisEffects, Targets};
use crate::args;
use crate::commit::{self, Outcome, Plan};
use crate::config;
use crate::datatype::Stored;
use crate::error::{Error, Result};
use crate::glue::call::{now_ms, Args, Caller};
use crate::glue::key::{Key, Mode};
use crate::keys;
use crate::keyset::KeySet;
use crate::observe::{audit, log};

pub fn run(ctx: &Context, args: &Args) -> Result<RedisValue> {
    if args.len() < 3 {
        return Err(Error::Arity("jwks.rotate"));
    }
    let name = args.bytes(1);
    keys::check_name(name)?;
    let req = args::parse_rotate(&args.rest(2), &config::policy())?;

    // Decide on a read: a refused rotation opens nothing for writing.
    let key = Key::arg(ctx, args.string(1).ok_or(Error::Arity("jwks.rotate"))?, Mode::Read)?;
    let empty = KeySet::default();
    let set = key.keyset()?.map_or(&empty, Stored::set);
    if let Some(expected) = req.if_gen {
        if expected != set.generation() {
            return Err(Error::GenerationMismatch {
                expected,
                actual: set.generation(),
            });
        }
    }
    let now = now_ms();
    let (next, changes) = set.apply(&req.ops, now)?;
    drop(key);
    if changes.is_empty() {
        return Ok(reply(&next, 0, None));
    }

    let caller = Caller::new(ctx);
    let targets = Targets::check(ctx, &caller, name)?;
    let actx = audit::Context {
        timestamp: audit::timestamp(now),
        reason: req.reason,
        generation: next.generation(),
        user: caller.name(),
    };
    let plan = Plan {
        actx: &actx,
        changes: &changes,
        cached: targets.cached(ctx)?,
        fault: debug::take_injected_failure(),
    };
    let mut effects = RedisEffects {
        ctx,
        targets: &targets,
        new_set: Some(Stored::new(next.clone())),
    };
    let outcome = commit::commit(&mut effects, &plan)?;
    log::invalidation(name, &actx.reason, actx.generation, changes.len(), &outcome);
    Ok(reply(&next, changes.len(), Some(outcome)))
}

fn reply(set: &KeySet, changed: usize, outcome: Option<Outcome>) -> RedisValue {
    let mut map = Map::default();
    map.put("generation", int(set.generation()))
        .put("current", set.current_kid().map_or(RedisValue::Null, text))
        .put(
            "published",
            RedisValue::Array(set.published_kids().into_iter().map(text).collect()),
        )
        .put("changed", int(changed as u64));
    let (invalidated, deleted, error) = match outcome {
        Some(o) => (o.error.is_none(), o.deleted, o.error),
        None => (false, false, None),
    };
    map.put("invalidated", RedisValue::Integer(i64::from(invalidated)))
        .put("cache_deleted", RedisValue::Integer(i64::from(deleted)));
    if let Some(e) = error {
        map.put("invalidation_error", RedisValue::BulkString(e));
    }
    map.done()
}
