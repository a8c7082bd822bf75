//! Redis log lines: every invalidation at notice (Redis's INFO level), failures at warning.
//!
//! Redis opens, appends to and closes its log file for every line, which would cost a
//! rotation or invalidation more than all its other work. Lines therefore go into a buffer
//! that one logging thread drains every few milliseconds (Redis's own background threads
//! log the same way), in order. The command only queues what happened, under an
//! uncontended lock; the line is formatted on the logging thread. A bounded buffer: if it
//! is ever full, lines are dropped and the drop is logged.
//!
//! A line identical to the one just before it is folded into it and written once with
//! `repeated=N`, as syslog does: a client looping on JWKS.INVALIDATE would otherwise make
//! Redis open and close its log file hundreds of thousands of times a second, taking a
//! core from the server. Every attempt is still counted in the line, and each has its own
//! audit entry and counter increment.
//!
//! Names and free text are written in the ASCII text form of [`crate::escape`], quoted, so
//! no name can break, hide or reorder a line and two names never log alike. Redis cuts a
//! module's log line at 1024 bytes, so every field has a budget: a longer form is cut
//! before it and followed by `…' (N bytes, sha256 <16 hex>)`, the digest of the whole
//! name (`printf %s NAME | sha256sum`), never cut silently.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use redis_module::logging::RedisLogLevel;
use redis_module::MODULE_CONTEXT;

use crate::escape;

const MAX_PENDING: usize = 65_536;
const DRAIN_EVERY: Duration = Duration::from_millis(5);

/// What Redis keeps of a module's log line: 1024 bytes with the NUL, less `<jwks> `.
pub const MAX_LINE_BYTES: usize = 1024 - 1 - "<jwks> ".len();
/// Budgets, in bytes of the escaped form, of the fields of a line: together, with the
/// digests of cut fields and the fixed text, within [`MAX_LINE_BYTES`] (tested).
const KEY_BYTES: usize = 300;
const REASON_BYTES: usize = 128;
const ERROR_BYTES: usize = 200;
/// Anything else a line quotes (a maxmemory policy, a context).
const OTHER_BYTES: usize = 64;

/// `'name'`, escaped and cut to `max` bytes with a digest.
fn quoted(bytes: &[u8], max: usize) -> String {
    let mut out = String::with_capacity(bytes.len().min(max) + 2);
    escape::push_quoted(&mut out, bytes, max);
    out
}

/// One cache invalidation attempt, as its log line will tell it.
#[derive(Debug, PartialEq)]
struct Invalidation {
    key: Vec<u8>,
    reason: String,
    generation: u64,
    /// Key changes of the rotation that caused it (0 for a plain JWKS.INVALIDATE): a
    /// rotation logs one line, not one per step.
    changes: usize,
    /// Whether a cached document was deleted, or why the attempt failed.
    outcome: Result<bool, String>,
}

/// The same attempt, borrowed from the command: compared before anything is copied.
struct Attempt<'a> {
    key: &'a [u8],
    reason: &'a str,
    generation: u64,
    changes: usize,
    outcome: Result<bool, &'a str>,
}

impl Invalidation {
    fn is(&self, a: &Attempt) -> bool {
        self.key == a.key
            && self.reason == a.reason
            && self.generation == a.generation
            && self.changes == a.changes
            && match (&self.outcome, a.outcome) {
                (Ok(mine), Ok(theirs)) => *mine == theirs,
                (Err(mine), Err(theirs)) => mine == theirs,
                _ => false,
            }
    }

    fn of(a: &Attempt) -> Invalidation {
        Invalidation {
            key: a.key.to_vec(),
            reason: a.reason.to_owned(),
            generation: a.generation,
            changes: a.changes,
            outcome: a.outcome.map_err(str::to_owned),
        }
    }

    /// `EVENT key='…' reason='…' generation=N [changes=N] deleted=0|1` or `… error='…'`.
    fn line(&self) -> (RedisLogLevel, String) {
        let event = match self.outcome {
            Ok(_) => "JWKS_CACHE_INVALIDATED",
            Err(_) => "JWKS_CACHE_INVALIDATION_FAILED",
        };
        let mut out = String::with_capacity(160 + self.key.len() + self.reason.len());
        out.push_str(event);
        out.push_str(" key=");
        escape::push_quoted(&mut out, &self.key, KEY_BYTES);
        out.push_str(" reason=");
        escape::push_quoted(&mut out, self.reason.as_bytes(), REASON_BYTES);
        let _ = write!(out, " generation={}", self.generation);
        if self.changes > 0 {
            let _ = write!(out, " changes={}", self.changes);
        }
        match &self.outcome {
            Ok(deleted) => {
                let _ = write!(out, " deleted={}", u8::from(*deleted));
                (RedisLogLevel::Notice, out)
            }
            Err(error) => {
                out.push_str(" error=");
                escape::push_quoted(&mut out, error.as_bytes(), ERROR_BYTES);
                out.push_str(" (the cached JWKS expires within jwks.cache-ttl)");
                (RedisLogLevel::Warning, out)
            }
        }
    }
}

#[derive(Debug, PartialEq)]
enum Message {
    Invalidation(Invalidation),
    /// Anything rare enough to format on the spot (write failures, caught panics).
    Warning(String),
}

/// A message waiting to be written, and how many identical ones in a row it stands for.
#[derive(Debug)]
struct Pending {
    message: Message,
    repeated: u64,
}

impl Pending {
    fn line(&self) -> (RedisLogLevel, String) {
        let (level, mut line) = match &self.message {
            Message::Invalidation(i) => i.line(),
            Message::Warning(text) => (RedisLogLevel::Warning, text.clone()),
        };
        if self.repeated > 1 {
            let _ = write!(line, " repeated={}", self.repeated);
        }
        (level, line)
    }
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
    for p in batch.drain(..) {
        let (level, line) = p.line();
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

/// Queues an invalidation attempt, folded into the previous message if identical.
fn push_attempt(pending: &mut Vec<Pending>, a: &Attempt) -> bool {
    if let Some(last) = pending.last_mut() {
        if matches!(&last.message, Message::Invalidation(i) if i.is(a)) {
            last.repeated += 1;
            return true;
        }
    }
    push(pending, Message::Invalidation(Invalidation::of(a)))
}

/// Queues a message, folding it into the previous one if identical. False if full.
fn push(pending: &mut Vec<Pending>, message: Message) -> bool {
    if let Some(last) = pending.last_mut() {
        if last.message == message {
            last.repeated += 1;
            return true;
        }
    }
    if pending.len() >= MAX_PENDING {
        return false;
    }
    pending.push(Pending {
        message,
        repeated: 1,
    });
    true
}

fn write_now(p: Pending) {
    let (level, line) = p.line();
    MODULE_CONTEXT.log(level, &line);
}

fn attempt(a: &Attempt) {
    if !THREAD_RUNNING.load(Ordering::Relaxed) {
        // No thread (it could not be spawned): log inline rather than lose the line.
        write_now(Pending {
            message: Message::Invalidation(Invalidation::of(a)),
            repeated: 1,
        });
    } else if !push_attempt(&mut PENDING.lock(), a) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

fn warning(text: String) {
    if !THREAD_RUNNING.load(Ordering::Relaxed) {
        write_now(Pending {
            message: Message::Warning(text),
            repeated: 1,
        });
    } else if !push(&mut PENDING.lock(), Message::Warning(text)) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// One invalidation attempt (a rotation's or a plain one): notice when the cache was
/// invalidated, warning when it failed; plus a warning if a write after the commit failed.
pub fn invalidation(
    key: &[u8],
    reason: &str,
    generation: u64,
    changes: usize,
    outcome: &crate::commit::Outcome,
) {
    attempt(&Attempt {
        key,
        reason,
        generation,
        changes,
        outcome: match &outcome.error {
            None => Ok(outcome.deleted),
            Some(e) => Err(e),
        },
    });
    if let Some(e) = &outcome.incomplete {
        write_failed(key, e);
    }
}

pub fn write_failed(key: &[u8], error: &str) {
    warning(write_failed_line(key, error));
}

fn write_failed_line(key: &[u8], error: &str) -> String {
    format!(
        "redis-jwks could not write key={} error={}",
        quoted(key, KEY_BYTES),
        quoted(error.as_bytes(), ERROR_BYTES)
    )
}

pub fn cache_dropped(cache: &[u8]) {
    warning(format!(
        "redis-jwks deleted {}: it did not hold the current document of its key set",
        quoted(cache, KEY_BYTES)
    ));
}

pub fn eviction_risk(policy: &str) {
    let mut shown = String::new();
    escape::push_cut(&mut shown, policy.as_bytes(), OTHER_BYTES);
    warning(format!(
        "redis-jwks: maxmemory-policy {shown} can evict key sets, the only copy of the \
         published keys; use noeviction or a volatile-* policy (key sets have no TTL)"
    ));
}

pub fn reserved_name(name: &[u8]) {
    warning(format!(
        "redis-jwks: a key set arrived at {}, a name no key set may have; it is served but its \
         cache is not kept: rename it back",
        quoted(name, KEY_BYTES)
    ));
}

pub fn scheduled_change_failed(key: &[u8], error: &str, attempt: u32, retry_ms: i64) {
    warning(format!(
        "redis-jwks could not apply the scheduled change of key set {}: {} (attempt {attempt}, \
         retrying in {} s; logged again at attempt {})",
        quoted(key, KEY_BYTES),
        quoted(error.as_bytes(), ERROR_BYTES),
        retry_ms / 1000,
        attempt.saturating_mul(2)
    ));
}

pub fn keyset_lost(name: &[u8]) {
    warning(format!(
        "redis-jwks: the key set {} was replaced by a value of another type (SET or another \
         command over it): its keys are no longer published; restore it from the audit trail \
         or a backup (JWKS_KEYSET_LOST)",
        quoted(name, KEY_BYTES)
    ));
}

pub fn load_refused(name: &[u8], why: &str) {
    // Written at once, not through the logging thread: a refused value stops an RDB load,
    // and Redis exits before the thread would write it.
    write_now(Pending {
        message: Message::Warning(format!(
            "redis-jwks refused to load the key set {}: {} (RESTORE fails; an RDB load stops)",
            quoted(name, KEY_BYTES),
            quoted(why.as_bytes(), ERROR_BYTES)
        )),
        repeated: 1,
    });
}

pub fn internal_error(context: &str) {
    internal_error_in(context.as_bytes());
}

/// As [`internal_error`], for a context given as bytes (a command name as the client sent
/// it): escaped here, not made lossy by the caller.
pub fn internal_error_in(context: &[u8]) {
    let mut shown = String::new();
    escape::push_cut(&mut shown, context, OTHER_BYTES);
    warning(format!(
        "redis-jwks internal error (panic caught) in {shown}; the command was aborted"
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt<'a>(reason: &'a str, outcome: Result<bool, &'a str>) -> Attempt<'a> {
        Attempt {
            key: b"k",
            reason,
            generation: 2,
            changes: 0,
            outcome,
        }
    }

    fn lines(pending: &[Pending]) -> Vec<String> {
        pending.iter().map(|p| p.line().1).collect()
    }

    #[test]
    fn identical_consecutive_lines_fold_and_others_keep_their_order() {
        let mut pending = Vec::new();
        for reason in ["a", "a", "a", "b", "a"] {
            assert!(push_attempt(&mut pending, &attempt(reason, Ok(false))));
        }
        assert!(push_attempt(&mut pending, &attempt("a", Ok(true))));
        assert!(push_attempt(&mut pending, &attempt("a", Err("boom"))));
        assert!(push(&mut pending, Message::Warning("w".into())));
        assert!(push(&mut pending, Message::Warning("w".into())));
        assert_eq!(
            lines(&pending),
            [
                "JWKS_CACHE_INVALIDATED key='k' reason='a' generation=2 deleted=0 repeated=3",
                "JWKS_CACHE_INVALIDATED key='k' reason='b' generation=2 deleted=0",
                "JWKS_CACHE_INVALIDATED key='k' reason='a' generation=2 deleted=0",
                "JWKS_CACHE_INVALIDATED key='k' reason='a' generation=2 deleted=1",
                "JWKS_CACHE_INVALIDATION_FAILED key='k' reason='a' generation=2 error='boom' \
                 (the cached JWKS expires within jwks.cache-ttl)",
                "w repeated=2",
            ]
        );
        assert!(matches!(pending[4].line().0, RedisLogLevel::Warning));
        assert!(matches!(pending[0].line().0, RedisLogLevel::Notice));
    }

    #[test]
    fn a_rotation_line_carries_its_change_count() {
        let mut a = attempt("key_rotation", Ok(true));
        a.changes = 2;
        let (_, line) = Pending {
            message: Message::Invalidation(Invalidation::of(&a)),
            repeated: 1,
        }
        .line();
        assert_eq!(
            line,
            "JWKS_CACHE_INVALIDATED key='k' reason='key_rotation' generation=2 changes=2 deleted=1"
        );
    }

    fn line_of(key: &[u8], reason: &str, outcome: Result<bool, &str>) -> String {
        let a = Attempt {
            key,
            reason,
            generation: 2,
            changes: 0,
            outcome,
        };
        Invalidation::of(&a).line().1
    }

    #[test]
    fn names_and_reasons_are_escaped_and_never_log_alike() {
        assert_eq!(
            line_of(b"a\xffb\r\n", "x\u{2028}y\u{202e}z", Ok(true)),
            "JWKS_CACHE_INVALIDATED key='a\\xffb\\r\\n' reason='x\\u{2028}y\\u{202e}z' \
             generation=2 deleted=1"
        );
        // A name spelled as another's escape logs differently.
        assert_ne!(
            line_of(b"\\xff", "r", Ok(true)),
            line_of(b"\xff", "r", Ok(true))
        );
        // Long names that differ only at the end: both cut, told apart by the digest.
        let a = [b'k'; 512];
        let mut b = a;
        b[511] = b'l';
        let (la, lb) = (line_of(&a, "r", Ok(true)), line_of(&b, "r", Ok(true)));
        assert_ne!(la, lb);
        assert!(la.contains("…' (512 bytes, sha256 "), "{la}");
        assert!(la.is_ascii() || la.chars().filter(|c| !c.is_ascii()).all(|c| c == '…'));
    }

    #[test]
    fn the_longest_lines_fit_what_redis_keeps() {
        let key = [0xffu8; 512];
        let reason = "\u{2028}".repeat(42);
        let error = "\u{202e}".repeat(100_000);
        let mut a = Attempt {
            key: &key,
            reason: &reason,
            generation: u64::MAX,
            changes: usize::MAX,
            outcome: Err(&error),
        };
        let mut longest = Pending {
            message: Message::Invalidation(Invalidation::of(&a)),
            repeated: u64::MAX,
        }
        .line()
        .1;
        a.outcome = Ok(true);
        let ok = Invalidation::of(&a).line().1;
        let warn = write_failed_line(&key, &error);
        for line in [&mut longest, &mut ok.clone(), &mut warn.clone()] {
            assert!(line.len() <= MAX_LINE_BYTES, "{} bytes: {line}", line.len());
            assert!(line.contains("sha256 "), "{line}");
        }
    }

    #[test]
    fn a_full_buffer_refuses_new_lines_but_still_counts_repeats() {
        let mut pending = Vec::new();
        for i in 0..MAX_PENDING {
            assert!(push(&mut pending, Message::Warning(i.to_string())));
        }
        assert!(!push(&mut pending, Message::Warning("new".into())));
        let last = (MAX_PENDING - 1).to_string();
        assert!(push(&mut pending, Message::Warning(last)));
        assert_eq!(pending.last().map(|p| p.repeated), Some(2));
    }
}
