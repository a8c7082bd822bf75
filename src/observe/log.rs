//! Redis log lines: every invalidation at notice (Redis's INFO level), failures at warning.
//!
//! Redis opens, appends to and closes its log file for every line, which would cost a
//! rotation or invalidation more than all its other work. Lines therefore go into a buffer
//! that one logging thread drains every few milliseconds (Redis's own background threads
//! log the same way), in order. Pushing takes an uncontended lock and no system call. A
//! bounded buffer: if it is ever full, lines are dropped and the drop is logged.
//!
//! A line identical to the one just before it is folded into it and written once with
//! `repeated=N`, as syslog does: a client looping on JWKS.INVALIDATE would otherwise make
//! Redis open and close its log file hundreds of thousands of times a second, taking a
//! core from the server. Every attempt is still counted in the line, and each has its own
//! audit entry and counter increment.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use redis_module::logging::RedisLogLevel;
use redis_module::MODULE_CONTEXT;

use crate::error::{push_shown, Shown};

const MAX_PENDING: usize = 65_536;
const DRAIN_EVERY: Duration = Duration::from_millis(5);

/// A line waiting to be written, and how many identical lines in a row it stands for.
struct Pending {
    level: RedisLogLevel,
    line: String,
    repeated: u64,
}

static PENDING: Mutex<Vec<Pending>> = Mutex::new(Vec::new());
static THREAD_RUNNING: AtomicBool = AtomicBool::new(false);
static STOPPING: AtomicBool = AtomicBool::new(false);
static THREAD: Mutex<Option<JoinHandle<()>>> = Mutex::new(None);
static DROPPED: AtomicU64 = AtomicU64::new(0);

fn drain(batch: &mut Vec<Pending>) {
    std::mem::swap(batch, &mut *PENDING.lock());
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        MODULE_CONTEXT.log(
            RedisLogLevel::Warning,
            &format!("{dropped} redis-jwks log lines dropped (log buffer full)"),
        );
    }
    for mut p in batch.drain(..) {
        if p.repeated > 1 {
            use std::fmt::Write;
            let _ = write!(p.line, " repeated={}", p.repeated);
        }
        MODULE_CONTEXT.log(p.level, &p.line);
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
    if !push(&mut PENDING.lock(), level, line) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Queues a line, folding it into the previous one if identical. False if the buffer is full.
fn push(pending: &mut Vec<Pending>, level: RedisLogLevel, line: String) -> bool {
    if let Some(last) = pending.last_mut() {
        if last.line == line && same_level(last.level, level) {
            last.repeated += 1;
            return true;
        }
    }
    if pending.len() >= MAX_PENDING {
        return false;
    }
    pending.push(Pending {
        level,
        line,
        repeated: 1,
    });
    true
}

fn same_level(a: RedisLogLevel, b: RedisLogLevel) -> bool {
    std::mem::discriminant(&a) == std::mem::discriminant(&b)
}

/// `EVENT key='…' reason='…' generation=N [changes=N]` and the rest, in one allocation.
/// `changes` is how many key changes the rotation that caused this invalidation made (0
/// for a plain JWKS.INVALIDATE): a rotation logs one line, not one per step.
fn line(event: &str, key: &[u8], reason: &str, generation: u64, changes: usize, rest: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(112 + key.len() + reason.len() + rest.len());
    out.push_str(event);
    out.push_str(" key=");
    push_shown(&mut out, &String::from_utf8_lossy(key));
    out.push_str(" reason=");
    push_shown(&mut out, reason);
    let _ = write!(out, " generation={generation}");
    if changes > 0 {
        let _ = write!(out, " changes={changes}");
    }
    out.push_str(rest);
    out
}

pub fn invalidated(key: &[u8], reason: &str, generation: u64, changes: usize, deleted: bool) {
    let rest = if deleted { " deleted=1" } else { " deleted=0" };
    emit(
        RedisLogLevel::Notice,
        line("JWKS_CACHE_INVALIDATED", key, reason, generation, changes, rest),
    );
}

pub fn invalidation_failed(key: &[u8], reason: &str, generation: u64, changes: usize, error: &str) {
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
            changes,
            &rest,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_consecutive_lines_fold_and_others_keep_their_order() {
        let mut pending = Vec::new();
        for line in ["a", "a", "a", "b", "a"] {
            assert!(push(&mut pending, RedisLogLevel::Notice, line.into()));
        }
        assert!(push(&mut pending, RedisLogLevel::Warning, "a".into()));
        let got: Vec<(&str, u64)> = pending
            .iter()
            .map(|p| (p.line.as_str(), p.repeated))
            .collect();
        assert_eq!(got, [("a", 3), ("b", 1), ("a", 1), ("a", 1)]);
    }

    #[test]
    fn a_full_buffer_refuses_new_lines_but_still_counts_repeats() {
        let mut pending = Vec::new();
        for i in 0..MAX_PENDING {
            assert!(push(&mut pending, RedisLogLevel::Notice, i.to_string()));
        }
        assert!(!push(&mut pending, RedisLogLevel::Notice, "new".into()));
        let last = (MAX_PENDING - 1).to_string();
        assert!(push(&mut pending, RedisLogLevel::Notice, last));
        assert_eq!(pending.last().map(|p| p.repeated), Some(2));
    }
}
