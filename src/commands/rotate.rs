//! `JWKS.ROTATE K [IFGEN generation] [REASON reason] [FORCE] [DRYRUN] op [op ...]`:
//! validates every op, swaps the key set, and deletes the cached JWKS, all in one command.
//! DRYRUN replies as the real command would (plus the resulting document) and writes
//! nothing. The scheduler applies lifecycle changes through `commit_change` too.

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
use crate::keyset::{Change, KeySet};
use crate::observe::events::Kind;
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
    let existing = key.keyset()?;
    let creating = existing.is_none();
    let set = existing.map_or(&empty, Stored::set);
    if let Some(expected) = req.if_gen {
        if expected != set.generation() {
            return Err(Error::GenerationMismatch {
                expected,
                actual: set.generation(),
            });
        }
    }
    let now = now_ms();
    let (next, changes) = set.apply(&req.ops, now, req.force)?;
    drop(key);
    if changes.is_empty() {
        return Ok(reply(&next, 0, None, req.dry_run));
    }

    let caller = Caller::new(ctx);
    let targets = Targets::check(ctx, &caller, name)?;
    if creating {
        targets.check_unclaimed(ctx)?;
    }
    if req.dry_run {
        let predicted = Outcome {
            deleted: targets.cached(ctx)?,
            error: None,
            incomplete: None,
        };
        return Ok(reply(&next, changes.len(), Some(predicted), true));
    }
    let actx = audit::Context {
        timestamp: audit::timestamp(now),
        reason: req.reason,
        generation: next.generation(),
        user: caller.name(),
        forced: req.force,
    };
    let outcome = commit_change(ctx, &targets, &next, &changes, &actx)?;
    Ok(reply(&next, changes.len(), Some(outcome), false))
}

/// Commits a change whose targets were checked: audit, swap, invalidate, count, log.
pub fn commit_change(
    ctx: &Context,
    targets: &Targets,
    next: &KeySet,
    changes: &[Change],
    actx: &audit::Context,
) -> Result<Outcome> {
    let plan = Plan {
        actx,
        changes,
        cached: targets.cached(ctx)?,
        fault: debug::take_injected_failure(),
    };
    let stored = Stored::new(next.clone());
    let mut effects = RedisEffects::new(ctx, targets, Kind::Rotated, &stored, None, &actx.reason);
    effects.new_set = Some(stored);
    let outcome = commit::commit(&mut effects, &plan)?;
    log::invalidation(
        &targets.key,
        &actx.reason,
        actx.generation,
        changes.len(),
        &outcome,
    );
    Ok(outcome)
}

fn reply(set: &KeySet, changed: usize, outcome: Option<Outcome>, dry_run: bool) -> RedisValue {
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
    if dry_run {
        map.put("document", text(&set.render()));
    }
    map.done()
}
