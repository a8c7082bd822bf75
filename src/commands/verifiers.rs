//! `JWKS.VERIFIERS K`: the live verifiers of the key set at K (from `JWKS.ACK`), sorted by
//! id: `id`, `generation`, `current` and `next` (1 if that generation publishes the current
//! key, and every next key), `age_ms` since the last ack and `ttl_ms` until it expires.
//! Read-only; a replica has none (acks go to the primary).

use redis_module::{Context, RedisValue};

use super::{bytes, int, Map};
use crate::glue::args::Args;
use crate::glue::clock::now_ms;
use crate::glue::redis_key::db;
use crate::glue::redis_key::{Key, Mode};
use redis_jwks_core::error::{Error, Result};

pub(crate) fn run(ctx: &Context, args: &Args) -> Result<RedisValue> {
    let (2, Some(arg)) = (args.len(), args.string(1)) else {
        return Err(Error::Arity("jwks.verifiers"));
    };
    let name = args.bytes(1);
    let key = Key::arg(ctx, arg, Mode::Read)?;
    let stored = key.existing_keyset()?;
    let set = stored.set();
    let now = now_ms();
    let list = crate::fleets::read(db(ctx), name, |fleet| {
        fleet
            .live(now)
            .map(|(id, v)| {
                let (current, next) = set.holds(v.generation);
                let mut m = Map::default();
                m.put("id", bytes(id))
                    .put("generation", int(v.generation))
                    .put("current", RedisValue::Integer(i64::from(current)))
                    .put("next", RedisValue::Integer(i64::from(next)))
                    .put(
                        "age_ms",
                        RedisValue::Integer(now.saturating_sub(v.acked_ms)),
                    )
                    .put(
                        "ttl_ms",
                        RedisValue::Integer(v.until_ms.saturating_sub(now)),
                    );
                m.done()
            })
            .collect()
    })
    .unwrap_or_default();
    Ok(RedisValue::Array(list))
}
