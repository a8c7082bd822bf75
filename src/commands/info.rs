//! `JWKS.INFO K`: generation, keys with states and times, cache TTL, counters, audit
//! length and derived key names. Read-only.

use std::collections::BTreeMap;

use redis_module::{
    redisvalue::RedisValueKey, Context, RedisError, RedisResult, RedisString, RedisValue,
};

use super::rotate::gen_i64;
use super::with_keyset;
use crate::keys::DerivedKeys;
use crate::keyset::{Entry, KeySet};
use crate::observe::metrics;

type Map = BTreeMap<RedisValueKey, RedisValue>;

fn put(map: &mut Map, k: &str, v: RedisValue) {
    map.insert(RedisValueKey::String(k.to_owned()), v);
}

fn text(s: &str) -> RedisValue {
    RedisValue::BulkString(s.to_owned())
}

fn opt_int(v: Option<i64>) -> RedisValue {
    v.map_or(RedisValue::Null, RedisValue::Integer)
}

fn bytes(b: &[u8]) -> RedisValue {
    RedisValue::StringBuffer(b.to_vec())
}

fn read_int(ctx: &Context, cmd: &str, args: &[&[u8]]) -> i64 {
    match ctx.call(cmd, args) {
        Ok(RedisValue::Integer(n)) => n,
        Ok(RedisValue::SimpleString(s)) | Ok(RedisValue::BulkString(s)) => s.parse().unwrap_or(0),
        Ok(RedisValue::StringBuffer(b)) => std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

fn entry(e: &Entry) -> RedisValue {
    let mut m = Map::new();
    put(&mut m, "kid", text(e.jwk.kid()));
    put(&mut m, "state", text(e.state.name()));
    put(&mut m, "kty", text(e.jwk.kty().name()));
    let member = |name| e.jwk.member_str(name).map_or(RedisValue::Null, text);
    put(&mut m, "alg", member("alg"));
    put(&mut m, "use", member("use"));
    put(&mut m, "added_ms", RedisValue::Integer(e.added_ms));
    put(&mut m, "promoted_ms", opt_int(e.promoted_ms));
    put(&mut m, "demoted_ms", opt_int(e.demoted_ms));
    RedisValue::OrderedMap(m)
}

fn describe(ctx: &Context, set: &KeySet, keys: &DerivedKeys) -> RedisValue {
    let mut m = Map::new();
    put(
        &mut m,
        "generation",
        RedisValue::Integer(gen_i64(set.generation())),
    );
    put(
        &mut m,
        "current",
        set.current_kid().map_or(RedisValue::Null, text),
    );
    put(
        &mut m,
        "keys",
        RedisValue::Array(set.published().map(entry).collect()),
    );
    put(
        &mut m,
        "cache_ttl_ms",
        RedisValue::Integer(read_int(ctx, "PTTL", &[&keys.cache])),
    );
    let mut counters = Map::new();
    for name in metrics::ALL {
        let n = read_int(ctx, "HGET", &[&keys.metrics, name.as_bytes()]);
        put(&mut counters, name, RedisValue::Integer(n));
    }
    put(&mut m, "counters", RedisValue::OrderedMap(counters));
    put(
        &mut m,
        "audit_length",
        RedisValue::Integer(read_int(ctx, "XLEN", &[&keys.audit])),
    );
    let mut names = Map::new();
    put(&mut names, "cache", bytes(&keys.cache));
    put(&mut names, "audit", bytes(&keys.audit));
    put(&mut names, "metrics", bytes(&keys.metrics));
    put(&mut m, "derived_keys", RedisValue::OrderedMap(names));
    RedisValue::OrderedMap(m)
}

pub fn run(ctx: &Context, args: &[RedisString]) -> RedisResult {
    let [_, key] = args else {
        return Err(RedisError::WrongArity);
    };
    let keys = DerivedKeys::for_key(key.as_slice())?;
    with_keyset(ctx, key, |set| {
        Ok(set.map_or(RedisValue::Null, |s| describe(ctx, s, &keys)))
    })
}
