//! The `jwks-keys` module data type: one key set per Redis key, held with what is derived
//! from it in memory (its rendered document and ETag, and whether the key's cache string is
//! known to hold that document). Every persistence path (RDB, AOF rewrite, DUMP/RESTORE,
//! COPY, replication) goes through `KeySet::to_stored`; the derived parts are rebuilt.

use std::ffi::CString;
use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};

use once_cell::sync::OnceCell;
use redis_module::{native_types::RedisType, raw, RedisString};

use crate::keyset::{KeySet, Rendered};
use crate::upkeep;

/// Bump only with a loader for the old version in `rdb_load`.
const ENCODING_VERSION: c_int = 1;

/// The registered type, for comparing with a key's type on every read (the crate keeps
/// it behind a RefCell, which costs a borrow each time).
static RAW_TYPE: std::sync::atomic::AtomicPtr<raw::RedisModuleType> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

pub fn raw_type() -> *mut raw::RedisModuleType {
    let cached = RAW_TYPE.load(Ordering::Relaxed);
    if !cached.is_null() {
        return cached;
    }
    let registered = *KEYSET_TYPE.raw_type.borrow();
    RAW_TYPE.store(registered, Ordering::Relaxed);
    registered
}

/// The command that AOF rewrite emits and that replicas receive; see `commands::setstate`.
pub const SETSTATE_COMMAND: &str = "JWKS.SETSTATE";

/// A key set as Redis holds it.
#[derive(Debug)]
pub struct Stored {
    set: KeySet,
    /// Rendered on first read: most rotations are never read before the next one.
    rendered: OnceCell<Rendered>,
    /// The key set's cache string is known to hold exactly `rendered` (set by the module
    /// when it fills or checks the cache, cleared by anything that touches the cache).
    cache_ok: AtomicBool,
    /// A fill of the cache is already queued.
    fill_queued: AtomicBool,
}

impl Stored {
    pub fn new(set: KeySet) -> Stored {
        Stored {
            set,
            rendered: OnceCell::new(),
            cache_ok: AtomicBool::new(false),
            fill_queued: AtomicBool::new(false),
        }
    }

    pub fn set(&self) -> &KeySet {
        &self.set
    }

    pub fn rendered(&self) -> &Rendered {
        self.rendered.get_or_init(|| self.set.rendered())
    }

    pub fn cache_ok(&self) -> bool {
        self.cache_ok.load(Ordering::Relaxed)
    }

    pub fn set_cache_ok(&self, ok: bool) {
        self.cache_ok.store(ok, Ordering::Relaxed);
        if ok {
            self.fill_queued.store(false, Ordering::Relaxed);
        }
    }

    /// True once per stretch without a cache: the caller queues the fill.
    pub fn claim_fill(&self) -> bool {
        !self.fill_queued.swap(true, Ordering::Relaxed)
    }

    pub fn release_fill(&self) {
        self.fill_queued.store(false, Ordering::Relaxed);
    }

    fn approximate_bytes(&self) -> usize {
        std::mem::size_of::<Stored>()
            + self.set.approximate_bytes()
            + self
                .rendered
                .get()
                .map_or(0, |r| r.doc.capacity() + r.etag.capacity())
    }
}

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
        copy: None,
        defrag: None,
        copy2: Some(copy2),
        free_effort2: None,
        mem_usage2: None,
        unlink2: Some(unlink2),
    },
);

/// The key name and db of a value being loaded (RDB, RESTORE, MIGRATE, full sync).
///
/// # Safety
/// `rdb` must be the IO context Redis passed to `rdb_load`.
unsafe fn loading_key(rdb: *mut raw::RedisModuleIO) -> Option<(i32, Vec<u8>)> {
    let (name_of, db_of) = (raw::RedisModule_GetKeyNameFromIO?, raw::RedisModule_GetDbIdFromIO?);
    let name = name_of(rdb);
    if name.is_null() {
        return None;
    }
    Some((
        db_of(rdb),
        RedisString::string_as_slice(name.cast_mut()).to_vec(),
    ))
}

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
        Some(set) => {
            // SAFETY: `rdb` is this callback's IO context.
            if let Some((db, name)) = unsafe { loading_key(rdb) } {
                upkeep::track(db, &name, &set);
            }
            Box::into_raw(Box::new(Stored::new(set))).cast()
        }
        None => std::ptr::null_mut(),
    }
}

/// # Safety
/// Redis passes a value this type created (a `Box<Stored>`).
unsafe fn stored<'a>(value: *const c_void) -> &'a Stored {
    &*value.cast::<Stored>()
}

unsafe extern "C" fn rdb_save(rdb: *mut raw::RedisModuleIO, value: *mut c_void) {
    // SAFETY: a value of this type.
    let set = unsafe { stored(value) }.set();
    raw::save_string(rdb, &set.to_stored());
}

unsafe extern "C" fn aof_rewrite(
    aof: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
    value: *mut c_void,
) {
    // SAFETY: a value of this type.
    let stored_form = unsafe { stored(value) }.set().to_stored();
    let (Ok(cmd), Ok(fmt)) = (CString::new(SETSTATE_COMMAND), CString::new("sb")) else {
        return;
    };
    if let Some(emit) = raw::RedisModule_EmitAOF {
        // SAFETY: "sb" takes the key string and a (pointer, length) buffer that outlives the call.
        unsafe {
            emit(
                aof,
                cmd.as_ptr(),
                fmt.as_ptr(),
                key,
                stored_form.as_ptr(),
                stored_form.len(),
            )
        };
    }
}

unsafe extern "C" fn mem_usage(value: *const c_void) -> usize {
    // SAFETY: a value of this type.
    unsafe { stored(value) }.approximate_bytes()
}

unsafe extern "C" fn digest(md: *mut raw::RedisModuleDigest, value: *mut c_void) {
    // SAFETY: a value of this type.
    let stored_form = unsafe { stored(value) }.set().to_stored();
    if let (Some(add), Some(end)) = (
        raw::RedisModule_DigestAddStringBuffer,
        raw::RedisModule_DigestEndSequence,
    ) {
        // SAFETY: the buffer outlives the call; Redis only reads it.
        unsafe {
            add(md, stored_form.as_ptr().cast_mut().cast(), stored_form.len());
            end(md);
        }
    }
}

/// COPY: a new value (derived state rebuilt) at the destination, which joins the registry.
unsafe extern "C" fn copy2(ctx: *mut raw::RedisModuleKeyOptCtx, value: *const c_void) -> *mut c_void {
    // SAFETY: a value of this type; `ctx` is the copy's option context.
    let set = unsafe { stored(value) }.set().clone();
    if let (Some(name_of), Some(db_of)) = (
        raw::RedisModule_GetToKeyNameFromOptCtx,
        raw::RedisModule_GetToDbIdFromOptCtx,
    ) {
        // SAFETY: valid for the duration of this callback.
        let name = unsafe { name_of(ctx) };
        if !name.is_null() {
            // SAFETY: as above.
            let db = unsafe { db_of(ctx) };
            let name = RedisString::string_as_slice(name.cast_mut());
            upkeep::track(db, name, &set);
        }
    }
    Box::into_raw(Box::new(Stored::new(set))).cast()
}

/// The value leaves its key (DEL, expiry, eviction, overwrite, RENAME/MOVE away, a flush of
/// a slot): its cache must go, and the registry forgets the name.
unsafe extern "C" fn unlink2(ctx: *mut raw::RedisModuleKeyOptCtx, _value: *const c_void) {
    if let (Some(name_of), Some(db_of)) = (
        raw::RedisModule_GetKeyNameFromOptCtx,
        raw::RedisModule_GetDbIdFromOptCtx,
    ) {
        // SAFETY: valid for the duration of this callback.
        let name = unsafe { name_of(ctx) };
        if !name.is_null() {
            // SAFETY: as above.
            let db = unsafe { db_of(ctx) };
            upkeep::on_unlink(db, RedisString::string_as_slice(name.cast_mut()));
        }
    }
}

unsafe extern "C" fn free(value: *mut c_void) {
    // SAFETY: Redis frees each value once (possibly on its lazy-free thread; `Stored` is Send).
    drop(unsafe { Box::from_raw(value.cast::<Stored>()) });
}
