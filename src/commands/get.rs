//! `JWKS.GET K`: the JWKS document. A cache hit is one key lookup and a reply; a miss
//! renders from the key set and caches it with the TTL (so this is a write command).

use redis_module::{raw::KeyType, Context, RedisError, RedisResult, RedisString, RedisValue};

use super::{with_keyset, wrong_type};
use crate::calls;
use crate::config;
use crate::keys::DerivedKeys;
use crate::observe::{log, metrics, record};

pub fn run(ctx: &Context, args: &[RedisString]) -> RedisResult {
    let [_, key] = args else {
        return Err(RedisError::WrongArity);
    };
    let keys = DerivedKeys::for_key(key.as_slice())?;
    with_keyset(ctx, key, |set| {
        // No key set, no document, whatever a stray cache key may hold.
        let Some(set) = set else {
            return Ok(RedisValue::Null);
        };
        let cache = ctx.open_key(&ctx.create_string(keys.cache.as_slice()));
        match cache.key_type() {
            KeyType::String => {
                if let Ok(Some(doc)) = cache.read() {
                    return Ok(RedisValue::StringBuffer(doc.to_vec()));
                }
            }
            KeyType::Empty => {}
            _ => {
                return Err(wrong_type(
                    &keys.cache,
                    "expected a string (the cached JWKS)",
                ))
            }
        }
        let doc = set.render();
        let ttl = config::cache_ttl_ms().to_string();
        match calls::write(
            ctx,
            "SET",
            &[&keys.cache, doc.as_bytes(), b"PX", ttl.as_bytes()],
        ) {
            Ok(_) => {
                record::count(ctx, &keys.metrics, metrics::CACHE_FILLS);
            }
            // Serving the rendered document is still right; the next read retries the fill.
            Err(e) => log::audit_write_failed(ctx, &keys.cache, &e),
        }
        Ok(RedisValue::BulkString(doc))
    })
}
