//! `JWKS.ROTATE K [IFGEN generation] [REASON reason] [FORCE] [DRYRUN] op [op ...]`:
//! validates every op, swaps the key set, and deletes the cached JWKS, all in one command.
//! DRYRUN replies as the real command would (plus the resulting document) and writes
//! nothing. The change is committed by the write path (`write::commit`), as the
//! scheduler's are.

use redis_module::{Context, RedisValue};

use super::{int, text, Map};
use crate::config;
use crate::datatype::Stored;
use crate::glue::args::Args;
use crate::glue::caller::Caller;
use crate::glue::clock::now_ms;
use crate::glue::redis_key::db;
use crate::glue::redis_key::{Key, Mode};
use crate::write::{self, Targets, What, Write};
use redis_jwks_core::args;
use redis_jwks_core::commit::Outcome;
use redis_jwks_core::error::{Error, Result};
use redis_jwks_core::keyset::KeySet;
use redis_jwks_core::names;

pub(crate) fn run(ctx: &Context, args: &Args) -> Result<RedisValue> {
    if args.len() < 3 {
        return Err(Error::Arity("jwks.rotate"));
    }
    let name = args.bytes(1);
    names::check_name(name)?;
    let req = args::parse_rotate(&args.rest(2), &config::policy())?;

    // Decide on a read: a refused rotation opens nothing for writing.
    let key = Key::arg(
        ctx,
        args.string(1).ok_or(Error::Arity("jwks.rotate"))?,
        Mode::Read,
    )?;
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
    // Under CONFIRM, the guard accepts a promotion the live verifiers confirm.
    let fleet = crate::fleets::held(db(ctx), name, now);
    let (next, changes) = set.apply_with(&req.ops, now, req.force, &fleet)?;
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
    let outcome = write::commit(
        ctx,
        &caller,
        &targets,
        Write {
            what: What::Keys {
                next: &next,
                changes: &changes,
            },
            at_ms: now,
            reason: req.reason,
            forced: req.force,
        },
    )?;
    Ok(reply(&next, changes.len(), Some(outcome), false))
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
