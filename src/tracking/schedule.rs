//! When each key set's policy next changes it: every key set's next time, in order, and
//! one timer for the earliest. No per-key-set polling: 10,000 key sets with policies cost
//! one timer. `upkeep::scheduler` registers what runs when it fires (applying the changes
//! through the write path); this file only keeps the times.
//!
//! Entries follow the key-set values (rotation, POLICY, replication, RDB/AOF load, RESTORE,
//! COPY, RENAME, MOVE; removed on unlink, flush, load), on replicas too, so a replica that
//! becomes primary takes the schedule over. Under CONFIRM, an ack re-arms the timer.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use parking_lot::Mutex;
use redis_module::Context;

use super::is_replica;
use crate::glue::clock::now_ms;
use crate::glue::ffi;

pub(crate) type Entry = (i32, Vec<u8>);

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

/// What runs when the timer fires (`upkeep::scheduler`, registered at load).
static RUNNER: OnceLock<fn(&Context)> = OnceLock::new();

pub(crate) fn set_runner(run: fn(&Context)) {
    let _ = RUNNER.set(run);
}

/// The longest a timer is armed for; a change further away is reached by re-arming. Redis
/// 7.0 reschedules module timers with `now + (int)period * 1000` in microseconds, which
/// overflows past about 35 minutes and makes the event loop spin (found by bench/: one
/// policy an hour out and one other module timer firing made Redis burn a core).
const MAX_TIMER_MS: i64 = 60_000;

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
    if is_replica() {
        return;
    }
    let Some(ctx) = ffi::detached() else {
        return;
    };
    let Some(earliest) = with(|s| s.queue.first().map(|(at, _, _)| (*at).max(s.hold_until))) else {
        return;
    };
    let now = now_ms();
    let stale = with(|s| match s.timer {
        Some((_, fires)) if fires <= earliest => None,
        other => Some(other),
    });
    let Some(old) = stale else { return };
    if let Some((id, _)) = old {
        ffi::stop_timer(&ctx, id);
    }
    let period = earliest.saturating_sub(now).clamp(0, MAX_TIMER_MS);
    if let Some(id) = ffi::timer(&ctx, period, on_timer) {
        with(|s| s.timer = Some((id, now.saturating_add(period))));
    }
}

fn on_timer(ctx: &Context) {
    with(|s| s.timer = None);
    if let Some(run) = RUNNER.get() {
        run(ctx);
    }
    arm();
}

/// After a failover: this node now owns its key sets' schedules.
pub(crate) fn on_promoted() {
    with(|s| s.timer = None);
    arm();
}

/// Takes every entry due at `now`, in time order.
pub(crate) fn take_due(now: i64) -> Vec<Entry> {
    with(|s| {
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
    })
}

/// Runs nothing before `until` (0: no hold): writes are not allowed now.
pub(crate) fn hold(until: i64) {
    with(|s| s.hold_until = until);
}

/// A change of the key set at (`db`, `name`) went through.
pub(crate) fn succeeded(db: i32, name: &[u8]) {
    with(|s| s.failures.remove(&(db, name.to_vec())));
}

/// A change of the key set at (`db`, `name`) failed: its attempt number in a row.
pub(crate) fn failed(db: i32, name: &[u8]) -> u32 {
    with(|s| {
        let n = s.failures.entry((db, name.to_vec())).or_insert(0);
        *n = n.saturating_add(1);
        *n
    })
}

/// `set` for a retry: keeps the failure count.
pub(crate) fn retry(db: i32, name: &[u8], at: i64) {
    let kept = with(|s| s.failures.get(&(db, name.to_vec())).copied());
    set(db, name, Some(at));
    if let Some(n) = kept {
        with(|s| s.failures.insert((db, name.to_vec()), n));
    }
}
