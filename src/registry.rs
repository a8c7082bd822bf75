//! Which `…:metrics` hashes this node holds, so JWKS.STATS can sum the counters without a
//! keyspace scan on every scrape. Built by one scan the first time it is needed (after
//! start, a load or a flush), then kept current by the commands that write metrics.

use std::collections::BTreeSet;

use parking_lot::Mutex;
use redis_module::key::RedisKey;
use redis_module::raw::KeyType;
use redis_module::{Context, KeysCursor, RedisString};

use crate::datatype::KEYSET_TYPE;
use crate::keys::{derived_name, METRICS};

/// `None` until the first scan; reset whenever the keyspace is replaced wholesale.
static METRICS_KEYS: Mutex<Option<BTreeSet<Vec<u8>>>> = Mutex::new(None);

/// Records a metrics hash a command just wrote.
pub fn note(metrics_key: &[u8]) {
    if let Some(keys) = METRICS_KEYS.lock().as_mut() {
        if !keys.contains(metrics_key) {
            keys.insert(metrics_key.to_vec());
        }
    }
}

/// Forgets everything; the next JWKS.STATS scans again (after FLUSHALL, RDB or AOF load,
/// or a full sync from a primary).
pub fn reset() {
    *METRICS_KEYS.lock() = None;
}

pub fn forget(metrics_key: &[u8]) {
    if let Some(keys) = METRICS_KEYS.lock().as_mut() {
        keys.remove(metrics_key);
    }
}

fn scan(ctx: &Context) -> BTreeSet<Vec<u8>> {
    let found = std::cell::RefCell::new(BTreeSet::new());
    let cursor = KeysCursor::new();
    let callback = |_: &Context, name: &RedisString, key: Option<&RedisKey>| {
        let Some(key) = key else { return };
        let name = name.as_slice();
        let metrics = match key.key_type() {
            // A key set: its metrics hash, wherever it is.
            KeyType::Module if key.get_value::<crate::keyset::KeySet>(&KEYSET_TYPE).is_ok() => {
                derived_name(name, METRICS).ok()
            }
            // A metrics hash written by JWKS.INVALIDATE for a name with no key set.
            KeyType::Hash if name.ends_with(METRICS) => Some(name.to_vec()),
            _ => None,
        };
        if let Some(m) = metrics {
            found.borrow_mut().insert(m);
        }
    };
    while cursor.scan(ctx, &callback) {}
    found.into_inner()
}

/// The metrics hashes to sum, scanning once if needed.
pub fn metrics_keys(ctx: &Context) -> Vec<Vec<u8>> {
    let mut guard = METRICS_KEYS.lock();
    let keys = guard.get_or_insert_with(|| scan(ctx));
    keys.iter().cloned().collect()
}
