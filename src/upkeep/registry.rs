//! Which key sets this node holds, per db, so JWKS.STATS can report on them without a
//! keyspace scan. Kept by what creates and removes key-set values: a committed JWKS.ROTATE
//! or JWKS.SETSTATE, a value loaded from RDB or RESTORE/MIGRATE (its IO context names the
//! key), COPY, a RENAME or MOVE onto a name, and the type's unlink callback; flushes and
//! SWAPDB act on whole dbs. Only names that hold a key set are ever added, so refused
//! commands cannot grow it. Readers still check each name holds a key set.

use std::collections::{BTreeMap, BTreeSet};

use parking_lot::Mutex;

static SETS: Mutex<BTreeMap<i32, BTreeSet<Vec<u8>>>> = Mutex::new(BTreeMap::new());

pub fn add(db: i32, name: &[u8]) {
    let mut sets = SETS.lock();
    let names = sets.entry(db).or_default();
    if !names.contains(name) {
        names.insert(name.to_vec());
    }
}

pub fn remove(db: i32, name: &[u8]) {
    let mut sets = SETS.lock();
    if let Some(names) = sets.get_mut(&db) {
        names.remove(name);
        if names.is_empty() {
            sets.remove(&db);
        }
    }
}

/// Forgets db `db`, or every db for -1 (FLUSHDB / FLUSHALL, or a load replacing all).
pub fn clear(db: i32) {
    let mut sets = SETS.lock();
    if db < 0 {
        sets.clear();
    } else {
        sets.remove(&db);
    }
}

pub fn swap(a: i32, b: i32) {
    let mut sets = SETS.lock();
    let first = sets.remove(&a);
    let second = sets.remove(&b);
    if let Some(names) = first {
        sets.insert(b, names);
    }
    if let Some(names) = second {
        sets.insert(a, names);
    }
}

/// The registered names, by db.
pub fn snapshot() -> Vec<(i32, Vec<Vec<u8>>)> {
    SETS.lock()
        .iter()
        .map(|(db, names)| (*db, names.iter().cloned().collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_remove_swap_clear() {
        clear(-1);
        add(0, b"a");
        add(0, b"a");
        add(1, b"b");
        assert_eq!(snapshot(), vec![(0, vec![b"a".to_vec()]), (1, vec![b"b".to_vec()])]);
        swap(0, 1);
        assert_eq!(snapshot(), vec![(0, vec![b"b".to_vec()]), (1, vec![b"a".to_vec()])]);
        swap(1, 5);
        assert_eq!(snapshot(), vec![(0, vec![b"b".to_vec()]), (5, vec![b"a".to_vec()])]);
        remove(0, b"b");
        clear(5);
        assert!(snapshot().is_empty());
    }
}
