//! The `jwks-keys` module data type: one key set per Redis key, held with what is derived
//! from it in memory (its rendered document and ETag, and whether the key's cache string is
//! known to hold that document). Every persistence path (RDB, AOF rewrite, DUMP/RESTORE,
//! COPY, replication) goes through `KeySet::to_stored`; the derived parts are rebuilt.

use std::ffi::CString;
use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use once_cell::sync::OnceCell;
use redis_module::{native_types::RedisType, raw, RedisString};

use crate::glue::ffi::api;
use crate::observe::log;
use crate::tracking;
use redis_jwks_core::keyset::{KeySet, Rendered};

/// Bump only with a loader for the old version in `rdb_load`.
const ENCODING_VERSION: c_int = 1;

/// The registered type, for comparing with a key's type on every read (the crate keeps
/// it behind a RefCell, which costs a borrow each time).
static RAW_TYPE: std::sync::atomic::AtomicPtr<raw::RedisModuleType> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

pub(crate) fn raw_type() -> *mut raw::RedisModuleType {
    let cached = RAW_TYPE.load(Ordering::Relaxed);
    if !cached.is_null() {
        return cached;
    }
    let registered = *KEYSET_TYPE.raw_type.borrow();
    RAW_TYPE.store(registered, Ordering::Relaxed);
    registered
}

/// How often reads of a key set look at its cache string (see `Stored::check_due`).
const CHECK_EVERY_MS: i64 = 1000;

/// The command that AOF rewrite emits and that replicas receive; see `commands::setstate`.
pub(crate) const SETSTATE_COMMAND: &str = "JWKS.SETSTATE";

/// A key set as Redis holds it.
#[derive(Debug)]
pub(crate) struct Stored {
    set: KeySet,
    /// Rendered on first read: most rotations are never read before the next one.
    rendered: OnceCell<Rendered>,
    /// Until when (unix ms) the key set's cache string is known to hold exactly `rendered`:
    /// the expiry the module gave it when it filled or checked it; 0 when not known. Set by
    /// the module, cleared by what it sees touch the cache. Time-aware, so an expired cache
    /// is refilled on the next read with no keyspace-event subscription.
    cache_until: AtomicI64,
    /// A fill of the cache is already queued.
    fill_queued: AtomicBool,
    /// When a read last looked at the cache string itself (see `check_due`).
    checked_ms: AtomicI64,
    /// The value left a key (unlink) since it was last registered: a RENAME or MOVE took
    /// it to a name nothing registered yet (see `tracking::placed`).
    moved: AtomicBool,
}

impl Stored {
    pub(crate) fn new(set: KeySet) -> Stored {
        Stored {
            set,
            rendered: OnceCell::new(),
            cache_until: AtomicI64::new(0),
            fill_queued: AtomicBool::new(false),
            checked_ms: AtomicI64::new(0),
            moved: AtomicBool::new(false),
        }
    }

    /// True once after the value left a key: the caller registers it where it is now.
    pub(crate) fn take_moved(&self) -> bool {
        self.moved.load(Ordering::Relaxed) && self.moved.swap(false, Ordering::Relaxed)
    }

    pub(crate) fn set(&self) -> &KeySet {
        &self.set
    }

    pub(crate) fn rendered(&self) -> &Rendered {
        self.rendered.get_or_init(|| self.set.rendered())
    }

    /// The cache string holds the document at `now_ms`, as far as the module knows.
    pub(crate) fn cache_ok(&self, now_ms: i64) -> bool {
        now_ms < self.cache_until.load(Ordering::Relaxed)
    }

    /// The cache holds the document until `until_ms`.
    pub(crate) fn set_cache_until(&self, until_ms: i64) {
        self.cache_until.store(until_ms, Ordering::Relaxed);
        self.fill_queued.store(false, Ordering::Relaxed);
    }

    /// The cache is not known to hold the document.
    pub(crate) fn forget_cache(&self) {
        self.cache_until.store(0, Ordering::Relaxed);
    }

    /// True at most once a second: time for a read to look at the cache string itself, which
    /// a command other than the module's may have deleted or overwritten (no keyspace-event
    /// subscription tells the module, unless `jwks.keyspace-hook` is on).
    pub(crate) fn check_due(&self, now_ms: i64) -> bool {
        let last = self.checked_ms.load(Ordering::Relaxed);
        now_ms.saturating_sub(last) >= CHECK_EVERY_MS
            && self
                .checked_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// True once per stretch without a cache: the caller queues the fill.
    pub(crate) fn claim_fill(&self) -> bool {
        !self.fill_queued.swap(true, Ordering::Relaxed)
    }

    pub(crate) fn release_fill(&self) {
        self.fill_queued.store(false, Ordering::Relaxed);
    }

    fn approximate_bytes(&self) -> usize {
        size_of::<Stored>()
            + self.set.approximate_bytes()
            + self
                .rendered
                .get()
                .map_or(0, |r| r.doc.capacity() + r.etag.capacity())
    }
}

pub(crate) static KEYSET_TYPE: RedisType = RedisType::new(
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
    let (name_of, db_of) = (
        api!(RedisModule_GetKeyNameFromIO).ok()?,
        api!(RedisModule_GetDbIdFromIO).ok()?,
    );
    // SAFETY: `rdb` is the IO context of the load in progress (this function's contract).
    let name = unsafe { name_of(rdb) };
    if name.is_null() {
        return None;
    }
    // SAFETY: as above.
    let db = unsafe { db_of(rdb) };
    Some((db, RedisString::string_as_slice(name.cast_mut()).to_vec()))
}

unsafe extern "C" fn rdb_load(rdb: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    // SAFETY: `rdb` is this callback's IO context.
    let key = unsafe { loading_key(rdb) };
    let name = key.as_ref().map_or(&b"?"[..], |(_, n)| n.as_slice());
    if encver != ENCODING_VERSION {
        log::load_refused(name, &format!("unknown encoding version {encver}"));
        return std::ptr::null_mut();
    }
    // With HANDLE_IO_ERRORS set at load (see `enable_io_errors`), a short read, a wrong
    // opcode or an impossible length sets the IO error instead of aborting the server;
    // the crate's loader checks it.
    let Ok(buffer) = raw::load_string_buffer(rdb) else {
        log::load_refused(name, "truncated or malformed payload");
        return std::ptr::null_mut();
    };
    let loaded = std::str::from_utf8(buffer.as_ref())
        .map_err(|_| redis_jwks_core::error::Error::State("not UTF-8".into()))
        .and_then(KeySet::from_stored);
    // NULL makes Redis refuse the payload (RESTORE error, or a failed load) rather than
    // accept a corrupt key set.
    match loaded {
        Ok(set) => {
            if let Some((db, name)) = key {
                // Registered after the command, where the value really is: a RESTORE with
                // a past ABSTTL frees the value without ever adding it.
                tracking::loaded(db, &name);
            }
            Box::into_raw(Box::new(Stored::new(set))).cast()
        }
        Err(e) => {
            log::load_refused(name, &e.to_string());
            std::ptr::null_mut()
        }
    }
}

/// Asks Redis to report IO errors in `rdb_load` instead of panicking on a short read, so a
/// crafted RESTORE payload or a corrupt RDB file is refused with an error. Called at load.
pub(crate) fn enable_io_errors(ctx: &redis_module::Context) {
    // SAFETY: the function table is filled before the module's init runs.
    if let Some(set_options) = unsafe { raw::RedisModule_SetModuleOptions } {
        // SAFETY: a live context at load.
        unsafe { set_options(ctx.ctx, raw::REDISMODULE_OPTIONS_HANDLE_IO_ERRORS as c_int) };
    }
}

/// # Safety
/// Redis passes a value this type created (a `Box<Stored>`).
unsafe fn stored<'a>(value: *const c_void) -> &'a Stored {
    // SAFETY: this function's contract: a live `Box<Stored>` made by this type.
    unsafe { &*value.cast::<Stored>() }
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
    if let Ok(emit) = api!(RedisModule_EmitAOF) {
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
    if let (Ok(add), Ok(end)) = (
        api!(RedisModule_DigestAddStringBuffer),
        api!(RedisModule_DigestEndSequence),
    ) {
        // SAFETY: the buffer outlives the call; Redis only reads it.
        unsafe {
            add(
                md,
                stored_form.as_ptr().cast_mut().cast(),
                stored_form.len(),
            );
            end(md);
        }
    }
}

/// COPY: a new value (derived state rebuilt) at the destination, which joins the registry
/// right after the command.
unsafe extern "C" fn copy2(
    ctx: *mut raw::RedisModuleKeyOptCtx,
    value: *const c_void,
) -> *mut c_void {
    // SAFETY: a value of this type; `ctx` is the copy's option context.
    let set = unsafe { stored(value) }.set().clone();
    if let (Ok(name_of), Ok(db_of)) = (
        api!(RedisModule_GetToKeyNameFromOptCtx),
        api!(RedisModule_GetToDbIdFromOptCtx),
    ) {
        // SAFETY: valid for the duration of this callback.
        let name = unsafe { name_of(ctx) };
        if !name.is_null() {
            // SAFETY: as above.
            let db = unsafe { db_of(ctx) };
            tracking::arrived(db, RedisString::string_as_slice(name.cast_mut()));
        }
    }
    Box::into_raw(Box::new(Stored::new(set))).cast()
}

/// The value leaves its key (DEL, expiry, eviction, overwrite, RENAME/MOVE away, a flush of
/// a slot): its cache must go, and the registry forgets the name.
unsafe extern "C" fn unlink2(ctx: *mut raw::RedisModuleKeyOptCtx, value: *const c_void) {
    if !value.is_null() {
        // SAFETY: a value of this type, alive during the callback.
        let stored = unsafe { stored(value) };
        // If it lives on (RENAME, MOVE), it is at a name nothing registered, and its cache
        // flag spoke of the old name.
        stored.forget_cache();
        stored.moved.store(true, Ordering::Relaxed);
    }
    if let (Ok(name_of), Ok(db_of)) = (
        api!(RedisModule_GetKeyNameFromOptCtx),
        api!(RedisModule_GetDbIdFromOptCtx),
    ) {
        // SAFETY: valid for the duration of this callback.
        let name = unsafe { name_of(ctx) };
        if !name.is_null() {
            // SAFETY: as above.
            let db = unsafe { db_of(ctx) };
            tracking::on_unlink(db, RedisString::string_as_slice(name.cast_mut()));
        }
    }
}

unsafe extern "C" fn free(value: *mut c_void) {
    // SAFETY: Redis frees each value once (possibly on its lazy-free thread; `Stored` is Send).
    drop(unsafe { Box::from_raw(value.cast::<Stored>()) });
}
