//! The stored form (RDB, AOF, replication) from arbitrary bytes: loading must never panic,
//! and anything that loads must store back to something that loads the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use redis_jwks_core::keyset::KeySet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(set) = KeySet::from_stored(text) {
        assert_eq!(KeySet::from_stored(&set.to_stored()).expect("re-load"), set);
    }
});
