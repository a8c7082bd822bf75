//! `JWKS.GET K [META]`: the JWKS document of the key set at K, or nil. Read-only: it is
//! served from the key set itself (rendered once per version of the set), so it is exactly
//! the set's document whatever happened to the cache key, and it works on replicas. A read
//! that finds the cache string missing asks the module to fill it (see `upkeep`); the reply
//! does not wait for that. A hit is one key lookup and a reply, like GET.
//!
//! With `META`, a map for an HTTP endpoint: `document`, `etag`, `generation` and `ttl_ms`,
//! how long a copy may be kept: the cache key's remaining TTL, or `jwks.cache-ttl` when
//! nothing is cached yet, never past the next scheduled change.

use redis_module::{raw, Context, RedisValue};

use super::{int, text, Map};
use crate::config;
use crate::datatype::Stored;
use crate::glue::args::Args;
use crate::glue::caller::Caller;
use crate::glue::clock::now_ms;
use crate::glue::redis_key::{Key, Mode};
use crate::upkeep;
use redis_jwks_core::error::{Access, Error, Result};
use redis_jwks_core::names::{self, Derived};

pub(crate) fn run(ctx: &Context, args: &Args) -> Result<RedisValue> {
    let Some(name) = args.string(1) else {
        return Err(Error::Arity("jwks.get"));
    };
    let meta = match args.len() {
        2 => false,
        3 if args.bytes(2).eq_ignore_ascii_case(b"META") => true,
        3 => {
            return Err(Error::Syntax(format!(
                "unknown option {} (META)",
                redis_jwks_core::error::Shown::bytes(args.bytes(2))
            )))
        }
        _ => return Err(Error::Arity("jwks.get")),
    };
    let key = Key::arg(ctx, name, Mode::Read)?;
    let Some(stored) = key.keyset()? else {
        return Ok(RedisValue::Null);
    };
    let name = args.bytes(1);
    // A refused META read must not even cause the module's own fill.
    let reply = if meta {
        Some(described(ctx, name, stored)?)
    } else {
        None
    };
    let now = now_ms();
    if (!stored.cache_ok(now) || stored.check_due(now)) && names::check_name(name).is_ok() {
        upkeep::check_cache(ctx, name, stored, now);
    }
    if let Some(reply) = reply {
        return Ok(reply);
    }
    let doc = stored.rendered().doc.as_bytes();
    // Replied straight from the key set's memory (copied into the reply buffer), not
    // through an owned value: this is the hot path.
    raw::reply_with_string_buffer(ctx.ctx, doc.as_ptr().cast(), doc.len());
    Ok(RedisValue::NoReply)
}

fn described(ctx: &Context, name: &[u8], stored: &Stored) -> Result<RedisValue> {
    let now = now_ms();
    let mut until = stored.set().cache_until(now, config::cache_ttl_ms());
    if names::check_name(name).is_ok() {
        let cache = names::derived(name, Derived::Cache);
        Caller::new(ctx).check(&cache, Access::Read)?;
        let ttl = Key::named(ctx, &cache, Mode::Peek)?.pttl();
        if ttl >= 0 {
            until = until.min(now.saturating_add(ttl));
        }
    }
    let rendered = stored.rendered();
    let mut m = Map::default();
    m.put("document", text(&rendered.doc))
        .put("etag", text(&rendered.etag))
        .put("generation", int(stored.set().generation()))
        .put(
            "ttl_ms",
            RedisValue::Integer(until.saturating_sub(now).max(0)),
        );
    Ok(m.done())
}
