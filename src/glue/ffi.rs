//! The module API calls that are not about a key, behind safe functions: looking an API
//! function up (`api!`), the module's detached context, timers and post-notification jobs,
//! whether writes are paused.
//! A timer or job runs a plain `fn(&Context)`, passed through the callback's data pointer to
//! one trampoline, inside `guarded` so a panic never unwinds into Redis.
//!
//! Why not redis-module's wrappers: `Context::create_timer` boxes a closure per timer and
//! needs a `&Context` that callbacks without one (unlink, RDB load) do not have; its
//! post-notification job wrapper (`add_post_notification_job`) exists only with the crate's
//! `min-redis-compatibility-version-7-2` feature, which would drop Redis 7.0.

use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use redis_module::raw::{self, RedisModuleCtx};
use redis_module::Context;

use crate::observe::log;
use redis_jwks_core::error::Result;

/// Looks up a module API function: `Err(Error::Api)` on a server that lacks it.
macro_rules! api {
    ($name:ident) => {
        // SAFETY: the function table is filled once when the module loads, then only read.
        unsafe { ::redis_module::raw::$name }
            .ok_or(redis_jwks_core::error::Error::Api(stringify!($name)))
    };
}
pub(crate) use api;

/// The module's detached context: for timers and jobs armed from callbacks that get no
/// context (unlink, RDB load, INFO), on the main thread only.
static DETACHED: AtomicPtr<RedisModuleCtx> = AtomicPtr::new(ptr::null_mut());

/// Keeps a detached context for the life of the module; called once at load.
pub(crate) fn keep_detached(ctx: &Context) -> Result<()> {
    let detach = api!(RedisModule_GetDetachedThreadSafeContext)?;
    // SAFETY: a live context at load; the detached context lives as long as the module.
    DETACHED.store(unsafe { detach(ctx.ctx) }, Ordering::Relaxed);
    Ok(())
}

/// The detached context, once kept.
pub(crate) fn detached() -> Option<Context> {
    let ctx = DETACHED.load(Ordering::Relaxed);
    (!ctx.is_null()).then(|| Context::new(ctx))
}

/// Runs a callback body, never letting a panic unwind into Redis.
pub(crate) fn guarded(what: &str, f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        log::internal_error(what);
    }
}

type Run = fn(&Context);

unsafe extern "C" fn trampoline(ctx: *mut RedisModuleCtx, data: *mut c_void) {
    // `data` is the `fn(&Context)` `timer` or `post_job` was given, cast to a pointer; fn
    // pointers and data pointers have the same size on every target Redis runs.
    // SAFETY: as just said.
    let run = unsafe { std::mem::transmute::<*mut c_void, Run>(data) };
    guarded("timer", || run(&Context::new(ctx)));
}

/// Runs `run` in `period_ms` (0: the next event-loop iteration). The timer's id, or `None`
/// where the server refused it.
pub(crate) fn timer(ctx: &Context, period_ms: i64, run: Run) -> Option<u64> {
    let create = api!(RedisModule_CreateTimer).ok()?;
    // SAFETY: a live context; the trampoline turns the data pointer back into `run`.
    Some(unsafe { create(ctx.ctx, period_ms, Some(trampoline), run as *mut c_void) })
}

/// Stops a timer `timer` armed.
pub(crate) fn stop_timer(ctx: &Context, id: u64) {
    if let Ok(stop) = api!(RedisModule_StopTimer) {
        // SAFETY: a timer of this module; its data is a fn pointer, nothing to free.
        unsafe { stop(ctx.ctx, id, ptr::null_mut()) };
    }
}

/// Runs `run` right after the current command, as a post-notification job (Redis 7.2+,
/// Valkey). False where the server has none or refuses one (loading, a read-only replica).
pub(crate) fn post_job(ctx: &Context, run: Run) -> bool {
    let Ok(add) = api!(RedisModule_AddPostNotificationJob) else {
        return false;
    };
    // No free callback: a fn pointer owns nothing.
    // SAFETY: a live context; the trampoline turns the data pointer back into `run`.
    let status = unsafe { add(ctx.ctx, Some(trampoline), run as *mut c_void, None) };
    status == raw::REDISMODULE_OK as c_int
}

/// Clients are paused for writes (`CLIENT PAUSE WRITE|ALL`, `FAILOVER`, a cluster manual
/// failover): what `RedisModule_AvoidReplicaTraffic` reports on every supported server.
pub(crate) fn writes_paused() -> bool {
    match api!(RedisModule_AvoidReplicaTraffic) {
        // SAFETY: takes no arguments; reads server state on the main thread.
        Ok(f) => (unsafe { f() }) != 0,
        // Without the call we cannot tell: wait rather than risk the assertion.
        Err(_) => true,
    }
}
