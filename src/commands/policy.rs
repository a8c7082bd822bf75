//! `JWKS.POLICY K [PROMOTE-AFTER ms] [RETIRE-AFTER ms] [CONFIRM pct [MIN-WAIT ms]]`: sets
//! the lifecycle policy of the key set at K (0 turns a part off; an option left out keeps
//! its value; CONFIRM 0 turns MIN-WAIT off too) and replies with the policy and the next
//! scheduled change. The change is audited (`JWKS_POLICY_SET`),
//! persisted and replicated with the set; the document does not change, so the generation
//! does not either. A cached document that would outlive the next scheduled change is
//! dropped. Without options, it only replies.

use redis_module::{Context, RedisValue};

use super::{int, text, Map};
use crate::glue::args::Args;
use crate::glue::caller::Caller;
use crate::glue::clock::now_ms;
use crate::glue::redis_key::{Key, Mode};
use crate::write::{self, Targets, What, Write};
use redis_jwks_core::args;
use redis_jwks_core::error::{Error, Result};
use redis_jwks_core::keyset::KeySet;
use redis_jwks_core::names;

pub(crate) fn run(ctx: &Context, args: &Args) -> Result<RedisValue> {
    if args.len() < 2 {
        return Err(Error::Arity("jwks.policy"));
    }
    let name = args.bytes(1);
    names::check_name(name)?;
    let key = Key::arg(
        ctx,
        args.string(1).ok_or(Error::Arity("jwks.policy"))?,
        Mode::Read,
    )?;
    let stored = key.existing_keyset()?;
    let set = stored.set();
    let Some(policy) = args::parse_policy(&args.rest(2), set.lifecycle())? else {
        return Ok(reply(set));
    };
    if policy == set.lifecycle() {
        return Ok(reply(set));
    }
    let next = set.with_lifecycle(policy);
    drop(key);

    let caller = Caller::new(ctx);
    let targets = Targets::check(ctx, &caller, name)?;
    // Audited, stored, and the cached document dropped (and that audited and counted) if
    // it would outlive the next scheduled change.
    write::commit(
        ctx,
        &caller,
        &targets,
        Write {
            what: What::Policy { next: &next },
            at_ms: now_ms(),
            reason: "policy".into(),
            forced: false,
        },
    )?;
    Ok(reply(&next))
}

/// The policy with the next change.
fn reply(set: &KeySet) -> RedisValue {
    let mut m = fields(set);
    m.put("next_change", next_change(set));
    m.done()
}

fn fields(set: &KeySet) -> Map {
    let l = set.lifecycle();
    let mut m = Map::default();
    m.put("promote_after_ms", int(l.promote_after_ms))
        .put("retire_after_ms", int(l.retire_after_ms))
        .put("confirm_pct", int(u64::from(l.confirm_pct)))
        .put("min_wait_ms", int(l.min_wait_ms));
    m
}

/// `promote_after_ms`, `retire_after_ms`, `confirm_pct` and `min_wait_ms`.
pub(crate) fn policy(set: &KeySet) -> RedisValue {
    fields(set).done()
}

/// How far the CONFIRM of the next key to promote has come, or nil.
pub(crate) fn confirmation(set: &KeySet, fleet: &[(u64, usize)]) -> RedisValue {
    match set.confirmation(fleet) {
        None => RedisValue::Null,
        Some(c) => {
            let mut m = Map::default();
            m.put("kid", text(&c.kid))
                .put("live", int(c.live as u64))
                .put("holding", int(c.holding as u64))
                .put("needed", int(c.needed as u64))
                .put("confirm_pct", int(u64::from(c.pct)))
                .put(
                    "min_wait_until_ms",
                    RedisValue::Integer(c.min_wait_until_ms),
                )
                .put("confirmed", RedisValue::Integer(i64::from(c.confirmed())));
            m.done()
        }
    }
}

/// `action`, `kid`, `at_ms` of the next scheduled change, or nil.
pub(crate) fn next_change(set: &KeySet) -> RedisValue {
    match set.next_change() {
        None => RedisValue::Null,
        Some(due) => {
            let mut d = Map::default();
            d.put("action", text(due.action.name()))
                .put("kid", text(&due.kid))
                .put("at_ms", RedisValue::Integer(due.at_ms));
            d.done()
        }
    }
}
