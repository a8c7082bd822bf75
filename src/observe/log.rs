//! Redis log lines: every invalidation at notice (Redis's INFO level), failures at warning.
//!
//! Redis opens, appends to and closes its log file for every line, which would cost a
//! rotation or invalidation more than all its other work. Lines therefore go into a buffer
//! that one logging thread drains every few milliseconds (Redis's own background threads
//! log the same way), in order. Pushing takes an uncontended lock and no system call. A
//! bounded buffer: if it is ever full, lines are dropped and the drop is logged.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use redis_module::logging::RedisLogLevel;
use redis_module::MODULE_CONTEXT;

use crate::error::{push_shown, Shown};

const MAX_PENDING: usize = 65_536;
const DRAIN_EVERY: Duration = Duration::from_millis(5);

static PENDING: Mutex<Vec<(RedisLogLevel, String)>> = Mutex::new(Vec::new());
static THREAD_RUNNING: AtomicBool = AtomicBool::new(false);
static STOPPING: AtomicBool = AtomicBool::new(false);
static THREAD: Mutex<Option<JoinHandle<()>>> = Mutex::new(None);
static DROPPED: AtomicU64 = AtomicU64::new(0);

fn drain(batch: &mut Vec<(RedisLogLevel, String)>) {
    std::mem::swap(batch, &mut *PENDING.lock());
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        MODULE_CONTEXT.log(
            RedisLogLevel::Warning,
            &format!("{dropped} redis-jwks log lines dropped (log buffer full)"),
        );
    }
    for (level, line) in batch.drain(..) {
        MODULE_CONTEXT.log(level, &line);
    }
}

/// Starts the logging thread; called once when the module loads.
pub fn start() {
    let spawned = std::thread::Builder::new()
        .name("jwks-log".into())
        .spawn(|| {
            let mut batch = Vec::new();
            while !STOPPING.load(Ordering::Relaxed) {
                std::thread::sleep(DRAIN_EVERY);
                drain(&mut batch);
            }
        });
    if let Ok(handle) = spawned {
        *THREAD.lock() = Some(handle);
        THREAD_RUNNING.store(true, Ordering::Relaxed);
    }
}

/// On server shutdown: stop the thread and write what is still buffered, so a clean
/// shutdown loses no line.
pub fn stop() {
    STOPPING.store(true, Ordering::Relaxed);
    if let Some(handle) = THREAD.lock().take() {
        let _ = handle.join();
    }
    THREAD_RUNNING.store(false, Ordering::Relaxed);
    drain(&mut Vec::new());
}

fn emit(level: RedisLogLevel, line: String) {
    if !THREAD_RUNNING.load(Ordering::Relaxed) {
        // No thread (it could not be spawned): log inline rather than lose the line.
        MODULE_CONTEXT.log(level, &line);
        return;
    }
    let mut pending = PENDING.lock();
    if pending.len() < MAX_PENDING {
        pending.push((level, line));
    } else {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// `EVENT key='…' reason='…' generation=N` and the rest, in one allocation.
fn line(event: &str, key: &[u8], reason: &str, generation: u64, rest: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(96 + key.len() + reason.len() + rest.len());
    out.push_str(event);
    out.push_str(" key=");
    push_shown(&mut out, &String::from_utf8_lossy(key));
    out.push_str(" reason=");
    push_shown(&mut out, reason);
    let _ = write!(out, " generation={generation}");
    out.push_str(rest);
    out
}

pub fn invalidated(key: &[u8], reason: &str, generation: u64, deleted: bool) {
    let rest = if deleted { " deleted=1" } else { " deleted=0" };
    emit(
        RedisLogLevel::Notice,
        line("JWKS_CACHE_INVALIDATED", key, reason, generation, rest),
    );
}

pub fn invalidation_failed(key: &[u8], reason: &str, generation: u64, error: &str) {
    let mut rest = String::from(" error=");
    push_shown(&mut rest, error);
    rest.push_str(" (the cached JWKS expires within jwks.cache-ttl)");
    emit(
        RedisLogLevel::Warning,
        line(
            "JWKS_CACHE_INVALIDATION_FAILED",
            key,
            reason,
            generation,
            &rest,
        ),
    );
}

pub fn rotated(key: &[u8], reason: &str, generation: u64, changes: usize) {
    emit(
        RedisLogLevel::Notice,
        line(
            "JWKS_ROTATED",
            key,
            reason,
            generation,
            &format!(" changes={changes}"),
        ),
    );
}

pub fn write_failed(key: &[u8], error: &str) {
    emit(
        RedisLogLevel::Warning,
        format!(
            "redis-jwks could not write key={} error={}",
            Shown::bytes(key),
            Shown::new(error)
        ),
    );
}

pub fn internal_error(context: &str) {
    emit(
        RedisLogLevel::Warning,
        format!("redis-jwks internal error (panic caught) in {context}; the command was aborted"),
    );
}
