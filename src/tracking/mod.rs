//! What the module keeps in memory about the keyspace, and the hooks that keep it true:
//! which key sets are where (`registry`), when each one's policy next changes it
//! (`schedule`), what clean-up each name waits for (`queue`), whether this node is a
//! replica, and whether a write is the module's own. Nothing here writes a key: `upkeep`
//! does the clean-ups and the scheduled changes, through the write path, from the runners
//! it registers at load. So the write path (`write`) and the key wrapper
//! (`glue::redis_key`) can keep this up to date without importing what calls them.
//!
//! The hooks are the data type's own callbacks, which run only for key sets and so cost
//! other workloads nothing:
//!
//! - unlink: a key set left its key (deleted, expired, evicted, overwritten, renamed or
//!   moved away): its cache goes, and `SET` (or any other type) over it is reported as lost;
//! - RDB load (load, RESTORE, MIGRATE, full sync) and copy: a key set arrived at a name.
//!
//! None of them may write (Redis is in the middle of a command, an expiry or an eviction):
//! they queue a job for the name.

pub(crate) mod queue;
pub(crate) mod registry;
pub(crate) mod schedule;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use redis_module::{Context, ContextFlags};

use crate::fleets;
use crate::glue::clock::now_ms;
use crate::glue::ffi::{self, guarded};
use crate::observe::log;
use redis_jwks_core::keyset::KeySet;
use redis_jwks_core::names;

/// This node replicates another: the module writes nothing of its own (fills, reconciles,
/// scheduled changes); the primary's effects arrive through the link.
static REPLICA: AtomicBool = AtomicBool::new(false);

pub(crate) fn is_replica() -> bool {
    REPLICA.load(Ordering::Relaxed)
}

pub(crate) fn set_replica(replica: bool) {
    REPLICA.store(replica, Ordering::Relaxed);
}

/// Nesting depth of the module's own writes (only the main thread touches it).
static OURS: AtomicU32 = AtomicU32::new(0);

/// Runs the module's own write: the unlinks it causes are not someone else's.
pub(crate) fn ours<T>(f: impl FnOnce() -> T) -> T {
    OURS.fetch_add(1, Ordering::Relaxed);
    let result = f();
    OURS.fetch_sub(1, Ordering::Relaxed);
    result
}

pub(crate) fn is_ours() -> bool {
    OURS.load(Ordering::Relaxed) > 0
}

/// A key set is now at (`db`, `name`): what JWKS.STATS reports of it and when its policy
/// next changes it.
pub(crate) fn track(db: i32, name: &[u8], set: &KeySet) {
    registry::put(db, name, registry::Snapshot::of(set));
    let now = now_ms();
    fleets::saw_generation(db, name, set, now);
    schedule::set(db, name, fleets::wake_at(db, name, set, now));
}

/// When the policy next changes the key set at (`db`, `name`) may have moved (an ack under
/// CONFIRM): the schedule only, not the registry (an ack changes nothing it reports).
pub(crate) fn reschedule(db: i32, name: &[u8], set: &KeySet) {
    schedule::set(db, name, fleets::wake_at(db, name, set, now_ms()));
}

/// The key set at `name` was opened after it had left another key (RENAME, MOVE): register
/// it here. Called by `Key::keyset`, so any command on it heals the registry.
pub(crate) fn placed(db: i32, name: &[u8], set: &KeySet) {
    track(db, name, set);
    if names::check_name(name).is_err() {
        log::reserved_name(name);
    }
}

/// From the data type's unlink callback: the key set at `name` in `db` left its key.
pub(crate) fn on_unlink(db: i32, name: &[u8]) {
    guarded("unlink", || {
        let before = registry::remove(db, name).map(|s| s.fingerprint);
        schedule::remove(db, name);
        if is_ours() {
            return;
        }
        fleets::forget(db, name);
        queue::push(db, name, |w| {
            w.gone = true;
            w.announce = true;
            w.before = w.before.or(before);
        });
        // A timer, never a post-notification job: an unlink may come from the server's
        // active expiry or eviction, in the middle of a scan of the keyspace, and a job
        // would run (and delete the cache key) inside that scan (seen crashing Valkey 8.0).
        // The clean-up runs in the next event-loop iteration; a snapshot taken before then
        // is cleaned in its child (`upkeep::before_snapshot`).
        if let Some(ctx) = ffi::detached() {
            queue::arm_timer(&ctx, 0);
        }
    });
}

/// From RDB load (a load, RESTORE, MIGRATE, a full sync): a key set is being loaded at
/// `name`. Registered after the command, where it really is (a RESTORE with a past
/// `ABSTTL` frees it at once). A load at start or a reload announces nothing.
pub(crate) fn loaded(db: i32, name: &[u8]) {
    guarded("load", || {
        let ctx = ffi::detached();
        let loading = ctx
            .as_ref()
            .is_some_and(|c| c.get_flags().contains(ContextFlags::LOADING));
        queue::push(db, name, |w| {
            w.track = true;
            w.announce |= !loading;
        });
        if let Some(ctx) = ctx {
            queue::arm_timer(&ctx, 0);
        }
    });
}

/// From COPY (and the keyspace hook's RENAME/MOVE): a key set arrives at `name`.
pub(crate) fn arrived(db: i32, name: &[u8]) {
    guarded("arrival", || {
        queue::push(db, name, |w| {
            w.track = true;
            w.announce = true;
        });
        if let Some(ctx) = ffi::detached() {
            queue::arm_soon(&ctx);
        }
    });
}

/// After a flush or SWAPDB: check each name (with what was there before) and announce what
/// is there now, right after the command, as for a DEL.
pub(crate) fn recheck(ctx: &Context, names: Vec<(i32, Vec<u8>, Option<u64>)>) {
    if names.is_empty() {
        return;
    }
    for (db, name, before) in names {
        queue::push(db, &name, |w| {
            w.gone = true;
            w.track = true;
            w.announce = true;
            w.before = w.before.or(before);
        });
    }
    queue::arm_post(ctx);
}

/// Forgets db `db` (every db for -1): flushed, or replaced by a load.
pub(crate) fn clear(db: i32) {
    registry::clear(db);
    schedule::clear(db);
    fleets::clear(db);
}

pub(crate) fn swap(a: i32, b: i32) {
    registry::swap(a, b);
    schedule::swap(a, b);
    fleets::swap(a, b);
}
