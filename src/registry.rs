//! Which `…:metrics` hashes this node holds, so JWKS.STATS can sum the counters without a
//! keyspace scan on every scrape. Built by one scan the first time it is needed (after
//! start, a load or a flush), then kept current by the commands that write metrics.

use std::collections::BTreeSet;

use std::ffi::c_void;

use parking_lot::Mutex;
use redis_module::raw::{self, KeyType};
use redis_module::{Context, RedisString};

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

/// One pass of RM_Scan over the keyspace. (The crate's KeysCursor retains every key name
/// it hands out and never releases it: a leak valgrind found, hence the raw API here.)
fn scan(ctx: &Context) -> BTreeSet<Vec<u8>> {
    unsafe extern "C" fn visit(
        _ctx: *mut raw::RedisModuleCtx,
        name: *mut raw::RedisModuleString,
        key: *mut raw::RedisModuleKey,
        found: *mut c_void,
    ) {
        if key.is_null() || name.is_null() {
            return;
        }
        let found = &mut *found.cast::<BTreeSet<Vec<u8>>>();
        let name = RedisString::string_as_slice(name);
        let (Some(key_type), Some(module_type)) =
            (raw::RedisModule_KeyType, raw::RedisModule_ModuleTypeGetType)
        else {
            return;
        };
        let metrics = match KeyType::from(key_type(key)) {
            // A key set: its metrics hash, wherever it is.
            KeyType::Module if module_type(key) == *KEYSET_TYPE.raw_type.borrow() => {
                derived_name(name, METRICS).ok().map(|n| n.to_vec())
            }
            // A metrics hash written by JWKS.INVALIDATE for a name with no key set.
            KeyType::Hash if name.ends_with(METRICS) => Some(name.to_vec()),
            _ => None,
        };
        if let Some(m) = metrics {
            found.insert(m);
        }
    }

    let mut found = BTreeSet::new();
    let api = unsafe {
        (
            raw::RedisModule_ScanCursorCreate,
            raw::RedisModule_Scan,
            raw::RedisModule_ScanCursorDestroy,
        )
    };
    let (Some(create), Some(scan), Some(destroy)) = api else {
        return found;
    };
    unsafe {
        let cursor = create();
        let data = (&mut found as *mut BTreeSet<Vec<u8>>).cast::<c_void>();
        while scan(ctx.ctx, cursor, Some(visit), data) != 0 {}
        destroy(cursor);
    }
    found
}

/// The metrics hashes to sum, scanning once if needed.
pub fn metrics_keys(ctx: &Context) -> Vec<Vec<u8>> {
    let mut guard = METRICS_KEYS.lock();
    let keys = guard.get_or_insert_with(|| scan(ctx));
    keys.iter().cloned().collect()
}
