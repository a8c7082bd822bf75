//! Every key set's verifiers (`redis_jwks_core::fleet`), in this process's memory: fed by
//! `JWKS.ACK`, read by `JWKS.VERIFIERS`, `JWKS.INFO`, the scheduler (CONFIRM) and
//! `JWKS.STATS`. Not persisted or replicated (the core's `fleet` says why). A fleet is
//! forgotten when its key set leaves the name by another command than the module's own
//! (DEL, RENAME, expiry, a flush) and follows SWAPDB, so a key set created later at the
//! name starts with no verifiers: acks name a generation, and generations restart.

use std::collections::HashMap;

use parking_lot::Mutex;

use redis_jwks_core::error::{Error, Result};
use redis_jwks_core::fleet::{Ack, Fleet, MAX_IN_ALL};
use redis_jwks_core::keyset::KeySet;

#[derive(Default)]
struct Fleets {
    by_set: HashMap<(i32, Vec<u8>), Fleet>,
    /// Verifiers held in all (live or not yet pruned).
    total: usize,
}

static FLEETS: Mutex<Option<Fleets>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut Fleets) -> T) -> T {
    f(FLEETS.lock().get_or_insert_with(Fleets::default))
}

impl Fleets {
    fn prune_all(&mut self, now_ms: i64) {
        for fleet in self.by_set.values_mut() {
            self.total = self.total.saturating_sub(fleet.prune(now_ms));
        }
    }

    /// The fleet of a key set with its expired verifiers dropped.
    fn pruned(&mut self, db: i32, name: &[u8], now_ms: i64) -> Option<&mut Fleet> {
        let fleet = self.by_set.get_mut(&(db, name.to_vec()))?;
        self.total = self.total.saturating_sub(fleet.prune(now_ms));
        Some(fleet)
    }
}

/// Records `ack` for the key set at (`db`, `name`), now at `generation` with a document of
/// ETag `etag()` (refused, `STALE`, if the ack's ETag says it is about a key set once at
/// this name, not this one). True if it changed
/// what the fleet holds (a new verifier, or another generation), which is when a CONFIRM
/// can come of it; a repeated ack only extends a verifier's life. O(log V).
pub(crate) fn ack(
    db: i32,
    name: &[u8],
    ack: &Ack,
    (generation, etag): (u64, impl FnOnce() -> String),
    now_ms: i64,
) -> Result<bool> {
    with(|all| {
        let key = (db, name.to_vec());
        let before = all
            .by_set
            .get(&key)
            .and_then(|f| f.get(&ack.id))
            .map(|v| v.generation);
        if before.is_none() && all.total >= MAX_IN_ALL {
            all.prune_all(now_ms);
            if all.total >= MAX_IN_ALL {
                return Err(Error::TooManyVerifiers("this server", MAX_IN_ALL));
            }
        }
        let fleet = all.by_set.entry(key).or_default();
        fleet.saw_generation(generation, now_ms, etag);
        fleet.check(ack)?;
        let len = fleet.len();
        fleet.ack(ack, now_ms)?;
        all.total = all.total.saturating_add(fleet.len()).saturating_sub(len);
        Ok(before != Some(ack.generation))
    })
}

/// The generations the live verifiers of the key set hold, with how many hold each (none
/// without a fleet). O(generations held).
pub(crate) fn held(db: i32, name: &[u8], now_ms: i64) -> Vec<(u64, usize)> {
    with(|all| {
        all.pruned(db, name, now_ms)
            .map(|f| f.held())
            .unwrap_or_default()
    })
}

/// Reads the fleet of a key set, if it has one.
pub(crate) fn read<T>(db: i32, name: &[u8], f: impl FnOnce(&Fleet) -> T) -> Option<T> {
    with(|all| all.by_set.get(&(db, name.to_vec())).map(f))
}

/// The key set at (`db`, `name`) is `set` now (for how long verifiers are behind, and which
/// document each generation was). Nothing to do, and nothing rendered, without a fleet.
pub(crate) fn saw_generation(db: i32, name: &[u8], set: &KeySet, now_ms: i64) {
    with(|all| {
        if let Some(f) = all.by_set.get_mut(&(db, name.to_vec())) {
            f.saw_generation(set.generation(), now_ms, || set.rendered().etag);
        }
    });
}

/// When the scheduler must next look at the key set: its next change given the live
/// verifiers, or, while a CONFIRM waits, when the next verifier expires (the share holding
/// the key may rise without any ack). O(generations held).
pub(crate) fn wake_at(db: i32, name: &[u8], set: &KeySet, now_ms: i64) -> Option<i64> {
    if !set.lifecycle().confirms() {
        return set.next_change().map(|d| d.at_ms);
    }
    with(|all| {
        let fleet = all.pruned(db, name, now_ms);
        let (held, expiry) = match fleet {
            Some(f) => (f.held(), f.next_expiry()),
            None => (Vec::new(), None),
        };
        let due = set.next_change_with(&held).map(|d| d.at_ms);
        // An expiry matters only while a next key waits for its confirmation.
        let waiting = set.confirmation(&held).is_some_and(|c| !c.confirmed());
        match (due, expiry.filter(|_| waiting)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    })
}

/// Every fleet, for JWKS.STATS.
pub(crate) fn each(mut f: impl FnMut(i32, &[u8], &Fleet)) {
    with(|all| {
        for ((db, name), fleet) in &all.by_set {
            f(*db, name, fleet);
        }
    });
}

/// The key set at (`db`, `name`) left it.
pub(crate) fn forget(db: i32, name: &[u8]) {
    with(|all| {
        if let Some(f) = all.by_set.remove(&(db, name.to_vec())) {
            all.total = all.total.saturating_sub(f.len());
        }
    });
}

/// Forgets db `db`, or every db for -1.
pub(crate) fn clear(db: i32) {
    with(|all| {
        all.by_set.retain(|(d, _), _| db >= 0 && *d != db);
        all.total = all.by_set.values().map(Fleet::len).sum();
    });
}

pub(crate) fn swap(a: i32, b: i32) {
    with(|all| {
        all.by_set = std::mem::take(&mut all.by_set)
            .into_iter()
            .map(|((d, n), f)| {
                let d = match d {
                    d if d == a => b,
                    d if d == b => a,
                    d => d,
                };
                ((d, n), f)
            })
            .collect();
    });
}
