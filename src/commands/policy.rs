//! `JWKS.POLICY K [PROMOTE-AFTER ms] [RETIRE-AFTER ms]`: sets the lifecycle policy of the
//! key set at K (0 turns a part off; an option left out keeps its value) and replies with
//! the policy and the next scheduled change. The change is audited (`JWKS_POLICY_SET`),
//! persisted and replicated with the set; the document does not change, so the generation
//! does not either. A cached document that would outlive the next scheduled change is
//! dropped. Without options, it only replies.

use redis_module::{Context, RedisValue};

use super::{int, text, Map, RedisEffects, Targets};
use crate::commit::Effects;
use crate::datatype::Stored;
use crate::error::{Error, Result, Shown};
use crate::glue::call::{now_ms, Args, Caller};
use crate::glue::key::{Key, Mode};
use crate::keys;
use crate::keyset::{KeySet, Lifecycle};
use crate::observe::audit;
use crate::observe::events::Kind;

/// Ten years: longer is a typo, not a policy.
const MAX_MS: u64 = crate::keyset::lifecycle::MAX_AFTER_MS;

fn parse(args: &[&[u8]], mut policy: Lifecycle) -> Result<Option<Lifecycle>> {
    if args.is_empty() {
        return Ok(None);
    }
    let mut seen: Vec<String> = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let word = String::from_utf8_lossy(arg).to_ascii_uppercase();
        if seen.contains(&word) {
            return Err(Error::Syntax(format!("{word} given twice")));
        }
        let slot = match word.as_str() {
            "PROMOTE-AFTER" => &mut policy.promote_after_ms,
            "RETIRE-AFTER" => &mut policy.retire_after_ms,
            _ => {
                return Err(Error::Syntax(format!(
                    "unknown option {} (PROMOTE-AFTER, RETIRE-AFTER)",
                    Shown::bytes(arg)
                )))
            }
        };
        let value = rest
            .next()
            .ok_or_else(|| Error::Syntax(format!("{word} needs a value")))?;
        *slot = std::str::from_utf8(value)
            .ok()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|ms| *ms <= MAX_MS)
            .ok_or_else(|| {
                Error::Syntax(format!(
                    "{word} needs milliseconds from 0 to {MAX_MS}, got {}",
                    Shown::bytes(value)
                ))
            })?;
        seen.push(word);
    }
    Ok(Some(policy))
}

pub fn run(ctx: &Context, args: &Args) -> Result<RedisValue> {
    if args.len() < 2 {
        return Err(Error::Arity("jwks.policy"));
    }
    let name = args.bytes(1);
    keys::check_name(name)?;
    let key = Key::arg(ctx, args.string(1).ok_or(Error::Arity("jwks.policy"))?, Mode::Read)?;
    let stored = key
        .keyset()?
        .ok_or_else(|| Error::NoKeySet(Shown::bytes(name)))?;
    let set = stored.set();
    let Some(policy) = parse(&args.rest(2), set.lifecycle())? else {
        return Ok(reply(set));
    };
    if policy == set.lifecycle() {
        return Ok(reply(set));
    }
    let next = set.with_lifecycle(policy);
    drop(key);

    let caller = Caller::new(ctx);
    let targets = Targets::check(ctx, &caller, name)?;
    let actx = audit::Context {
        timestamp: audit::timestamp(now_ms()),
        reason: "policy".into(),
        generation: next.generation(),
        user: caller.name(),
        forced: false,
    };
    let stored = Stored::new(next.clone());
    let mut effects = RedisEffects::new(ctx, &targets, Kind::Policy, &stored, None, "policy");
    effects.new_set = Some(stored);
    effects.audit(&audit::policy_set(&actx, policy))?;
    effects.store_set()?;
    // The cached document must not outlive the next scheduled change.
    let cache = Key::named(ctx, &targets.cache, Mode::Peek)?;
    let expires = cache.pttl();
    drop(cache);
    if let Some(due) = next.next_change() {
        let now = now_ms();
        if expires != -2 && (expires == -1 || now.saturating_add(expires) > due.at_ms) {
            effects.delete_cache()?;
        }
    }
    effects.announce()?;
    Ok(reply(&next))
}

/// The policy with the next change.
fn reply(set: &KeySet) -> RedisValue {
    let l = set.lifecycle();
    let mut m = Map::default();
    m.put("promote_after_ms", int(l.promote_after_ms))
        .put("retire_after_ms", int(l.retire_after_ms))
        .put("next_change", next_change(set));
    m.done()
}

/// `promote_after_ms` and `retire_after_ms`.
pub fn policy(set: &KeySet) -> RedisValue {
    let l = set.lifecycle();
    let mut m = Map::default();
    m.put("promote_after_ms", int(l.promote_after_ms))
        .put("retire_after_ms", int(l.retire_after_ms));
    m.done()
}

/// `action`, `kid`, `at_ms` of the next scheduled change, or nil.
pub fn next_change(set: &KeySet) -> RedisValue {
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
