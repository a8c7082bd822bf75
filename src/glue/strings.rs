//! Redis strings the write path reuses instead of allocating on every command. Creating a
//! Redis string is an allocation (and Redis's memory accounting on it) and freeing it is
//! another; an audit entry needs about twenty, most of them the same as last time: field
//! names, actions and keywords (`fixed`), and the timestamp of this second, the user, the
//! reason (`shared`).
//!
//! Both tables are per thread: keys are written on Redis's main thread only, so a string's
//! reference count is never touched concurrently.

use std::cell::RefCell;
use std::ptr;

use redis_module::raw::{self, RedisModuleString};
use redis_module::RedisString;
use smallvec::SmallVec;

const FIXED_SLOTS: usize = 128;
const SHARED_SLOTS: usize = 64;
/// Longer values (an error text, a long kid list) are not worth keeping.
const SHARED_MAX_LEN: usize = 64;

type FixedSlot = Option<(usize, usize, usize)>;
type SharedSlot = Option<(SmallVec<[u8; SHARED_MAX_LEN]>, usize)>;

pub(crate) struct Tables {
    /// `(text address, length, Redis string)`, open addressing by address.
    fixed: [FixedSlot; FIXED_SLOTS],
    /// The last string made for each slot, direct-mapped by content.
    shared: [SharedSlot; SHARED_SLOTS],
}

thread_local! {
    static TABLES: RefCell<Tables> = RefCell::new(Tables {
        fixed: [None; FIXED_SLOTS],
        shared: std::array::from_fn(|_| None),
    });
}

/// Runs `f` with this thread's tables: one thread-local access for a whole command's
/// strings (in a shared library each access is a call).
pub(crate) fn with<T>(f: impl FnOnce(&mut Tables) -> T) -> T {
    TABLES.with(|t| f(&mut t.borrow_mut()))
}

pub(crate) fn fixed(text: &'static str) -> *mut RedisModuleString {
    with(|t| t.fixed(text))
}

fn make(bytes: &[u8]) -> *mut RedisModuleString {
    let s = RedisString::create_from_slice(ptr::null_mut(), bytes);
    let inner = s.inner;
    std::mem::forget(s);
    inner
}

impl Tables {
    /// The Redis string for a fixed text (a field name, an action, a keyword), created on
    /// first use and kept for the life of the server. Borrowed: never free it.
    pub(crate) fn fixed(&mut self, text: &'static str) -> *mut RedisModuleString {
        let (addr, len) = (text.as_ptr() as usize, text.len());
        let start = (addr >> 3) % FIXED_SLOTS;
        for i in 0..FIXED_SLOTS {
            let slot = &mut self.fixed[(start + i) % FIXED_SLOTS];
            match *slot {
                Some((a, l, s)) if (a, l) == (addr, len) => return s as *mut RedisModuleString,
                Some(_) => continue,
                None => {
                    let s = make(text.as_bytes());
                    *slot = Some((addr, len, s as usize));
                    return s;
                }
            }
        }
        // More distinct fixed texts than slots cannot happen (they are literals in this
        // crate); if it did, each extra one would be made per call and kept.
        make(text.as_bytes())
    }

    /// A Redis string with these bytes, the one made last time for the same content when
    /// it is still remembered. The caller owns a reference, released when it is dropped.
    pub(crate) fn shared(&mut self, bytes: &[u8]) -> RedisString {
        if bytes.len() > SHARED_MAX_LEN {
            return RedisString::create_from_slice(ptr::null_mut(), bytes);
        }
        let slot = &mut self.shared[slot_of(bytes)];
        let s = match slot {
            Some((b, s)) if b.as_slice() == bytes => *s as *mut RedisModuleString,
            _ => {
                let s = make(bytes);
                if let Some((_, old)) = slot.replace((SmallVec::from_slice(bytes), s as usize)) {
                    // The table's reference; anyone still using the old string holds theirs.
                    release(old as *mut RedisModuleString);
                }
                s
            }
        };
        // SAFETY: reading a function pointer filled at load.
        if let Some(retain) = unsafe { raw::RedisModule_RetainString } {
            // SAFETY: `s` is a live string this table holds a reference to.
            unsafe { retain(ptr::null_mut(), s) };
            return RedisString::from_redis_module_string(ptr::null_mut(), s);
        }
        // No RetainString (never on supported servers): a private copy.
        RedisString::create_from_slice(ptr::null_mut(), bytes)
    }
}

fn release(s: *mut RedisModuleString) {
    drop(RedisString::from_redis_module_string(ptr::null_mut(), s));
}

/// FNV-1a: a few instructions per byte for the short texts kept here.
fn slot_of(bytes: &[u8]) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h as usize % SHARED_SLOTS
}
