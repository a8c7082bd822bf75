//! Which key sets this node holds, per db, with what JWKS.STATS reports of each (the
//! lifecycle gauges), so a scrape needs no keyspace scan and opens no keys. Kept by what
//! creates and removes key-set values: a committed change or JWKS.SETSTATE, a value loaded
//! from RDB or RESTORE/MIGRATE (its IO context names the key), COPY, a RENAME or MOVE onto
//! a name, and the type's unlink callback; flushes and SWAPDB act on whole dbs. Only names
//! that hold a key set are ever added, so refused commands cannot grow it. JWKS.STATS also
//! checks a bounded slice of names against the keyspace on each call (`stale`).

use std::collections::BTreeMap;

use parking_lot::Mutex;

use redis_jwks_core::keyset::{KeySet, State};

/// What a scrape reports of one key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Snapshot {
    /// PROMOTE-AFTER (0: none) and whether any policy is set.
    pub promote_after_ms: u64,
    pub has_policy: bool,
    /// When the current key was promoted.
    pub current_since_ms: Option<i64>,
    pub has_next: bool,
    /// A hash of the stored form: tells whether the key set at a name is still the same one
    /// after a flush and load (`DEBUG RELOAD` announces nothing when nothing changed).
    pub fingerprint: u64,
}

impl Snapshot {
    pub(crate) fn of(set: &KeySet) -> Snapshot {
        let policy = set.lifecycle();
        let current = set.entries().iter().find(|e| e.state == State::Current);
        Snapshot {
            promote_after_ms: policy.promote_after_ms,
            has_policy: policy.is_set(),
            current_since_ms: current.map(|e| e.promoted_ms.unwrap_or(e.added_ms)),
            has_next: set.entries().iter().any(|e| e.state == State::Next),
            fingerprint: fingerprint(set),
        }
    }
}

/// Same stored form, same fingerprint (within this process).
pub(crate) fn fingerprint(set: &KeySet) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    set.to_stored().hash(&mut h);
    h.finish()
}

type Names = BTreeMap<Vec<u8>, Snapshot>;

struct Registry {
    dbs: BTreeMap<i32, Names>,
    /// Where the next consistency check resumes: (db, name).
    cursor: Option<(i32, Vec<u8>)>,
}

static SETS: Mutex<Registry> = Mutex::new(Registry {
    dbs: BTreeMap::new(),
    cursor: None,
});

pub(crate) fn put(db: i32, name: &[u8], snapshot: Snapshot) {
    let mut r = SETS.lock();
    let names = r.dbs.entry(db).or_default();
    match names.get_mut(name) {
        Some(s) => *s = snapshot,
        None => {
            names.insert(name.to_vec(), snapshot);
        }
    }
}

/// A db keeps its (possibly empty) entry once it held a key set, so its gauge reads 0
/// instead of vanishing.
pub(crate) fn remove(db: i32, name: &[u8]) -> Option<Snapshot> {
    SETS.lock().dbs.get_mut(&db)?.remove(name)
}

pub(crate) fn get(db: i32, name: &[u8]) -> Option<Snapshot> {
    SETS.lock().dbs.get(&db)?.get(name).copied()
}

/// Forgets db `db`'s key sets, or every db's for -1 (FLUSHDB / FLUSHALL, a load).
pub(crate) fn clear(db: i32) {
    let mut r = SETS.lock();
    for (d, names) in r.dbs.iter_mut() {
        if db < 0 || *d == db {
            names.clear();
        }
    }
}

pub(crate) fn swap(a: i32, b: i32) {
    let mut r = SETS.lock();
    let first = r.dbs.remove(&a);
    let second = r.dbs.remove(&b);
    if let Some(names) = first {
        r.dbs.insert(b, names);
    }
    if let Some(names) = second {
        r.dbs.insert(a, names);
    }
}

/// The key sets of db `db` (every db for -1) with their fingerprints.
pub(crate) fn entries(db: i32) -> Vec<(i32, Vec<u8>, u64)> {
    let r = SETS.lock();
    r.dbs
        .iter()
        .filter(|(d, _)| db < 0 || **d == db)
        .flat_map(|(d, names)| {
            names
                .iter()
                .map(move |(n, s)| (*d, n.clone(), s.fingerprint))
        })
        .collect()
}

/// Calls `f` with every db and its key sets, in order.
pub(crate) fn each(mut f: impl FnMut(i32, &Names)) {
    let r = SETS.lock();
    for (db, names) in &r.dbs {
        f(*db, names);
    }
}

/// Up to `n` names after the last ones returned, wrapping around: a rolling check.
pub(crate) fn next_slice(n: usize) -> Vec<(i32, Vec<u8>)> {
    let mut r = SETS.lock();
    let start = r.cursor.clone();
    let mut out: Vec<(i32, Vec<u8>)> = Vec::with_capacity(n);
    let all = r
        .dbs
        .iter()
        .flat_map(|(db, names)| names.keys().map(move |k| (*db, k)));
    let after: Vec<(i32, Vec<u8>)> = match &start {
        Some((sdb, sname)) => all
            .filter(|(db, k)| (*db, k.as_slice()) > (*sdb, sname.as_slice()))
            .take(n)
            .map(|(db, k)| (db, k.clone()))
            .collect(),
        None => all.take(n).map(|(db, k)| (db, k.clone())).collect(),
    };
    out.extend(after);
    if out.len() < n && start.is_some() {
        let again = r
            .dbs
            .iter()
            .flat_map(|(db, names)| names.keys().map(move |k| (*db, k)));
        for (db, k) in again.take(n - out.len()) {
            if !out.iter().any(|(d, o)| *d == db && o == k) {
                out.push((db, k.clone()));
            }
        }
    }
    r.cursor = out.last().cloned();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<(i32, Vec<u8>)> {
        let mut out = Vec::new();
        each(|db, names| out.extend(names.keys().map(|k| (db, k.clone()))));
        out
    }

    #[test]
    fn put_remove_swap_clear_and_a_rolling_slice() {
        clear(-1);
        put(0, b"a", Snapshot::default());
        put(0, b"a", Snapshot::default());
        put(1, b"b", Snapshot::default());
        assert_eq!(names(), vec![(0, b"a".to_vec()), (1, b"b".to_vec())]);
        assert_eq!(next_slice(1), vec![(0, b"a".to_vec())]);
        assert_eq!(next_slice(1), vec![(1, b"b".to_vec())]);
        assert_eq!(next_slice(1), vec![(0, b"a".to_vec())]);
        swap(0, 1);
        assert_eq!(names(), vec![(0, b"b".to_vec()), (1, b"a".to_vec())]);
        swap(1, 5);
        assert_eq!(names(), vec![(0, b"b".to_vec()), (5, b"a".to_vec())]);
        remove(0, b"b");
        clear(5);
        assert!(names().is_empty());
        assert!(next_slice(3).is_empty());
        let mut dbs = Vec::new();
        each(|db, names| dbs.push((db, names.len())));
        assert_eq!(dbs, vec![(0, 0), (5, 0)]);
    }
}
