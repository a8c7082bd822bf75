//! The clean-up queue: what each name waits for (merged per name), and when it runs. The
//! hooks (`tracking`) fill it; `upkeep` registers the runner that empties it, right after
//! the command as a post-notification job where the server has them (Redis 7.2+, Valkey),
//! else from a timer in the next event-loop iteration (Redis 7.0).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use redis_module::Context;

use crate::glue::ffi;
use redis_jwks_core::names::Name;

/// What a job asks for a name; several requests for one name are merged.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Wants {
    /// A key set left the name (unlink, flush, SWAPDB): clean up after it.
    pub(crate) gone: bool,
    /// A key set may have arrived (load, RESTORE, COPY, RENAME): register it.
    pub(crate) track: bool,
    /// Something touched the cache name (opt-in keyspace hook).
    pub(crate) reconcile: bool,
    /// `JWKS.GET` found the cache missing.
    pub(crate) fill: bool,
    /// Tell subscribers what is at the name now, if it changed.
    pub(crate) announce: bool,
    /// What was at the name before (the registry's fingerprint), for the announcement.
    pub(crate) before: Option<u64>,
}

impl Wants {
    fn merge(&mut self, from: Wants) {
        self.gone |= from.gone;
        self.track |= from.track;
        self.reconcile |= from.reconcile;
        self.fill |= from.fill;
        self.announce |= from.announce;
        self.before = from.before.or(self.before);
    }
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

/// The queue holds jobs (read on every keyspace event when the hook is on).
static QUEUED: AtomicBool = AtomicBool::new(false);

/// What empties the queue (`upkeep`, registered at load).
static RUNNER: OnceLock<fn(&Context)> = OnceLock::new();

pub(crate) fn set_runner(run: fn(&Context)) {
    let _ = RUNNER.set(run);
}

pub(crate) fn push(db: i32, key: &[u8], f: impl FnOnce(&mut Wants)) {
    QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        let wants = q.jobs.entry((db, Name::from_slice(key))).or_default();
        f(wants);
    });
    QUEUED.store(true, Ordering::Relaxed);
}

pub(crate) fn is_queued() -> bool {
    QUEUED.load(Ordering::Relaxed)
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

/// The names waiting for a clean-up after a key set left them.
pub(crate) fn gone() -> Vec<(i32, Name)> {
    QUEUE.with(|q| {
        q.borrow()
            .jobs
            .iter()
            .filter(|(_, w)| w.gone)
            .map(|(k, _)| k.clone())
            .collect()
    })
}

/// Takes up to `n` jobs, in name order.
pub(crate) fn take(n: usize) -> Vec<((i32, Name), Wants)> {
    QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        let mut batch = Vec::new();
        while batch.len() < n {
            match q.jobs.pop_first() {
                Some(job) => batch.push(job),
                None => break,
            }
        }
        batch
    })
}

/// Puts back what had to wait, and runs the rest of the queue: soon, or in `wait_ms` if
/// something waited.
pub(crate) fn put_back(ctx: &Context, waiting: Vec<((i32, Name), Wants)>, wait_ms: i64) {
    let (more, wait) = QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        let wait = !waiting.is_empty();
        for (key, later) in waiting {
            q.jobs.entry(key).or_default().merge(later);
        }
        (!q.jobs.is_empty(), wait)
    });
    QUEUED.store(more, Ordering::Relaxed);
    if more {
        arm_timer(ctx, if wait { wait_ms } else { 0 });
    }
}

/// Runs the queue right after the current command where the server can, and from a timer
/// as the backstop for paths that end no execution unit.
pub(crate) fn arm_soon(ctx: &Context) {
    arm_post(ctx);
    arm_timer(ctx, 0);
}

/// Runs the queue in `period_ms` (0: the next event-loop iteration).
pub(crate) fn arm_timer(ctx: &Context, period_ms: i64) {
    if QUEUE.with(|q| q.borrow().timer_armed) {
        return;
    }
    if ffi::timer(ctx, period_ms, on_timer).is_some() {
        QUEUE.with(|q| q.borrow_mut().timer_armed = true);
    }
}

/// Runs the queue right after the current command (a post-notification job), else from a
/// timer (refused while loading and on read-only replicas, missing on Redis 7.0).
pub(crate) fn arm_post(ctx: &Context) {
    if QUEUE.with(|q| q.borrow().post_armed) {
        return;
    }
    if ffi::post_job(ctx, on_post_job) {
        QUEUE.with(|q| q.borrow_mut().post_armed = true);
    } else {
        arm_timer(ctx, 0);
    }
}

fn on_timer(ctx: &Context) {
    QUEUE.with(|q| q.borrow_mut().timer_armed = false);
    run(ctx);
}

fn on_post_job(ctx: &Context) {
    QUEUE.with(|q| q.borrow_mut().post_armed = false);
    run(ctx);
}

fn run(ctx: &Context) {
    if let Some(run) = RUNNER.get() {
        run(ctx);
    }
}
