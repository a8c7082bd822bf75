//! `JWKS.ROTATE K [IFGEN generation] [REASON reason] op [op ...]`: validates every op,
//! swaps the key set, and deletes the cached JWKS, all in one command.

use std::collections::BTreeMap;

use redis_module::{
    redisvalue::RedisValueKey, Context, RedisError, RedisResult, RedisString, RedisValue,
};

use super::{current_user, invalidate, now_ms, open_derived, slices, wrong_type};
use crate::args;
use crate::config;
use crate::datatype::{KEYSET_TYPE, SETSTATE_COMMAND};
use crate::error::Error;
use crate::keys::DerivedKeys;
use crate::keyset::KeySet;
use crate::observe::{audit, metrics, record};

pub fn run(ctx: &Context, args: &[RedisString]) -> RedisResult {
    let [_, key, rest @ ..] = args else {
        return Err(RedisError::WrongArity);
    };
    if rest.is_empty() {
        return Err(RedisError::WrongArity);
    }
    let keys = DerivedKeys::for_key(key.as_slice())?;
    let req = args::parse_rotate(&slices(rest), &config::policy())?;
    let derived = open_derived(ctx, &keys)?;

    let handle = ctx.open_key_writable(key);
    let stored = handle
        .get_value::<KeySet>(&KEYSET_TYPE)
        .map_err(|_| wrong_type(key.as_slice(), "not a JWKS key set"))?;
    let empty = KeySet::default();
    let set: &KeySet = stored.as_deref().unwrap_or(&empty);
    if let Some(expected) = req.if_gen {
        if expected != set.generation() {
            return Err(Error::GenerationMismatch {
                expected,
                actual: set.generation(),
            }
            .into());
        }
    }
    let now = now_ms();
    let (next, changes) = set.apply(&req.ops, now)?;
    if changes.is_empty() {
        return Ok(reply(ReplySet::of(&next), 0, None));
    }

    // Commit: from here on nothing can fail back to the client.
    let state = next.to_stored();
    let response_set = ReplySet::of(&next);
    let generation = next.generation();
    handle.set_value(&KEYSET_TYPE, next)?;
    drop(handle);
    ctx.replicate(SETSTATE_COMMAND, &[key.as_slice(), state.as_bytes()]);

    let actx = audit::Context {
        timestamp: audit::timestamp(now),
        reason: req.reason,
        generation,
        user: current_user(ctx),
    };
    for change in &changes {
        record::append(&derived.audit, &audit::key_change(change, &actx));
    }
    record::count(&derived.metrics, metrics::ROTATIONS);
    let mut kids: Vec<&str> = Vec::with_capacity(changes.len());
    for kid in changes.iter().map(audit::kid_of) {
        if !kids.contains(&kid) {
            kids.push(kid);
        }
    }
    let outcome = invalidate::invalidate(key.as_slice(), &derived, &actx, &kids, changes.len());
    Ok(reply(response_set, changes.len(), Some(outcome)))
}

/// What the reply reports of the new set, taken before the set moves into Redis.
struct ReplySet {
    generation: u64,
    current: Option<String>,
    published: Vec<String>,
}

impl ReplySet {
    fn of(set: &KeySet) -> ReplySet {
        ReplySet {
            generation: set.generation(),
            current: set.current_kid().map(str::to_owned),
            published: set
                .published_kids()
                .into_iter()
                .map(str::to_owned)
                .collect(),
        }
    }
}

fn reply(set: ReplySet, changed: usize, outcome: Option<invalidate::Outcome>) -> RedisValue {
    let mut map = BTreeMap::new();
    let mut put = |k: &str, v: RedisValue| {
        map.insert(RedisValueKey::String(k.to_owned()), v);
    };
    put("generation", RedisValue::Integer(gen_i64(set.generation)));
    put(
        "current",
        set.current.map_or(RedisValue::Null, RedisValue::BulkString),
    );
    put(
        "published",
        RedisValue::Array(
            set.published
                .into_iter()
                .map(RedisValue::BulkString)
                .collect(),
        ),
    );
    put("changed", RedisValue::Integer(changed as i64));
    let (invalidated, deleted, error) = match &outcome {
        Some(o) => (o.error.is_none(), o.deleted, o.error.clone()),
        None => (false, false, None),
    };
    put("invalidated", RedisValue::Integer(i64::from(invalidated)));
    put("cache_deleted", RedisValue::Integer(i64::from(deleted)));
    if let Some(e) = error {
        put("invalidation_error", RedisValue::BulkString(e));
    }
    RedisValue::OrderedMap(map)
}

pub fn gen_i64(generation: u64) -> i64 {
    i64::try_from(generation).unwrap_or(i64::MAX)
}
