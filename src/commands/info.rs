//! `JWKS.INFO K`: generation, keys with states and times, the document's ETag, the cache's
//! TTL, counters, audit length and derived key names. Read-only; reading each derived key
//! needs the caller's read permission on it, like a plain read would.

use redis_module::raw::KeyType;
use redis_module::{Context, RedisValue};

use super::{bytes, int, opt_int, text, Map};
use crate::datatype::Stored;
use crate::glue::args::Args;
use crate::glue::caller::Caller;
use crate::glue::clock::now_ms;
use crate::glue::redis_key::db;
use crate::glue::redis_key::{Key, Mode};
use redis_jwks_core::counter_names;
use redis_jwks_core::error::{Access, Error, Result};
use redis_jwks_core::keyset::Entry;
use redis_jwks_core::names::{self, Derived};

fn entry(e: &Entry) -> RedisValue {
    let member = |name| e.jwk.member_str(name).map_or(RedisValue::Null, text);
    let mut m = Map::default();
    m.put("kid", text(e.jwk.kid()))
        .put("state", text(e.state.name()))
        .put("kty", text(e.jwk.kty().name()))
        .put("alg", member("alg"))
        .put("use", member("use"))
        .put("added_ms", RedisValue::Integer(e.added_ms))
        .put("promoted_ms", opt_int(e.promoted_ms))
        .put("demoted_ms", opt_int(e.demoted_ms));
    m.done()
}

pub(crate) fn run(ctx: &Context, args: &Args) -> Result<RedisValue> {
    let (2, Some(arg)) = (args.len(), args.string(1)) else {
        return Err(Error::Arity("jwks.info"));
    };
    let name = args.bytes(1);
    let key = Key::arg(ctx, arg, Mode::Read)?;
    let Some(stored) = key.keyset()? else {
        return Ok(RedisValue::Null);
    };
    describe(ctx, name, stored)
}

fn describe(ctx: &Context, name: &[u8], stored: &Stored) -> Result<RedisValue> {
    let set = stored.set();
    let mut m = Map::default();
    m.put("generation", int(set.generation()))
        .put("current", set.current_kid().map_or(RedisValue::Null, text))
        .put(
            "keys",
            RedisValue::Array(set.published().map(entry).collect()),
        )
        .put("etag", text(&stored.rendered().etag));
    let fleet = crate::fleets::held(db(ctx), name, now_ms());
    m.put("policy", super::policy::policy(set))
        .put("next_change", super::policy::next_change(set))
        .put("verifiers", int(fleet.iter().map(|(_, n)| *n as u64).sum()))
        .put("confirmation", super::policy::confirmation(set, &fleet));
    // A key set moved (RENAME, MOVE) to a name no key set may have keeps no derived keys.
    if names::check_name(name).is_err() {
        m.put("derived_keys", RedisValue::Null);
        return Ok(m.done());
    }
    let caller = Caller::new(ctx);
    let read = |what: Derived| -> Result<Key> {
        let derived = names::derived(name, what);
        caller.check(&derived, Access::Read)?;
        Key::named(ctx, &derived, Mode::Peek)
    };
    m.put(
        "cache_ttl_ms",
        RedisValue::Integer(read(Derived::Cache)?.pttl()),
    );
    let counters_key = read(Derived::Metrics)?;
    counters_key.require_type(KeyType::Hash, "expected a hash (the counters)")?;
    let mut counters = Map::default();
    for counter in counter_names::ALL {
        counters.put(counter, RedisValue::Integer(counters_key.hash_int(counter)));
    }
    m.put("counters", counters.done());
    let audit = read(Derived::Audit)?;
    audit.require_type(KeyType::Stream, "expected a stream (the audit trail)")?;
    m.put("audit_length", RedisValue::Integer(audit.len()));
    let mut names = Map::default();
    for what in Derived::ALL {
        names.put(what.label(), bytes(&names::derived(name, what)));
    }
    m.put("derived_keys", names.done());
    Ok(m.done())
}
