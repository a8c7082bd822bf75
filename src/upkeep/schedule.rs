//! The lifecycle scheduler: every key set's next policy change, in time order, and one timer
//! for the earliest. No per-key-set polling: 10,000 key sets with policies cost one timer.
//!
//! Entries follow the key-set values (rotation, POLICY, replication, RDB/AOF load, RESTORE,
//! COPY, RENAME, MOVE; removed on unlink, flush, load), on replicas too, so a replica that
//! becomes primary takes the schedule over. Only a primary applies changes; each is an
//! ordinary change (audit, cache invalidation, counters, log, replication as effects),
//! stamped with its due time, so changes that fell due while the server was down are
//! applied at start, in order, with their real times. Under CONFIRM, a promotion the
//! verifiers confirm is due when MIN-WAIT ends (at once after the confirming ack, if that
//! has passed) and is stamped with the time it is made; acks re-arm the timer.

use std::collections::{BTreeSet, HashMap};
use std::os::raw::c_void;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use redis_module::raw::RedisModuleCtx;
use redis_module::Context;

use super::{guarded, server_events, DETACHED};
use crate::glue::call::{self, now_ms, Caller};
use crate::glue::redis_key::{api, select_db, Key, Mode};
use crate::observe::{log, stats};
use crate::write::{self, Targets, What, Write};
use redis_jwks_core::counter_names;
use redis_jwks_core::error::Result;
use redis_jwks_core::names;

type Entry = (i32, Vec<u8>);

#[derive(Default)]
struct Schedule {
    at: HashMap<Entry, i64>,
    queue: BTreeSet<(i64, i32, Vec<u8>)>,
    /// The armed timer and when it fires.
    timer: Option<(u64, i64)>,
    /// Nothing runs before this time: writes were not allowed (paused clients, OOM).
    hold_until: i64,
    /// Failed attempts in a row per key set, for the back-off and the folded warning.
    failures: HashMap<Entry, u32>,
}

static SCHEDULE: Mutex<Option<Schedule>> = Mutex::new(None);

/// The longest a timer is armed for; a change further away is reached by re-arming. Redis
/// 7.0 reschedules module timers with `now + (int)period * 1000` in microseconds, which
/// overflows past about 35 minutes and makes the event loop spin (found by bench/: one
/// policy an hour out and one other module timer firing made Redis burn a core).
const MAX_TIMER_MS: i64 = 60_000;

/// How long to wait before retrying a change that could not be applied (a derived key of
/// the wrong type, say): doubling from 1 s to a minute, so the scheduler neither spins nor
/// fills the log.
const RETRY_MS: i64 = 1000;
const MAX_RETRY_MS: i64 = 60_000;
/// How soon to look again while writes are not allowed (a pause for a failover, OOM).
const HOLD_MS: i64 = 10;

fn with<T>(f: impl FnOnce(&mut Schedule) -> T) -> T {
    f(SCHEDULE.lock().get_or_insert_with(Schedule::default))
}

/// Records when the key set at (`db`, `name`) next changes (`None`: never), and arms the
/// timer if that is now the earliest.
pub(crate) fn set(db: i32, name: &[u8], at: Option<i64>) {
    with(|s| {
        if let Some(old) = s.at.remove(&(db, name.to_vec())) {
            s.queue.remove(&(old, db, name.to_vec()));
        }
        if at.is_none() {
            s.failures.remove(&(db, name.to_vec()));
        }
        if let Some(at) = at {
            s.at.insert((db, name.to_vec()), at);
            s.queue.insert((at, db, name.to_vec()));
        }
    });
    arm();
}

pub(crate) fn remove(db: i32, name: &[u8]) {
    set(db, name, None);
}

/// Forgets db `db`, or every db for -1.
pub(crate) fn clear(db: i32) {
    with(|s| {
        s.at.retain(|(d, _), _| db >= 0 && *d != db);
        s.queue.retain(|(_, d, _)| db >= 0 && *d != db);
    });
}

pub(crate) fn swap(a: i32, b: i32) {
    with(|s| {
        let moved = |d: i32| match d {
            d if d == a => b,
            d if d == b => a,
            d => d,
        };
        s.at = std::mem::take(&mut s.at)
            .into_iter()
            .map(|((d, n), at)| ((moved(d), n), at))
            .collect();
        s.queue = std::mem::take(&mut s.queue)
            .into_iter()
            .map(|(at, d, n)| (at, moved(d), n))
            .collect();
    });
}

/// Arms the timer for the earliest entry (on a primary).
pub(crate) fn arm() {
    if server_events::is_replica() {
        return;
    }
    let ctx = DETACHED.load(Ordering::Relaxed);
    let Some(earliest) = with(|s| s.queue.first().map(|(at, _, _)| (*at).max(s.hold_until))) else {
        return;
    };
    let now = now_ms();
    let stale = with(|s| match s.timer {
        Some((_, fires)) if fires <= earliest => None,
        other => Some(other),
    });
    let Some(old) = stale else { return };
    let (Ok(create), Ok(stop)) = (api!(RedisModule_CreateTimer), api!(RedisModule_StopTimer))
    else {
        return;
    };
    if ctx.is_null() {
        return;
    }
    if let Some((id, _)) = old {
        // SAFETY: a timer this module created; its data is null.
        unsafe { stop(ctx, id, std::ptr::null_mut()) };
    }
    let period = earliest.saturating_sub(now).clamp(0, MAX_TIMER_MS);
    // SAFETY: the module's detached context; the callback takes no data.
    let id = unsafe { create(ctx, period, Some(on_timer), std::ptr::null_mut()) };
    with(|s| s.timer = Some((id, now.saturating_add(period))));
}

unsafe extern "C" fn on_timer(ctx: *mut RedisModuleCtx, _data: *mut c_void) {
    with(|s| s.timer = None);
    guarded("lifecycle timer", || run_due(&Context::new(ctx)));
    arm();
}

/// Applies every change that is due (on a primary; a replica waits to be promoted), when
/// the server allows writes: during a pause (a failover) or OOM the change waits and is
/// applied right after, once, stamped with its due time.
fn run_due(ctx: &Context) {
    match super::gate(ctx) {
        super::Gate::Replica => return,
        super::Gate::Wait => {
            with(|s| s.hold_until = now_ms().saturating_add(HOLD_MS));
            return;
        }
        super::Gate::Open => with(|s| s.hold_until = 0),
    }
    let now = now_ms();
    let due: Vec<Entry> = with(|s| {
        let due: Vec<(i64, i32, Vec<u8>)> = s
            .queue
            .iter()
            .take_while(|(at, _, _)| *at <= now)
            .cloned()
            .collect();
        for entry in &due {
            s.queue.remove(entry);
            s.at.remove(&(entry.1, entry.2.clone()));
        }
        due.into_iter().map(|(_, db, name)| (db, name)).collect()
    });
    let home = call::db(ctx);
    for (db, name) in due {
        if !select_db(ctx, db) {
            continue;
        }
        match apply(ctx, db, &name, now) {
            Ok(()) => {
                with(|s| s.failures.remove(&(db, name.clone())));
            }
            Err(e) => {
                let attempt = with(|s| {
                    let n = s.failures.entry((db, name.clone())).or_insert(0);
                    *n = n.saturating_add(1);
                    *n
                });
                let delay = RETRY_MS
                    .saturating_mul(1i64 << attempt.saturating_sub(1).min(6))
                    .min(MAX_RETRY_MS);
                // Attempts 1, 2, 4, 8...: a stuck key set logs a few lines, not one a second.
                if attempt.is_power_of_two() {
                    log::scheduled_change_failed(&name, &e.to_string(), attempt, delay);
                }
                set_keep_failures(db, &name, Some(now.saturating_add(delay)));
            }
        }
    }
    select_db(ctx, home);
}

/// `set` for a retry: keeps the failure count.
fn set_keep_failures(db: i32, name: &[u8], at: Option<i64>) {
    let kept = with(|s| s.failures.get(&(db, name.to_vec())).copied());
    set(db, name, at);
    if let Some(n) = kept {
        with(|s| s.failures.insert((db, name.to_vec()), n));
    }
}

/// Applies the due changes of one key set, in order, each as an ordinary change.
fn apply(ctx: &Context, db: i32, name: &[u8], now: i64) -> Result<()> {
    if names::check_name(name).is_err() {
        return Ok(());
    }
    loop {
        let key = Key::named(ctx, name, Mode::Peek)?;
        let Some(stored) = key.keyset().ok().flatten() else {
            return Ok(());
        };
        let fleet = crate::fleets::generations(db, name, now);
        let Some((next, changes, due)) = stored.set().apply_due_with(now, &fleet) else {
            set(
                db,
                name,
                crate::fleets::wake_at(db, name, stored.set(), now),
            );
            return Ok(());
        };
        drop(key);
        let caller = Caller::schedule(ctx);
        let targets = Targets::check(ctx, &caller, name)?;
        write::commit(
            ctx,
            &caller,
            &targets,
            Write {
                what: What::Keys {
                    next: &next,
                    changes: &changes,
                },
                at_ms: due.at_ms,
                // A promotion the verifiers confirmed says so in the audit trail.
                reason: if due.confirmed { "confirmed" } else { "policy" }.into(),
                forced: false,
            },
        )?;
        stats::count(counter_names::SCHEDULED_CHANGES);
    }
}

/// After a failover: this node now owns its key sets' schedules.
pub(crate) fn on_promoted() {
    with(|s| s.timer = None);
    arm();
}

/// Registers the key set at (`db`, `name`) from its value (load, copy, arrival, change,
/// an ack under CONFIRM).
pub(crate) fn track(db: i32, name: &[u8], set: &redis_jwks_core::keyset::KeySet) {
    self::set(db, name, crate::fleets::wake_at(db, name, set, now_ms()));
}
