//! Keeps what is derived from a key set true when something other than the module's own
//! commands changes a key set: `DEL`, `EXPIRE`, eviction, `SET` over it, `RENAME`, `MOVE`,
//! `COPY`, `RESTORE`/`MIGRATE`, flushes, `SWAPDB`, loads.
//!
//! `JWKS.GET` serves the document from the key set itself, so it is right whatever happened.
//! The cache string (`K:cache`, for plain `GET` readers, replicas and client-side caching)
//! must hold that document or nothing; the registry and the schedule must list exactly the
//! key sets there are. The hooks are the data type's own callbacks, which run only for key
//! sets and so cost other workloads nothing:
//!
//! - unlink: a key set left its key (deleted, expired, evicted, overwritten, renamed or
//!   moved away): its cache goes, and `SET` (or any other type) over it is reported as lost;
//! - RDB load (load, RESTORE, MIGRATE, full sync) and copy: a key set arrived at a name.
//!
//! A key set renamed or moved to a new name is registered there when the module next opens
//! it (`Key::keyset`). The keyspace-event subscription of 0.2.0, which saw every string and
//! generic write of the server (a 10-20 % tax on unrelated `SET`, `DEL`, `EXPIRE`), is the
//! opt-in `jwks.keyspace-hook yes`: with it, a value written at a key set's cache name by
//! another command is removed at once, and a renamed key set is registered at once.
//!
//! None of the hooks may write (Redis is in the middle of a command, an expiry or an
//! eviction), so they queue a job for the name, run right after the command as a
//! post-notification job where the server has them (Redis 7.2+, Valkey), else from a timer
//! in the next event-loop iteration (Redis 7.0). A job only writes when the server allows a
//! write right then (`gate`): never on a replica, and not while clients are paused (a
//! planned failover), the server is loading or out of memory; then it waits and runs right
//! after, once.
//!
//! The module touches a derived name only for a key set: a job changes `K:cache` only while
//! a key set is at K, or right after one left it.

pub(crate) mod registry;
pub(crate) mod schedule;
pub(crate) mod server_events;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};

use redis_module::raw::{self, KeyType, RedisModuleCtx, RedisModuleString};
use redis_module::{Context, ContextFlags, RedisString};

use crate::config;
use crate::glue::call::{self, now_ms};
use crate::glue::redis_key::{api, publish, select_db, Key, Mode};
use crate::observe::{events, log, stats};
use redis_jwks_core::error::Result;
use redis_jwks_core::names::{self, Derived, Name};
use redis_jwks_core::{audit, counter_names};

/// What a job asks for a name; several requests for one name are merged.
#[derive(Debug, Default, Clone, Copy)]
struct Wants {
    /// A key set left the name (unlink, flush, SWAPDB): clean up after it.
    gone: bool,
    /// A key set may have arrived (load, RESTORE, COPY, RENAME): register it.
    track: bool,
    /// Something touched the cache name (opt-in keyspace hook).
    reconcile: bool,
    /// `JWKS.GET` found the cache missing.
    fill: bool,
    /// Tell subscribers what is at the name now, if it changed.
    announce: bool,
    /// What was at the name before (the registry's fingerprint), for the announcement.
    before: Option<u64>,
}

#[derive(Default)]
struct Queue {
    jobs: BTreeMap<(i32, Name), Wants>,
    timer_armed: bool,
    post_armed: bool,
}

// Main thread only: commands, keyspace events, unlink callbacks and timers all run there.
thread_local! {
    static QUEUE: RefCell<Queue> = RefCell::new(Queue::default());
}

/// Nesting depth of the module's own writes (only the main thread touches it).
static OURS: AtomicU32 = AtomicU32::new(0);
/// The queue holds jobs (read on every keyspace event when the hook is on).
static QUEUED: AtomicBool = AtomicBool::new(false);

/// A context for arming timers from callbacks that have none (unlink, RDB load).
pub(super) static DETACHED: AtomicPtr<RedisModuleCtx> = AtomicPtr::new(ptr::null_mut());

/// Names handled per run: a load of 100,000 key sets is registered in slices, never in one
/// long stall of the event loop.
const JOBS_PER_RUN: usize = 1000;
/// How soon a job that had to wait (paused clients, OOM, loading) is tried again.
const WAIT_MS: i64 = 10;

/// A key set is now at (`db`, `name`): what JWKS.STATS reports of it and when its policy
/// next changes it.
pub(crate) fn track(db: i32, name: &[u8], set: &redis_jwks_core::keyset::KeySet) {
    registry::put(db, name, registry::Snapshot::of(set));
    crate::fleets::saw_generation(db, name, set.generation(), now_ms());
    schedule::track(db, name, set);
}

/// The key set at `name` was opened after it had left another key (RENAME, MOVE): register
/// it here. Called by `Key::keyset`, so any command on it heals the registry.
pub(crate) fn placed(db: i32, name: &[u8], set: &redis_jwks_core::keyset::KeySet) {
    track(db, name, set);
    if names::check_name(name).is_err() {
        log::reserved_name(name);
    }
}

/// The module's detached context: for callbacks that get none (INFO, unlink), on the main
/// thread only.
pub(crate) fn detached() -> *mut RedisModuleCtx {
    DETACHED.load(Ordering::Relaxed)
}

/// Runs the module's own write: the unlinks it causes are not someone else's.
pub(crate) fn ours<T>(f: impl FnOnce() -> T) -> T {
    OURS.fetch_add(1, Ordering::Relaxed);
    let result = f();
    OURS.fetch_sub(1, Ordering::Relaxed);
    result
}

fn is_ours() -> bool {
    OURS.load(Ordering::Relaxed) > 0
}

fn push(db: i32, key: &[u8], f: impl FnOnce(&mut Wants)) {
    QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        let wants = q.jobs.entry((db, Name::from_slice(key))).or_default();
        f(wants);
    });
    QUEUED.store(true, Ordering::Relaxed);
}

/// A clean-up after a key set that left (`db`, `name`) is still queued: what is at its
/// derived names is the module's own, not a stranger's.
pub(crate) fn cleanup_pending(db: i32, name: &[u8]) -> bool {
    QUEUE.with(|q| {
        q.borrow()
            .jobs
            .get(&(db, Name::from_slice(name)))
            .is_some_and(|w| w.gone)
    })
}

/// Keeps a context for timers and, with `jwks.keyspace-hook yes`, subscribes to keyspace
/// events; called once at load.
pub(crate) fn start(ctx: &Context) -> Result<()> {
    let detach = api!(RedisModule_GetDetachedThreadSafeContext)?;
    // SAFETY: a live context at load; the detached context lives as long as the module.
    DETACHED.store(unsafe { detach(ctx.ctx) }, Ordering::Relaxed);
    crate::datatype::enable_io_errors(ctx);
    if config::keyspace_hook() {
        let subscribe = api!(RedisModule_SubscribeToKeyspaceEvents)?;
        // Generic (RENAME, MOVE, RESTORE, COPY, DEL, EXPIRE...) and string writes: every
        // way a string can appear at or change at a cache name, and a key set arrive under
        // a new name. Every such write of the server pays for this call.
        // Not eviction or expiry: their events come from inside the server's scans of the
        // keyspace, where a job must not write.
        let classes = (raw::REDISMODULE_NOTIFY_GENERIC | raw::REDISMODULE_NOTIFY_STRING) as c_int;
        // SAFETY: a live context and a callback with the expected signature.
        if unsafe { subscribe(ctx.ctx, classes, Some(on_event)) } != raw::REDISMODULE_OK as c_int {
            return Err(redis_jwks_core::error::Error::Api(
                "RedisModule_SubscribeToKeyspaceEvents",
            ));
        }
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
pub(crate) fn on_unlink(db: i32, name: &[u8]) {
    guarded("unlink", || {
        let before = registry::remove(db, name).map(|s| s.fingerprint);
        schedule::remove(db, name);
        if is_ours() {
            return;
        }
        crate::fleets::forget(db, name);
        push(db, name, |w| {
            w.gone = true;
            w.announce = true;
            w.before = w.before.or(before);
        });
        // A timer, never a post-notification job: an unlink may come from the server's
        // active expiry or eviction, in the middle of a scan of the keyspace, and a job
        // would run (and delete the cache key) inside that scan (seen crashing Valkey 8.0).
        // The clean-up runs in the next event-loop iteration; a snapshot taken before then
        // is cleaned in its child (`before_snapshot`).
        arm_timer(DETACHED.load(Ordering::Relaxed), 0);
    });
}

/// From RDB load (a load, RESTORE, MIGRATE, a full sync): a key set is being loaded at
/// `name`. Registered after the command, where it really is (a RESTORE with a past
/// `ABSTTL` frees it at once). A load at start or a reload announces nothing.
pub(crate) fn loaded(db: i32, name: &[u8]) {
    guarded("load", || {
        let ctx = DETACHED.load(Ordering::Relaxed);
        let loading = !ctx.is_null()
            && Context::new(ctx)
                .get_flags()
                .contains(ContextFlags::LOADING);
        push(db, name, |w| {
            w.track = true;
            w.announce |= !loading;
        });
        arm_timer(ctx, 0);
    });
}

/// From COPY (and the keyspace hook's RENAME/MOVE): a key set arrives at `name`.
pub(crate) fn arrived(db: i32, name: &[u8]) {
    guarded("arrival", || {
        push(db, name, |w| {
            w.track = true;
            w.announce = true;
        });
        arm_soon(DETACHED.load(Ordering::Relaxed));
    });
}

/// The keyspace-event callback (only with `jwks.keyspace-hook yes`).
///
/// # Safety
/// Called by Redis with an event's context, name and key.
unsafe extern "C" fn on_event(
    ctx: *mut RedisModuleCtx,
    _class: c_int,
    event: *const c_char,
    key: *mut RedisModuleString,
) -> c_int {
    // Every generic and string event of the server comes here: the common case (not a
    // cache key, not an arrival) must cost a few instructions.
    if is_ours() || key.is_null() || event.is_null() {
        return raw::REDISMODULE_OK as c_int;
    }
    let name = RedisString::string_as_slice(key);
    let cache = name.ends_with(Derived::Cache.suffix());
    // SAFETY: Redis passes a NUL-terminated event name (at least its terminator).
    let first = unsafe { *event } as u8;
    if !cache && !matches!(first, b'r' | b'm') && !QUEUED.load(Ordering::Relaxed) {
        return raw::REDISMODULE_OK as c_int;
    }
    guarded("keyspace event", || {
        let context = Context::new(ctx);
        let db = call::db(&context);
        // SAFETY: as above.
        let event = unsafe { CStr::from_ptr(event) }.to_bytes();
        if matches!(event, b"rename_to" | b"move_to") {
            // A key set renamed onto a cache name is an arrival too (and is warned about).
            push(db, name, |w| {
                w.track = true;
                w.announce = true;
            });
        }
        if cache {
            if let Some((Derived::Cache, owner)) = names::owner(name) {
                push(db, &owner, |w| w.reconcile = true);
            }
        }
        if QUEUED.load(Ordering::Relaxed) {
            arm_post(ctx);
        }
    });
    raw::REDISMODULE_OK as c_int
}

/// After a flush or SWAPDB: check each name (with what was there before) and announce what
/// is there now, right after the command, as for a DEL.
pub(crate) fn recheck(ctx: *mut RedisModuleCtx, names: Vec<(i32, Vec<u8>, Option<u64>)>) {
    if names.is_empty() {
        return;
    }
    for (db, name, before) in names {
        push(db, &name, |w| {
            w.gone = true;
            w.track = true;
            w.announce = true;
            w.before = w.before.or(before);
        });
    }
    arm_post(ctx);
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
    if !server_events::is_replica() && stored.claim_fill() {
        push(call::db(ctx), name, |w| w.fill = true);
        arm_timer(ctx.ctx, 0);
    }
}

/// Runs the queue right after the current command where the server can (a post-notification
/// job, Redis 7.2+ and Valkey), else in the next event-loop iteration.
/// The timer is the backstop for paths that end no execution unit.
fn arm_soon(ctx: *mut RedisModuleCtx) {
    arm_post(ctx);
    arm_timer(ctx, 0);
}

fn arm_timer(ctx: *mut RedisModuleCtx, period_ms: i64) {
    if ctx.is_null() || QUEUE.with(|q| q.borrow().timer_armed) {
        return;
    }
    let Ok(create) = api!(RedisModule_CreateTimer) else {
        return;
    };
    // SAFETY: a live context; the callback takes no data.
    unsafe { create(ctx, period_ms, Some(on_timer), ptr::null_mut()) };
    QUEUE.with(|q| q.borrow_mut().timer_armed = true);
}

fn arm_post(ctx: *mut RedisModuleCtx) {
    if ctx.is_null() || QUEUE.with(|q| q.borrow().post_armed) {
        return;
    }
    let armed = match api!(RedisModule_AddPostNotificationJob) {
        Ok(add) => {
            // Refused while loading and on read-only replicas: the timer then runs the queue.
            // SAFETY: a live context; the job takes no data.
            let status = unsafe { add(ctx, Some(on_post_job), ptr::null_mut(), None) };
            status == raw::REDISMODULE_OK as c_int
        }
        Err(_) => false,
    };
    if armed {
        QUEUE.with(|q| q.borrow_mut().post_armed = true);
    } else {
        arm_timer(ctx, 0);
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
    if server_events::is_replica() || flags.contains(ContextFlags::SLAVE) {
        return Gate::Replica;
    }
    if flags.intersects(ContextFlags::LOADING | ContextFlags::OOM) || writes_paused() {
        return Gate::Wait;
    }
    Gate::Open
}

/// Clients are paused for writes (`CLIENT PAUSE WRITE|ALL`, `FAILOVER`, a cluster manual
/// failover): what `RedisModule_AvoidReplicaTraffic` reports on every supported server.
fn writes_paused() -> bool {
    match api!(RedisModule_AvoidReplicaTraffic) {
        // SAFETY: takes no arguments; reads server state on the main thread.
        Ok(f) => (unsafe { f() }) != 0,
        // Without the call we cannot tell: wait rather than risk the assertion.
        Err(_) => true,
    }
}

fn drain(ctx: &Context) {
    let gate = gate(ctx);
    let batch: Vec<((i32, Name), Wants)> = QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        let mut batch = Vec::new();
        while batch.len() < JOBS_PER_RUN {
            match q.jobs.pop_first() {
                Some(job) => batch.push(job),
                None => break,
            }
        }
        batch
    });
    let home = call::db(ctx);
    let mut waiting = Vec::new();
    for ((db, name), wants) in batch {
        if !select_db(ctx, db) {
            continue;
        }
        match settle(ctx, db, &name, wants, gate) {
            Ok(Some(later)) => waiting.push(((db, name), later)),
            Ok(None) => {}
            Err(e) => log::write_failed(&name, &e.to_string()),
        }
    }
    select_db(ctx, home);
    let (more, wait) = QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        let wait = !waiting.is_empty();
        for (key, later) in waiting {
            let wants = q.jobs.entry(key).or_default();
            merge(wants, later);
        }
        (!q.jobs.is_empty(), wait)
    });
    QUEUED.store(more, Ordering::Relaxed);
    if more {
        arm_timer(ctx.ctx, if wait { WAIT_MS } else { 0 });
    }
}

fn merge(into: &mut Wants, from: Wants) {
    into.gone |= from.gone;
    into.track |= from.track;
    into.reconcile |= from.reconcile;
    into.fill |= from.fill;
    into.announce |= from.announce;
    into.before = from.before.or(into.before);
}

/// Runs the queued clean-ups before a snapshot is written. In the snapshot's child the
/// deletions change only the child's copy, which becomes the file (the server runs the same
/// clean-up, propagated, in its own time); in the server itself they run as usual, when
/// writing is allowed.
pub(crate) fn before_snapshot(ctx: &Context, in_child: bool) {
    if !in_child {
        if gate(ctx) == Gate::Open {
            drain(ctx);
        }
        return;
    }
    let gone: Vec<(i32, Name)> = QUEUE.with(|q| {
        q.borrow()
            .jobs
            .iter()
            .filter(|(_, w)| w.gone)
            .map(|(k, _)| k.clone())
            .collect()
    });
    let home = call::db(ctx);
    for (db, name) in gone {
        if !select_db(ctx, db) || names::check_name(&name).is_err() {
            continue;
        }
        let Ok(set_key) = Key::named(ctx, &name, Mode::Peek) else {
            continue;
        };
        let doc = set_key
            .keyset()
            .ok()
            .flatten()
            .map(|s| s.rendered().doc.clone());
        drop(set_key);
        let cache_name = names::derived(&name, Derived::Cache);
        let Ok(cache) = Key::named(ctx, &cache_name, Mode::Peek) else {
            continue;
        };
        if cache.kind() == KeyType::String
            && cache.string().map(<[u8]>::to_vec) != doc.map(String::into_bytes)
        {
            drop(cache);
            if let Ok(k) = Key::named(ctx, &cache_name, Mode::Write) {
                let _ = k.delete_in_snapshot();
            }
        }
    }
    select_db(ctx, home);
}

/// Brings what is derived from the name up to date with what is there now. Returns what is
/// left to do once writing is allowed.
fn settle(ctx: &Context, db: i32, name: &[u8], wants: Wants, gate: Gate) -> Result<Option<Wants>> {
    let key = Key::named(ctx, name, Mode::Peek)?;
    let stored = key.keyset().ok().flatten();
    let has_set = stored.is_some();
    if let Some(s) = stored {
        if wants.track || wants.gone {
            s.forget_cache();
            placed(db, name, s.set());
        }
        if wants.fill && gate == Gate::Replica {
            s.release_fill();
        }
    }
    let lost = wants.gone && !has_set && key.exists();
    drop(key);
    let writes = wants.gone || wants.reconcile || wants.fill || wants.announce;
    match gate {
        Gate::Replica => return Ok(None),
        Gate::Wait if writes => {
            let mut later = wants;
            later.track = false;
            return Ok(Some(later));
        }
        _ => {}
    }
    if names::check_name(name).is_err() {
        return Ok(None);
    }
    if lost {
        keyset_lost(ctx, name)?;
    }
    if wants.gone || (wants.reconcile && has_set) {
        reconcile(ctx, name)?;
    }
    if wants.fill {
        fill(ctx, name)?;
    }
    if wants.announce {
        announce(ctx, db, name, wants.before)?;
    }
    Ok(None)
}

/// Publishes what is at `name` now, if it is not what was there before.
fn announce(ctx: &Context, db: i32, name: &[u8], before: Option<u64>) -> Result<()> {
    let now = registry::get(db, name).map(|s| s.fingerprint);
    if now == before {
        return Ok(());
    }
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
    publish(ctx, &names::derived(name, Derived::Events), &message)
}

/// Another command put a value of another type where a key set was (`SET K x`, a RENAME
/// or RESTORE of another type onto K): the published keys are gone. Audited, counted and
/// logged at warning, since verifiers now find no keys.
fn keyset_lost(ctx: &Context, name: &[u8]) -> Result<()> {
    log::keyset_lost(name);
    stats::count(counter_names::KEYSETS_LOST);
    let audit_name = names::derived(name, Derived::Audit);
    let audit_key = Key::named(ctx, &audit_name, Mode::Write)?;
    if audit_key.require_type(KeyType::Stream, "").is_ok() {
        audit_key.xadd(&audit::lost(now_ms()), config::audit_maxlen())?;
    }
    drop(audit_key);
    let metrics_name = names::derived(name, Derived::Metrics);
    let counters = Key::named(ctx, &metrics_name, Mode::Write)?;
    if counters.require_type(KeyType::Hash, "").is_ok() {
        counters.hash_incr(counter_names::KEYSETS_LOST)?;
    }
    Ok(())
}

/// Makes the cache string of the key set at `name` hold its document or nothing. Called
/// only while a key set is at `name` or right after one left it.
fn reconcile(ctx: &Context, name: &[u8]) -> Result<()> {
    let set_key = Key::named(ctx, name, Mode::Peek)?;
    let stored = set_key.keyset().ok().flatten();
    let cache_name = names::derived(name, Derived::Cache);
    let cache = Key::named(ctx, &cache_name, Mode::Peek)?;
    let current = stored.map(|s| s.rendered().doc.as_bytes());
    let until = match cache.kind() {
        KeyType::String if cache.string().is_some() && cache.string() == current => {
            let ttl = cache.pttl();
            if ttl >= 0 {
                now_ms().saturating_add(ttl)
            } else {
                // Equal, but with no TTL: someone else's SET. Kept (it is the document),
                // though not trusted past the usual cache lifetime.
                now_ms().saturating_add(config::cache_ttl_ms())
            }
        }
        KeyType::String => {
            drop(cache);
            Key::named(ctx, &cache_name, Mode::Write)?.delete()?;
            if stored.is_some() {
                log::cache_dropped(&cache_name);
            }
            0
        }
        // Another type at a cache name is left to its owner; rotations refuse it (WRONGTYPE).
        _ => 0,
    };
    if let Some(s) = stored {
        if until > 0 {
            s.set_cache_until(until);
        } else {
            s.forget_cache();
        }
    }
    Ok(())
}

/// Writes the cache string of the key set at `name` if it is missing.
fn fill(ctx: &Context, name: &[u8]) -> Result<()> {
    let set_key = Key::named(ctx, name, Mode::Peek)?;
    let Some(stored) = set_key.keyset().ok().flatten() else {
        return Ok(());
    };
    let now = now_ms();
    if stored.cache_ok(now) {
        return Ok(());
    }
    let doc = stored.rendered().doc.as_bytes();
    let cache_name = names::derived(name, Derived::Cache);
    let cache = Key::named(ctx, &cache_name, Mode::Peek)?;
    let until = stored.set().cache_until(now, config::cache_ttl_ms());
    match cache.kind() {
        KeyType::String if cache.string() == Some(doc) => {
            let ttl = cache.pttl();
            stored.set_cache_until(if ttl >= 0 {
                now.saturating_add(ttl)
            } else {
                until
            });
            return Ok(());
        }
        KeyType::String | KeyType::Empty => {
            drop(cache);
            if until <= now {
                // The set changes now: a copy would be stale at once.
                stored.release_fill();
                return Ok(());
            }
            Key::named(ctx, &cache_name, Mode::Write)?.set_string_until(doc, until)?;
            let metrics_name = names::derived(name, Derived::Metrics);
            let counters = Key::named(ctx, &metrics_name, Mode::Write)?;
            if counters.require_type(KeyType::Hash, "").is_ok() {
                counters.hash_incr(counter_names::CACHE_FILLS)?;
            }
            stats::count(counter_names::CACHE_FILLS);
        }
        _ => {
            stored.release_fill();
            return Ok(());
        }
    }
    stored.set_cache_until(until);
    Ok(())
}
