//! `JWKS.KEY K kid`: the published JWK with that kid, as JSON, or nil. Read-only (works on
//! replicas): for verifiers that look a key up by the kid in a token's header without
//! parsing the whole document. A miss on a key set that exists is counted (unknown-kid
//! lookups: forged tokens, or an issuer signing with an unpublished key).

use redis_module::{raw, Context, RedisValue};

use crate::glue::call::{self, Args};
use crate::glue::redis_key::{Key, Mode};
use crate::observe::stats;
use redis_jwks_core::counter_names;
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
        stats::count(counter_names::UNKNOWN_KID_LOOKUPS);
        stats::count_unknown_kid(call::db(ctx), args.bytes(1));
        return Ok(RedisValue::Null);
    };
    let json = entry.jwk.json().get().as_bytes();
    raw::reply_with_string_buffer(ctx.ctx, json.as_ptr().cast(), json.len());
    Ok(RedisValue::NoReply)
}
