//! The `jwks-keys` module data type: one key set per Redis key. Every persistence path
//! (RDB, AOF rewrite, DUMP/RESTORE, COPY, replication) goes through `KeySet::to_stored`.

use std::ffi::CString;
use std::os::raw::{c_int, c_void};

use redis_module::{native_types::RedisType, raw};

use crate::keyset::KeySet;

/// Bump only with a loader for the old version in `rdb_load`.
const ENCODING_VERSION: c_int = 1;

pub static KEYSET_TYPE: RedisType = RedisType::new(
    "jwks-keys",
    ENCODING_VERSION,
    raw::RedisModuleTypeMethods {
        version: raw::REDISMODULE_TYPE_METHOD_VERSION as u64,
        rdb_load: Some(rdb_load),
        rdb_save: Some(rdb_save),
        aof_rewrite: Some(aof_rewrite),
        mem_usage: Some(mem_usage),
        digest: Some(digest),
        free: Some(free),
        aux_load: None,
        aux_save: None,
        aux_save2: None,
        aux_save_triggers: 0,
        free_effort: None,
        unlink: None,
        copy: Some(copy),
        defrag: None,
        copy2: None,
        free_effort2: None,
        mem_usage2: None,
        unlink2: None,
    },
);

/// The command that AOF rewrite emits and that replicas receive; see `commands::setstate`.
pub const SETSTATE_COMMAND: &str = "JWKS.SETSTATE";

unsafe extern "C" fn rdb_load(rdb: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    if encver != ENCODING_VERSION {
        return std::ptr::null_mut();
    }
    let Ok(buffer) = raw::load_string_buffer(rdb) else {
        return std::ptr::null_mut();
    };
    let loaded = std::str::from_utf8(buffer.as_ref())
        .ok()
        .and_then(|text| KeySet::from_stored(text).ok());
    // NULL makes Redis refuse the payload (RESTORE error, or a failed load) rather than
    // accept a corrupt key set.
    match loaded {
        Some(set) => Box::into_raw(Box::new(set)).cast(),
        None => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn rdb_save(rdb: *mut raw::RedisModuleIO, value: *mut c_void) {
    let set = &*value.cast::<KeySet>();
    raw::save_string(rdb, &set.to_stored());
}

unsafe extern "C" fn aof_rewrite(
    aof: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
    value: *mut c_void,
) {
    let set = &*value.cast::<KeySet>();
    let stored = set.to_stored();
    let (Ok(cmd), Ok(fmt)) = (CString::new(SETSTATE_COMMAND), CString::new("sb")) else {
        return;
    };
    if let Some(emit) = raw::RedisModule_EmitAOF {
        emit(
            aof,
            cmd.as_ptr(),
            fmt.as_ptr(),
            key,
            stored.as_ptr(),
            stored.len(),
        );
    }
}

unsafe extern "C" fn mem_usage(value: *const c_void) -> usize {
    let set = &*value.cast::<KeySet>();
    set.approximate_bytes()
}

unsafe extern "C" fn digest(md: *mut raw::RedisModuleDigest, value: *mut c_void) {
    let set = &*value.cast::<KeySet>();
    let stored = set.to_stored();
    if let (Some(add), Some(end)) = (
        raw::RedisModule_DigestAddStringBuffer,
        raw::RedisModule_DigestEndSequence,
    ) {
        add(md, stored.as_ptr().cast_mut().cast(), stored.len());
        end(md);
    }
}

unsafe extern "C" fn copy(
    _from: *mut raw::RedisModuleString,
    _to: *mut raw::RedisModuleString,
    value: *const c_void,
) -> *mut c_void {
    let set = &*value.cast::<KeySet>();
    Box::into_raw(Box::new(set.clone())).cast()
}

unsafe extern "C" fn free(value: *mut c_void) {
    drop(Box::from_raw(value.cast::<KeySet>()));
}
