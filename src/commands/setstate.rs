//! `JWKS.SETSTATE K stored-state`: how a key set reaches replicas and the AOF. Rotations
//! replicate their result, not themselves, so a replica never recomputes times or
//! re-validates under another config. Accepted only from the primary's link or while
//! loading the AOF: clients must go through JWKS.ROTATE's validation.

use redis_module::{Context, ContextFlags, RedisValue};

use crate::datatype::Stored;
use crate::glue::args::Args;
use crate::glue::redis_key::db;
use crate::glue::redis_key::{Key, Mode};
use crate::tracking;
use redis_jwks_core::error::{Error, Result};
use redis_jwks_core::keyset::KeySet;

pub(crate) fn run(ctx: &Context, args: &Args) -> Result<RedisValue> {
    if !ctx
        .get_flags()
        .intersects(ContextFlags::REPLICATED | ContextFlags::LOADING)
    {
        return Err(Error::Disabled(
            "JWKS.SETSTATE is internal to replication and AOF; use JWKS.ROTATE",
        ));
    }
    let (3, Some(name)) = (args.len(), args.string(1)) else {
        return Err(Error::Arity("jwks.setstate"));
    };
    let text = std::str::from_utf8(args.bytes(2)).map_err(|_| Error::State("not UTF-8".into()))?;
    let set = KeySet::from_stored(text)?;
    let key = Key::arg(ctx, name, Mode::Write)?;
    key.keyset()?;
    let db = db(ctx);
    let stored = Stored::new(set);
    let tracked = stored.set().clone();
    // Replacing the old value unlinks it (and forgets the name): track after.
    key.set_keyset(stored)?;
    tracking::track(db, args.bytes(1), &tracked);
    Ok(RedisValue::SimpleStringStatic("OK"))
}
