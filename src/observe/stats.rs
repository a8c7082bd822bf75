//! This process's own counts of what the module did, since the server started: what
//! JWKS.STATS exports as Prometheus counters. They only grow, and restart with the process,
//! exactly as Prometheus expects of a counter; deleting, moving or failing over a key set
//! cannot lower them (the per-key-set hashes, which travel with the sets, could).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use redis_jwks_core::counter_names::NODE as ALL;

static COUNTS: [AtomicU64; ALL.len()] = [const { AtomicU64::new(0) }; ALL.len()];

pub(crate) fn count(counter: &'static str) {
    if let Some(i) = ALL.iter().position(|c| *c == counter) {
        COUNTS[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Every counter with its value, in `metrics::ALL` order.
pub(crate) fn all() -> [(&'static str, u64); ALL.len()] {
    std::array::from_fn(|i| (ALL[i], COUNTS[i].load(Ordering::Relaxed)))
}

/// Invalidation errors this process saw, by key set (db, name): sparse, since errors are
/// rare; what lets an alert name the key set. Like the node counters it only grows.
type ByDb = BTreeMap<i32, BTreeMap<Vec<u8>, u64>>;

static KEYSET_ERRORS: parking_lot::Mutex<ByDb> = parking_lot::Mutex::new(BTreeMap::new());
/// `JWKS.KEY` misses by key set (only key sets that exist: a miss on a name that holds none
/// is counted in the node counter alone, so hostile names cannot grow this).
static KEYSET_UNKNOWN_KIDS: parking_lot::Mutex<ByDb> = parking_lot::Mutex::new(BTreeMap::new());

fn bump(map: &parking_lot::Mutex<ByDb>, db: i32, name: &[u8]) {
    let mut counts = map.lock();
    let n = counts
        .entry(db)
        .or_default()
        .entry(name.to_vec())
        .or_insert(0);
    *n = n.saturating_add(1);
}

pub(crate) fn count_keyset_error(db: i32, name: &[u8]) {
    bump(&KEYSET_ERRORS, db, name);
}

pub(crate) fn count_unknown_kid(db: i32, name: &[u8]) {
    bump(&KEYSET_UNKNOWN_KIDS, db, name);
}

/// A copy of the counts (few entries: errors are rare).
pub(crate) fn keyset_errors() -> ByDb {
    KEYSET_ERRORS.lock().clone()
}

/// A copy of the unknown-kid counts.
pub(crate) fn keyset_unknown_kids() -> ByDb {
    KEYSET_UNKNOWN_KIDS.lock().clone()
}
