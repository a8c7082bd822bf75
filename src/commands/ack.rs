//! `JWKS.ACK K GENERATION g ID id [ETAG etag] [TTL ms]`: verifier `id` holds the document
//! of generation g of the key set at K, and counts as live for TTL ms (default 30 s) unless
//! it acks again. With the document's ETag, an ack about a key set once at this name (whose
//! generations repeat) is refused (`STALE`) rather than counted. Replies with K's generation, so a verifier that missed a change event learns
//! it from its next ack. A read of K for ACL (a verifier role reads and acks; it cannot
//! write the key set) but not in @read: under CONFIRM an ack can bring a promotion, so a
//! role is granted `+jwks.ack` by name. Kept in the primary's memory only (`fleets`); a
//! replica refuses it, and cluster clients are sent to the primary since it is not flagged
//! readonly.

use redis_module::{Context, RedisValue};

use super::int;
use crate::glue::args::Args;
use crate::glue::clock::now_ms;
use crate::glue::redis_key::db;
use crate::glue::redis_key::{Key, Mode};
use crate::observe::stats;
use crate::tracking;
use redis_jwks_core::args;
use redis_jwks_core::counter_names;
use redis_jwks_core::error::{Error, Result};

pub(crate) fn run(ctx: &Context, args: &Args) -> Result<RedisValue> {
    let (true, Some(arg)) = (args.len() >= 6, args.string(1)) else {
        return Err(Error::Arity("jwks.ack"));
    };
    let ack = args::parse_ack(&args.rest(2))?;
    if tracking::is_replica() {
        return Err(Error::AckOnReplica);
    }
    let name = args.bytes(1);
    let key = Key::arg(ctx, arg, Mode::Read)?;
    let stored = key.existing_keyset()?;
    let set = stored.set();
    if ack.generation > set.generation() {
        return Err(Error::GenerationAhead {
            acked: ack.generation,
            generation: set.generation(),
        });
    }
    let db = db(ctx);
    let current = (set.generation(), || stored.rendered().etag.clone());
    let changed = crate::fleets::ack(db, name, &ack, current, now_ms())?;
    stats::count(counter_names::VERIFIER_ACKS);
    if changed && set.lifecycle().confirms() {
        // The ack may confirm the next key: the scheduler looks at once.
        tracking::reschedule(db, name, set);
    }
    Ok(int(set.generation()))
}
