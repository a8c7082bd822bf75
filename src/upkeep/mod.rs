//! Keeps what is derived from a key set true when something other than the module's own
//! commands changes a key set or its cache: `DEL`, `EXPIRE`, eviction, `RENAME`, `MOVE`,
//! `COPY`, `RESTORE`, `SET` on the cache key, and so on.
//!
//! `JWKS.GET` serves the document from the key set itself, so it is right whatever happened.
//! The cache string (`K:cache`, for plain `GET` readers, replicas and client-side caching)
//! must hold that document or nothing. Two hooks notice when it may not:
//!
//! - the data type's unlink callback: a key set left its key (deleted, expired, evicted,
//!   overwritten, renamed or moved away);
//! - a keyspace-event subscription: anything done to a cache key by someone other than the
//!   module, and a key set arriving under a new name.
//!
//! Neither may write (Redis is in the middle of a command, an expiry or an eviction), so they
//! queue a *reconcile* of the key set's name, run right after the command as a
//! post-notification job where the server has them (Redis 7.2+, Valkey), else from a timer
//! in the next event-loop iteration (Redis 7.0). Reconciling deletes a cache string that is
//! not exactly the current document of the key set at its name.
//!
//! The same queue carries *fills*: `JWKS.GET` is read-only, and the module itself writes
//! the cache string after a read finds it missing (on primaries only).

pub mod server_events;
pub mod registry;
pub mod schedule;

use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};

use redis_module::raw::{self, KeyType, RedisModuleCtx, RedisModuleString};
use redis_module::{Context, ContextFlags, RedisString};

use crate::config;
use crate::datatype::Stored;
use crate::error::Result;
use crate::glue::call::{self, now_ms};
use crate::glue::key::{api, publish, Key, Mode};
use crate::keys::{self, Derived, Name};
use crate::observe::{events, log, metrics, stats};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// Something touched the cache key.
    Reconcile,
    /// The key set left its key.
    Gone,
    /// A key set arrived at the key by a generic command.
    Arrived,
    Fill,
}

struct Job {
    db: i32,
    key: Name,
    kind: Kind,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    timer_armed: bool,
    post_armed: bool,
}

// Main thread only: commands, keyspace events, unlink callbacks and timers all run there.
thread_local! {
    static QUEUE: RefCell<Queue> = RefCell::new(Queue::default());
}

/// Nesting depth of the module's own writes. An atomic rather than a thread-local: it is
/// read on every keyspace event of the server, and in a shared library each thread-local
/// access is a call. Only the main thread touches it.
static OURS: AtomicU32 = AtomicU32::new(0);
/// The queue holds jobs (read on every keyspace event, for the same reason).
static QUEUED: AtomicBool = AtomicBool::new(false);

/// A context for arming timers from callbacks that have none (unlink).
pub(super) static DETACHED: AtomicPtr<RedisModuleCtx> = AtomicPtr::new(ptr::null_mut());

/// A key set is now at (`db`, `name`): what JWKS.STATS reports of it and when its policy
/// next changes it.
pub fn track(db: i32, name: &[u8], set: &crate::keyset::KeySet) {
    registry::put(db, name, registry::Snapshot::of(set));
    schedule::track(db, name, set);
}

/// The module's detached context: for callbacks that get none (INFO, unlink), on the main
/// thread only.
pub fn detached() -> *mut RedisModuleCtx {
    DETACHED.load(Ordering::Relaxed)
}

/// Runs the module's own write: the events and unlinks it causes are not someone else's.
pub fn ours<T>(f: impl FnOnce() -> T) -> T {
    OURS.fetch_add(1, Ordering::Relaxed);
    let result = f();
    OURS.fetch_sub(1, Ordering::Relaxed);
    result
}

fn is_ours() -> bool {
    OURS.load(Ordering::Relaxed) > 0
}

fn push(db: i32, key: &[u8], kind: Kind) {
    QUEUE.with(|q| {
        q.borrow_mut().jobs.push(Job {
            db,
            key: Name::from_slice(key),
            kind,
        })
    });
    QUEUED.store(true, Ordering::Relaxed);
}

/// Subscribes to keyspace events and keeps a context for timers; called once at load.
pub fn start(ctx: &Context) -> Result<()> {
    let detach = api!(RedisModule_GetDetachedThreadSafeContext)?;
    // SAFETY: a live context at load; the detached context lives as long as the module.
    DETACHED.store(unsafe { detach(ctx.ctx) }, Ordering::Relaxed);
    let subscribe = api!(RedisModule_SubscribeToKeyspaceEvents)?;
    // Generic (DEL, RENAME, MOVE, COPY, RESTORE, EXPIRE...), string writes, expiry and
    // eviction: every way a string can appear at, change at or leave a cache name, and a
    // key set arrive under a new one. Writes of other types cannot put a document there.
    let classes = (raw::REDISMODULE_NOTIFY_GENERIC
        | raw::REDISMODULE_NOTIFY_STRING
        | raw::REDISMODULE_NOTIFY_EXPIRED
        | raw::REDISMODULE_NOTIFY_EVICTED) as c_int;
    // SAFETY: a live context and a callback with the expected signature.
    if unsafe { subscribe(ctx.ctx, classes, Some(on_event)) } != raw::REDISMODULE_OK as c_int {
        return Err(crate::error::Error::Api("RedisModule_SubscribeToKeyspaceEvents"));
    }
    server_events::subscribe(ctx)
}

/// Runs a callback body, never letting a panic unwind into Redis.
fn guarded(what: &str, f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        log::internal_error(what);
    }
}

/// From the data type's unlink callback: the key set at `name` in `db` left its key.
pub fn on_unlink(db: i32, name: &[u8]) {
    guarded("unlink", || {
        registry::remove(db, name);
        schedule::remove(db, name);
        if is_ours() {
            return;
        }
        push(db, name, Kind::Gone);
        // A keyspace event usually follows and runs the job right after the command; the
        // timer is the backstop for paths without one.
        arm_timer(DETACHED.load(Ordering::Relaxed));
    });
}

/// The keyspace-event callback.
///
/// # Safety
/// Called by Redis with an event's context, name and key.
unsafe extern "C" fn on_event(
    ctx: *mut RedisModuleCtx,
    _class: c_int,
    event: *const c_char,
    key: *mut RedisModuleString,
) -> c_int {
    // Every keyspace event of the server comes here: the common case (not a cache key, not
    // an arrival) must cost a few instructions.
    if is_ours() || key.is_null() || event.is_null() {
        return raw::REDISMODULE_OK as c_int;
    }
    let name = RedisString::string_as_slice(key);
    let cache = name.ends_with(Derived::Cache.suffix());
    // SAFETY: Redis passes a NUL-terminated event name (at least its terminator).
    let first = unsafe { *event } as u8;
    if !cache && !matches!(first, b'r' | b'm' | b'c') && !QUEUED.load(Ordering::Relaxed) {
        return raw::REDISMODULE_OK as c_int;
    }
    guarded("keyspace event", || {
        let context = Context::new(ctx);
        // SAFETY: as above.
        let event = unsafe { CStr::from_ptr(event) }.to_bytes();
        if cache {
            if let Some((Derived::Cache, owner)) = keys::owner(name) {
                push(call::db(&context), &owner, Kind::Reconcile);
            }
        } else if matches!(event, b"rename_to" | b"move_to" | b"copy_to" | b"restore") {
            arrived(&context, name);
        }
        if QUEUED.load(Ordering::Relaxed) {
            arm_post(ctx);
        }
    });
    raw::REDISMODULE_OK as c_int
}

/// A value arrived under `name` by a generic command: if it is a key set, register it and
/// forget what its cache flag said about its old name.
fn arrived(ctx: &Context, name: &[u8]) {
    let Ok(key) = Key::named(ctx, name, Mode::Peek) else {
        return;
    };
    if let Ok(Some(stored)) = key.keyset() {
        stored.set_cache_ok(false);
        let db = call::db(ctx);
        track(db, name, stored.set());
        if keys::check_name(name).is_ok() {
            push(db, name, Kind::Arrived);
        } else {
            log::reserved_name(name);
        }
    }
}

/// After a flush or SWAPDB: check each name and announce what is there now (right after the
/// command, as for a DEL).
pub fn recheck(ctx: *mut RedisModuleCtx, names: Vec<(i32, Vec<u8>)>) {
    if names.is_empty() {
        return;
    }
    for (db, name) in names {
        push(db, &name, Kind::Gone);
    }
    arm_post(ctx);
}

/// From JWKS.GET: the cache string is not known to hold the document; fill it soon.
pub fn request_fill(ctx: &Context, name: &[u8], stored: &Stored) {
    if !server_events::is_replica() && stored.claim_fill() {
        push(call::db(ctx), name, Kind::Fill);
        arm_timer(ctx.ctx);
    }
}

fn arm_timer(ctx: *mut RedisModuleCtx) {
    if ctx.is_null() || QUEUE.with(|q| q.borrow().timer_armed) {
        return;
    }
    let Ok(create) = api!(RedisModule_CreateTimer) else {
        return;
    };
    // SAFETY: a live context; the callback takes no data.
    unsafe { create(ctx, 0, Some(on_timer), ptr::null_mut()) };
    QUEUE.with(|q| q.borrow_mut().timer_armed = true);
}

fn arm_post(ctx: *mut RedisModuleCtx) {
    if QUEUE.with(|q| q.borrow().post_armed) {
        return;
    }
    let armed = match api!(RedisModule_AddPostNotificationJob) {
        Ok(add) => {
            // SAFETY: a live context; the job takes no data.
            let status = unsafe { add(ctx, Some(on_post_job), ptr::null_mut(), None) };
            status == raw::REDISMODULE_OK as c_int
        }
        Err(_) => false,
    };
    if armed {
        QUEUE.with(|q| q.borrow_mut().post_armed = true);
    } else {
        arm_timer(ctx);
    }
}

unsafe extern "C" fn on_timer(ctx: *mut RedisModuleCtx, _data: *mut c_void) {
    QUEUE.with(|q| q.borrow_mut().timer_armed = false);
    guarded("upkeep timer", || drain(&Context::new(ctx)));
}

unsafe extern "C" fn on_post_job(ctx: *mut RedisModuleCtx, _data: *mut c_void) {
    QUEUE.with(|q| q.borrow_mut().post_armed = false);
    guarded("upkeep job", || drain(&Context::new(ctx)));
}

pub(super) fn select(ctx: &Context, db: i32) -> bool {
    match api!(RedisModule_SelectDb) {
        // SAFETY: a live context.
        Ok(f) => (unsafe { f(ctx.ctx, db) }) == raw::REDISMODULE_OK as c_int,
        Err(_) => false,
    }
}

fn drain(ctx: &Context) {
    let jobs = QUEUE.with(|q| std::mem::take(&mut q.borrow_mut().jobs));
    QUEUED.store(false, Ordering::Relaxed);
    if jobs.is_empty() {
        return;
    }
    // Replicas never write on their own: the primary's effects arrive through the link.
    let flags = ctx.get_flags();
    if flags.intersects(ContextFlags::SLAVE | ContextFlags::LOADING) {
        return;
    }
    let home = call::db(ctx);
    let mut seen = HashSet::with_capacity(jobs.len());
    let mut announce: Vec<(i32, Name)> = Vec::new();
    for job in jobs {
        if !seen.insert((job.db, job.key.clone(), job.kind)) || !select(ctx, job.db) {
            continue;
        }
        let done = match job.kind {
            Kind::Reconcile => reconcile(ctx, &job.key),
            Kind::Gone | Kind::Arrived => {
                if !announce.iter().any(|(d, k)| *d == job.db && *k == job.key) {
                    announce.push((job.db, job.key.clone()));
                }
                reconcile(ctx, &job.key)
            }
            Kind::Fill => fill(ctx, &job.key, &flags),
        };
        if let Err(e) = done {
            log::write_failed(&job.key, &e.to_string());
        }
    }
    // One event per name, saying what is there now.
    for (db, key) in announce {
        if select(ctx, db) {
            if let Err(e) = announce_state(ctx, &key) {
                log::write_failed(&key, &e.to_string());
            }
        }
    }
    select(ctx, home);
}

/// Publishes what a generic command left at `name`: another key set, or none.
fn announce_state(ctx: &Context, name: &[u8]) -> Result<()> {
    let key = Key::named(ctx, name, Mode::Peek)?;
    let stored = key.keyset().ok().flatten();
    let message = match stored {
        Some(s) => events::message(
            events::Kind::Replaced,
            name,
            Some((s.set(), &s.rendered().etag)),
            None,
        ),
        None => events::message(events::Kind::Deleted, name, None, None),
    };
    publish(ctx, &keys::derived(name, Derived::Events), &message)
}

/// Makes the cache string of the key set at `name` hold its document or nothing.
fn reconcile(ctx: &Context, name: &[u8]) -> Result<()> {
    let set_key = Key::named(ctx, name, Mode::Peek)?;
    let stored = set_key.keyset().ok().flatten();
    let cache_name = keys::derived(name, Derived::Cache);
    let cache = Key::named(ctx, &cache_name, Mode::Peek)?;
    let current = stored.map(|s| s.rendered().doc.as_bytes());
    let ok = match cache.kind() {
        KeyType::String if cache.string().is_some() && cache.string() == current => true,
        KeyType::String => {
            drop(cache);
            Key::named(ctx, &cache_name, Mode::Write)?.delete()?;
            log::cache_dropped(&cache_name);
            false
        }
        // Another type at a cache name is left to its owner; rotations refuse it (WRONGTYPE).
        _ => false,
    };
    if let Some(s) = stored {
        s.set_cache_ok(ok);
    }
    Ok(())
}

/// Writes the cache string of the key set at `name` if it is missing.
fn fill(ctx: &Context, name: &[u8], flags: &ContextFlags) -> Result<()> {
    let set_key = Key::named(ctx, name, Mode::Peek)?;
    let Some(stored) = set_key.keyset().ok().flatten() else {
        return Ok(());
    };
    if stored.cache_ok() {
        return Ok(());
    }
    // The cache is an optimisation: never the write that takes memory past the limit.
    if flags.contains(ContextFlags::OOM) {
        stored.release_fill();
        return Ok(());
    }
    let doc = stored.rendered().doc.as_bytes();
    let cache_name = keys::derived(name, Derived::Cache);
    let cache = Key::named(ctx, &cache_name, Mode::Peek)?;
    match cache.kind() {
        KeyType::String if cache.string() == Some(doc) => {}
        KeyType::String | KeyType::Empty => {
            drop(cache);
            let now = now_ms();
            let until = stored.set().cache_until(now, config::cache_ttl_ms());
            if until <= now {
                // The set changes now: a copy would be stale at once.
                stored.release_fill();
                return Ok(());
            }
            Key::named(ctx, &cache_name, Mode::Write)?.set_string_until(doc, until)?;
            let metrics_name = keys::derived(name, Derived::Metrics);
            let counters = Key::named(ctx, &metrics_name, Mode::Write)?;
            if counters.require_type(KeyType::Hash, "").is_ok() {
                counters.hash_incr(metrics::CACHE_FILLS)?;
            }
            stats::count(metrics::CACHE_FILLS);
        }
        _ => {
            stored.release_fill();
            return Ok(());
        }
    }
    stored.set_cache_ok(true);
    Ok(())
}
