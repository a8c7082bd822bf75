//! Keeps what is derived from a key set true when something other than the module's own
//! commands changes a key set: `DEL`, `EXPIRE`, eviction, `SET` over it, `RENAME`, `MOVE`,
//! `COPY`, `RESTORE`/`MIGRATE`, flushes, `SWAPDB`, loads; and applies the lifecycle
//! schedule. The hooks that notice (the data type's callbacks) and the state they keep are
//! in `tracking`; this directory does the writes, through the write path:
//!
//! - `reconcile`: runs the queued clean-ups (the stale cache invalidated, a lost key set
//!   audited, subscribers told, fills);
//! - `scheduler`: applies the policy changes that fall due (and CONFIRM promotions);
//! - `server_events`: flushes, SWAPDB, loads, role changes, snapshots.
//!
//! `JWKS.GET` serves the document from the key set itself, so it is right whatever happened.
//! The cache string (`K:cache`, for plain `GET` readers, replicas and client-side caching)
//! must hold that document or nothing; the registry and the schedule must list exactly the
//! key sets there are. A key set renamed or moved to a new name is registered there when the
//! module next opens it (`Key::keyset`). The keyspace-event subscription of 0.2.0, which saw
//! every string and generic write of the server (a 10-20 % tax on unrelated `SET`, `DEL`,
//! `EXPIRE`), is the opt-in `jwks.keyspace-hook yes`: with it, a value written at a key
//! set's cache name by another command is removed at once, and a renamed key set is
//! registered at once.
//!
//! A job only writes when the server allows a write right then (`gate`): never on a
//! replica, and not while clients are paused (a planned failover), the server is loading or
//! out of memory; then it waits and runs right after, once. The module touches a derived
//! name only for a key set: a job changes `K:cache` only while a key set is at K, or right
//! after one left it.

mod reconcile;
mod scheduler;
pub(crate) mod server_events;

use std::os::raw::c_int;

use redis_module::raw;
use redis_module::{Context, ContextFlags};

use crate::config;
use crate::glue::ffi;
use crate::glue::redis_key::{db, Key, Mode};
use crate::glue::subscribe;
use crate::tracking::{self, queue, schedule};
use redis_jwks_core::error::Result;
use redis_jwks_core::names::{self, Derived};

pub(crate) use reconcile::before_snapshot;

/// Keeps a context for timers, registers the runners of the clean-up queue and the
/// schedule, and, with `jwks.keyspace-hook yes`, subscribes to keyspace events; called once
/// at load.
pub(crate) fn start(ctx: &Context) -> Result<()> {
    ffi::keep_detached(ctx)?;
    queue::set_runner(reconcile::drain);
    schedule::set_runner(scheduler::run_due);
    crate::datatype::enable_io_errors(ctx);
    if config::keyspace_hook() {
        // Generic (RENAME, MOVE, RESTORE, COPY, DEL, EXPIRE...) and string writes: every
        // way a string can appear at or change at a cache name, and a key set arrive under
        // a new name. Every such write of the server pays for this call.
        // Not eviction or expiry: their events come from inside the server's scans of the
        // keyspace, where a job must not write.
        let classes = (raw::REDISMODULE_NOTIFY_GENERIC | raw::REDISMODULE_NOTIFY_STRING) as c_int;
        subscribe::keyspace_events(ctx, classes, on_keyspace_event)?;
    }
    server_events::subscribe(ctx)
}

/// A keyspace event (only with `jwks.keyspace-hook yes`): a write at a cache name is
/// reconciled, a key renamed or moved here may be an arriving key set. Every generic and
/// string event of the server comes here: the common case (not a cache key, not an
/// arrival, nothing queued) returns after a few comparisons.
fn on_keyspace_event(ctx: &Context, event: &[u8], name: &[u8]) {
    if tracking::is_ours() {
        return;
    }
    let cache = name.ends_with(Derived::Cache.suffix());
    let arrival = matches!(event, b"rename_to" | b"move_to");
    if !cache && !arrival && !queue::is_queued() {
        return;
    }
    let db = db(ctx);
    if arrival {
        // A key set renamed onto a cache name is an arrival too (and is warned about).
        queue::push(db, name, |w| {
            w.track = true;
            w.announce = true;
        });
    }
    if cache {
        if let Some((Derived::Cache, owner)) = names::owner(name) {
            queue::push(db, &owner, |w| w.reconcile = true);
        }
    }
    if queue::is_queued() {
        queue::arm_post(ctx);
    }
}

/// From JWKS.GET: the cache string is not known to hold the document (fill it soon), or it
/// is time to look whether it still does (a second since the last look): a copy deleted,
/// expired early or overwritten by another command is refilled within a second of reads.
pub(crate) fn check_cache(ctx: &Context, name: &[u8], stored: &crate::datatype::Stored, now: i64) {
    if stored.cache_ok(now) {
        let cache = names::derived(name, Derived::Cache);
        let holds = Key::named(ctx, &cache, Mode::Peek)
            .is_ok_and(|c| c.string() == Some(stored.rendered().doc.as_bytes()));
        if holds {
            return;
        }
        stored.forget_cache();
    }
    request_fill(ctx, name, stored);
}

fn request_fill(ctx: &Context, name: &[u8], stored: &crate::datatype::Stored) {
    if !tracking::is_replica() && stored.claim_fill() {
        queue::push(db(ctx), name, |w| w.fill = true);
        queue::arm_timer(ctx, 0);
    }
}

/// Whether the module may write from a job or timer right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Write.
    Open,
    /// Not now: clients are paused for writes (CLIENT PAUSE, FAILOVER), the server is
    /// loading or out of memory. Try again shortly; the change happens right after.
    Wait,
    /// Never on this node: a replica, where the primary's writes arrive through the link.
    Replica,
}

/// Every write from a callback, job or timer asks this first. Writing while clients are
/// paused would fail a server assertion (the dataset must hold still for a failover) as
/// soon as AOF is on or a replica is attached.
pub(crate) fn gate(ctx: &Context) -> Gate {
    let flags = ctx.get_flags();
    if tracking::is_replica() || flags.contains(ContextFlags::SLAVE) {
        return Gate::Replica;
    }
    if flags.intersects(ContextFlags::LOADING | ContextFlags::OOM) || ffi::writes_paused() {
        return Gate::Wait;
    }
    Gate::Open
}
