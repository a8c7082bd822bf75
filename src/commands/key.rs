//! `JWKS.KEY K kid`: the published JWK with that kid, as JSON, or nil. Read-only (works on
//! replicas): for verifiers that look a key up by the kid in a token's header without
//! parsing the whole document.

use redis_module::{raw, Context, RedisValue};

use crate::glue::call::Args;
use crate::glue::redis_key::{Key, Mode};
use redis_jwks_core::error::{Error, Result};

pub(crate) fn run(ctx: &Context, args: &Args) -> Result<RedisValue> {
    let (3, Some(name)) = (args.len(), args.string(1)) else {
        return Err(Error::Arity("jwks.key"));
    };
    let key = Key::arg(ctx, name, Mode::Read)?;
    let Some(stored) = key.keyset()? else {
        return Ok(RedisValue::Null);
    };
    let kid = args.bytes(2);
    let Some(entry) = stored
        .set()
        .entries()
        .iter()
        .find(|e| e.jwk.kid().as_bytes() == kid)
    else {
        return Ok(RedisValue::Null);
    };
    let json = entry.jwk.json().get().as_bytes();
    raw::reply_with_string_buffer(ctx.ctx, json.as_ptr().cast(), json.len());
    Ok(RedisValue::NoReply)
}
