//! `JWKS.GET K`: the JWKS document of the key set at K, or nil. Read-only: it is served from
//! the key set itself (rendered once per version of the set), so it is exactly the set's
//! document whatever happened to the cache key, and it works on replicas. A read that finds
//! the cache string missing asks the module to fill it (see `upkeep`); the reply does not
//! wait for that. A hit is one key lookup and a reply, like GET.

use redis_module::{raw, Context, RedisValue};

use crate::error::{Error, Result};
use crate::glue::call::Args;
use crate::glue::key::{Key, Mode};
use crate::keys;
use crate::upkeep;

pub fn run(ctx: &Context, args: &Args) -> Result<RedisValue> {
    let (2, Some(name)) = (args.len(), args.string(1)) else {
        return Err(Error::Arity("jwks.get"));
    };
    let key = Key::arg(ctx, name, Mode::Read)?;
    let Some(stored) = key.keyset()? else {
        return Ok(RedisValue::Null);
    };
    let doc = stored.rendered().doc.as_bytes();
    if !stored.cache_ok() && keys::check_name(args.bytes(1)).is_ok() {
        upkeep::request_fill(ctx, args.bytes(1), stored);
    }
    // Replied straight from the key set's memory (copied into the reply buffer), not
    // through an owned value: this is the hot path.
    raw::reply_with_string_buffer(ctx.ctx, doc.as_ptr().cast(), doc.len());
    Ok(RedisValue::NoReply)
}
