//! `JWKS.STATS`: this node's counters summed over all its key sets, as a flat list of
//! name, value strings: exactly what redis_exporter's `-script` needs, callable from Lua.
//! Cost is one HGET per counter per key set (plus one scan after a start, load or flush).

use redis_module::{raw::KeyType, Context, RedisError, RedisResult, RedisString, RedisValue};

use crate::observe::metrics;
use crate::registry;

pub fn run(ctx: &Context, args: &[RedisString]) -> RedisResult {
    if args.len() != 1 {
        return Err(RedisError::WrongArity);
    }
    let mut totals = [0i64; metrics::ALL.len()];
    let mut sets = 0i64;
    for name in registry::metrics_keys(ctx) {
        let key = ctx.open_key(&RedisString::create_from_slice(ctx.ctx, name.as_slice()));
        if key.key_type() != KeyType::Hash {
            registry::forget(&name);
            continue;
        }
        sets += 1;
        for (total, counter) in totals.iter_mut().zip(metrics::ALL) {
            let value = key
                .hash_get(counter)
                .ok()
                .flatten()
                .and_then(|v| std::str::from_utf8(v.as_slice()).ok()?.parse::<i64>().ok())
                .unwrap_or(0);
            *total = total.saturating_add(value);
        }
    }
    let mut reply = Vec::with_capacity(2 * (metrics::ALL.len() + 1));
    for (counter, total) in metrics::ALL.iter().zip(totals) {
        reply.push(RedisValue::BulkString((*counter).to_owned()));
        reply.push(RedisValue::BulkString(total.to_string()));
    }
    reply.push(RedisValue::BulkString(metrics::KEY_SETS.to_owned()));
    reply.push(RedisValue::BulkString(sets.to_string()));
    Ok(RedisValue::Array(reply))
}
