//! `JWKS.GET K`: the JWKS document. Serves `…:cache` if present: a hit is one key lookup
//! and a reply straight from the stored string, like GET. On a miss it renders from the
//! key set and caches the document with the TTL (so this is a write command); nil when
//! there is no key set. Every command that changes a key set deletes the cache in the same
//! command, so a cached document is always the current one.

use redis_module::{raw, raw::KeyType, Context, RedisError, RedisResult, RedisString, RedisValue};

use super::{now_ms, with_keyset, wrong_type};
use crate::config;
use crate::effects::Key;
use crate::keys::{derived_name, DerivedKeys, CACHE};
use crate::observe::{log, metrics, record};

pub fn run(ctx: &Context, args: &[RedisString]) -> RedisResult {
    let [_, key] = args else {
        return Err(RedisError::WrongArity);
    };
    let cache_name = derived_name(key.as_slice(), CACHE)?;
    let cache = ctx.open_key(&RedisString::create_from_slice(ctx.ctx, &cache_name));
    match cache.key_type() {
        KeyType::String => {
            if let Ok(Some(doc)) = cache.read() {
                raw::reply_with_string_buffer(ctx.ctx, doc.as_ptr().cast(), doc.len());
                return Ok(RedisValue::NoReply);
            }
        }
        KeyType::Empty => {}
        _ => {
            return Err(wrong_type(
                &cache_name,
                "expected a string (the cached JWKS)",
            ))
        }
    }
    drop(cache);
    with_keyset(ctx, key, |set| {
        let Some(set) = set else {
            return Ok(RedisValue::Null);
        };
        let keys = DerivedKeys::for_key(key.as_slice())?;
        let doc = set.render();
        let filled = Key::open(ctx, &keys.cache)
            .map_err(str::to_owned)
            .and_then(|c| c.set_with_ttl(doc.as_bytes(), config::cache_ttl_ms(), now_ms()));
        match filled {
            Ok(()) => {
                // A metrics key of another type is left alone: the fill itself succeeded.
                if let Ok(m) = Key::open(ctx, &keys.metrics) {
                    if matches!(m.kind(), KeyType::Hash | KeyType::Empty) {
                        crate::registry::note(&keys.metrics);
                        record::count(&m, metrics::CACHE_FILLS);
                    }
                }
            }
            // Serving the rendered document is still right; the next read retries the fill.
            Err(e) => log::write_failed(&keys.cache, &e),
        }
        Ok(RedisValue::BulkString(doc))
    })
}
