//! A command's arguments, borrowed from Redis, never copied.

use std::marker::PhantomData;
use std::os::raw::c_int;

use redis_module::raw::RedisModuleString;
use redis_module::RedisString;
use smallvec::SmallVec;

/// A command's arguments as Redis passed them: `args.get(0)` is the command name.
#[derive(Clone, Copy)]
pub(crate) struct Args<'a> {
    raw: &'a [*mut RedisModuleString],
}

impl<'a> Args<'a> {
    /// # Safety
    /// `argv` must point to `argc` live strings that outlive `'a` (a command's arguments).
    pub(crate) unsafe fn new(argv: *mut *mut RedisModuleString, argc: c_int) -> Args<'a> {
        let raw = match usize::try_from(argc) {
            // SAFETY: the caller's promise.
            Ok(n) if !argv.is_null() => unsafe { std::slice::from_raw_parts(argv, n) },
            _ => &[],
        };
        Args { raw }
    }

    pub(crate) fn len(&self) -> usize {
        self.raw.len()
    }

    /// The bytes of argument `i` (empty if there is none).
    pub(crate) fn bytes(&self, i: usize) -> &'a [u8] {
        self.raw
            .get(i)
            .map_or(&[][..], |&s| RedisString::string_as_slice(s))
    }

    /// Argument `i` as a Redis string, to open a key without copying its name.
    pub(crate) fn string(&self, i: usize) -> Option<Arg<'a>> {
        self.raw.get(i).map(|&raw| Arg {
            raw,
            args: PhantomData,
        })
    }

    /// Arguments `from..` as byte slices.
    pub(crate) fn rest(&self, from: usize) -> SmallVec<[&'a [u8]; 8]> {
        (from..self.raw.len()).map(|i| self.bytes(i)).collect()
    }
}

/// One argument as the Redis string the command received, borrowed for the command's
/// duration: what opens a key named by the client without copying the name.
#[derive(Clone, Copy)]
pub(crate) struct Arg<'a> {
    raw: *mut RedisModuleString,
    args: PhantomData<&'a [*mut RedisModuleString]>,
}

impl Arg<'_> {
    /// The string, for the Redis API (alive while the command runs).
    pub(crate) fn as_ptr(&self) -> *mut RedisModuleString {
        self.raw
    }
}
