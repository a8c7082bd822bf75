//! `JWKS.SETSTATE K stored-state`: how a key set reaches replicas and the AOF. Rotations
//! replicate their result, not themselves, so a replica never recomputes times or
//! re-validates under another config. Accepted only from the primary's link or while
//! loading the AOF: clients must go through JWKS.ROTATE's validation.

use redis_module::{Context, ContextFlags, RedisError, RedisResult, RedisString, RedisValue};

use super::wrong_type;
use crate::datatype::KEYSET_TYPE;
use crate::keyset::KeySet;

pub fn run(ctx: &Context, args: &[RedisString]) -> RedisResult {
    let flags = ctx.get_flags();
    if !flags.intersects(ContextFlags::REPLICATED | ContextFlags::LOADING) {
        return Err(RedisError::Str(
            "ERR JWKS.SETSTATE is internal to replication and AOF; use JWKS.ROTATE",
        ));
    }
    let [_, key, state] = args else {
        return Err(RedisError::WrongArity);
    };
    let text = std::str::from_utf8(state.as_slice())
        .map_err(|_| RedisError::Str("ERR corrupt key set state: not UTF-8"))?;
    let set = KeySet::from_stored(text)?;
    let handle = ctx.open_key_writable(key);
    if handle.get_value::<KeySet>(&KEYSET_TYPE).is_err() {
        return Err(wrong_type(key.as_slice(), "not a JWKS key set"));
    }
    handle.set_value(&KEYSET_TYPE, set)?;
    if let Ok(metrics) = crate::keys::derived_name(key.as_slice(), crate::keys::METRICS) {
        crate::registry::note(&metrics);
    }
    Ok(RedisValue::SimpleStringStatic("OK"))
}
