//! Registering commands with Redis: the table's types (`Command`, `Arg`, `KeyUse`), the C
//! entry point each handler gets (`entry!`), and `register`, which hands every command,
//! its key spec, ACL categories and `COMMAND DOCS` to Redis. The table itself is
//! `commands::table`.

use std::ffi::{c_char, CString};
use std::os::raw::c_int;
use std::ptr;

use redis_module::raw::{self, RedisModuleCtx, RedisModuleString};
use redis_module::Context;

use super::ffi::api;
use redis_jwks_core::error::{Error, Result};

pub(crate) type Entry =
    unsafe extern "C" fn(*mut RedisModuleCtx, *mut *mut RedisModuleString, c_int) -> c_int;

/// The C entry point of a handler (`fn(&Context, &Args) -> Result<RedisValue>`).
macro_rules! entry {
    ($handler:path) => {{
        unsafe extern "C" fn entry(
            ctx: *mut ::redis_module::raw::RedisModuleCtx,
            argv: *mut *mut ::redis_module::raw::RedisModuleString,
            argc: ::std::os::raw::c_int,
        ) -> ::std::os::raw::c_int {
            // SAFETY: Redis calls this with a command's context and arguments.
            unsafe {
                $crate::glue::dispatch::dispatch(
                    ctx,
                    argv,
                    argc,
                    $handler as $crate::glue::dispatch::Handler,
                )
            }
        }
        entry as $crate::glue::register::Entry
    }};
}
pub(crate) use entry;

/// How a command uses its one declared key (argument 1), in `REDISMODULE_CMD_KEY_*` flags.
#[derive(Clone, Copy)]
pub(crate) enum KeyUse {
    /// Reads the key set.
    Read,
    /// Reads it and writes other keys of the key set (the derived keys).
    ReadDerivedWrite,
    /// Reads, creates or replaces the key set.
    Write,
    /// Replaces the key set without reading it (replication).
    Overwrite,
}

impl KeyUse {
    fn flags(self) -> u64 {
        u64::from(match self {
            KeyUse::Read | KeyUse::ReadDerivedWrite => {
                raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS
            }
            KeyUse::Write => {
                raw::REDISMODULE_CMD_KEY_RW
                    | raw::REDISMODULE_CMD_KEY_ACCESS
                    | raw::REDISMODULE_CMD_KEY_UPDATE
            }
            KeyUse::Overwrite => raw::REDISMODULE_CMD_KEY_OW | raw::REDISMODULE_CMD_KEY_UPDATE,
        })
    }

    fn notes(self) -> Option<&'static str> {
        match self {
            KeyUse::ReadDerivedWrite | KeyUse::Write => Some(
                "also writes the key set's derived keys (cache, audit, metrics) in the same slot",
            ),
            _ => None,
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum ArgType {
    Key,
    String,
    Integer,
    /// A keyword on its own.
    Token,
    OneOf,
}

pub(crate) struct Arg {
    pub name: &'static str,
    pub kind: ArgType,
    pub token: Option<&'static str>,
    pub summary: &'static str,
    pub optional: bool,
    pub multiple: bool,
    pub sub: &'static [Arg],
}

pub(crate) const fn arg(name: &'static str, kind: ArgType, summary: &'static str) -> Arg {
    Arg {
        name,
        kind,
        token: None,
        summary,
        optional: false,
        multiple: false,
        sub: &[],
    }
}

pub(crate) const fn option(
    name: &'static str,
    token: &'static str,
    kind: ArgType,
    summary: &'static str,
) -> Arg {
    Arg {
        name,
        kind,
        token: Some(token),
        summary,
        optional: true,
        multiple: false,
        sub: &[],
    }
}

pub(crate) struct Command {
    pub name: &'static str,
    pub entry: Entry,
    pub flags: &'static str,
    /// ACL categories (Redis 7.2+ and Valkey; `jwks` where modules may add categories).
    pub acl: &'static str,
    /// As in `COMMAND INFO`: N exactly, -N at least N (the name counts).
    pub arity: i32,
    pub key: Option<KeyUse>,
    pub summary: &'static str,
    pub complexity: &'static str,
    pub since: &'static str,
    pub args: &'static [Arg],
}

/// C strings kept alive until Redis has copied them (it copies everything it is given).
#[derive(Default)]
struct Strings(Vec<CString>);

impl Strings {
    fn c(&mut self, s: &str) -> *const c_char {
        match CString::new(s) {
            Ok(c) => {
                let p = c.as_ptr();
                self.0.push(c);
                p
            }
            Err(_) => ptr::null(),
        }
    }

    fn opt(&mut self, s: Option<&str>) -> *const c_char {
        s.map_or(ptr::null(), |s| self.c(s))
    }
}

/// The argument array Redis reads (terminated by an entry with no name). Each array is
/// kept in `arrays` so the pointers stay valid while Redis copies them.
fn c_args(
    args: &[Arg],
    strings: &mut Strings,
    arrays: &mut Vec<Vec<raw::RedisModuleCommandArg>>,
) -> *mut raw::RedisModuleCommandArg {
    let mut out: Vec<raw::RedisModuleCommandArg> = Vec::with_capacity(args.len() + 1);
    for a in args {
        let kind = match a.kind {
            ArgType::Key => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY,
            ArgType::String => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
            ArgType::Integer => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
            ArgType::Token => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN,
            ArgType::OneOf => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_ONEOF,
        };
        let mut flags = 0;
        if a.optional {
            flags |= raw::REDISMODULE_CMD_ARG_OPTIONAL;
        }
        if a.multiple {
            flags |= raw::REDISMODULE_CMD_ARG_MULTIPLE;
        }
        let subargs = if a.sub.is_empty() {
            ptr::null_mut()
        } else {
            c_args(a.sub, strings, arrays)
        };
        out.push(raw::RedisModuleCommandArg {
            name: strings.c(a.name),
            type_: kind,
            key_spec_index: if matches!(a.kind, ArgType::Key) {
                0
            } else {
                -1
            },
            token: strings.opt(a.token),
            summary: strings.c(a.summary),
            since: ptr::null(),
            flags: flags as c_int,
            deprecated_since: ptr::null(),
            subargs,
            display_text: ptr::null(),
        });
    }
    // SAFETY: an all-zero RedisModuleCommandArg (null pointers, zero ints) ends the array.
    out.push(unsafe { std::mem::zeroed() });
    let p = out.as_mut_ptr();
    arrays.push(out);
    p
}

fn set_info(command: *mut raw::RedisModuleCommand, spec: &Command) -> Result<()> {
    let set = api!(RedisModule_SetCommandInfo)?;
    let mut strings = Strings::default();
    let mut arrays = Vec::new();
    let args = c_args(spec.args, &mut strings, &mut arrays);
    // All-zero key specs (null notes, zero flags, UNKNOWN search types) are valid; the
    // second one ends the array.
    // SAFETY: plain C data for which all-zero is a valid value.
    let mut key_specs: [raw::RedisModuleCommandKeySpec; 2] = unsafe { std::mem::zeroed() };
    let has_key = if let Some(key) = spec.key {
        key_specs[0].notes = strings.opt(key.notes());
        key_specs[0].flags = key.flags();
        key_specs[0].begin_search_type =
            raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX;
        key_specs[0].bs.index.pos = 1;
        key_specs[0].find_keys_type =
            raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE;
        key_specs[0].fk.range.lastkey = 0;
        key_specs[0].fk.range.keystep = 1;
        key_specs[0].fk.range.limit = 0;
        true
    } else {
        false
    };
    let version = raw::RedisModuleCommandInfoVersion {
        version: 1,
        sizeof_historyentry: size_of::<raw::RedisModuleCommandHistoryEntry>(),
        sizeof_keyspec: size_of::<raw::RedisModuleCommandKeySpec>(),
        sizeof_arg: size_of::<raw::RedisModuleCommandArg>(),
    };
    let info = raw::RedisModuleCommandInfo {
        version: &version,
        summary: strings.c(spec.summary),
        complexity: strings.c(spec.complexity),
        since: strings.c(spec.since),
        history: ptr::null_mut(),
        tips: ptr::null(),
        arity: spec.arity,
        key_specs: if has_key {
            key_specs.as_mut_ptr()
        } else {
            ptr::null_mut()
        },
        args,
    };
    // Every pointer in `info` points into `strings`, `arrays`, `key_specs` or `version`,
    // all alive until after this call; Redis copies what it keeps.
    // SAFETY: as just said.
    let status = unsafe { set(command, &info) };
    if status != raw::REDISMODULE_OK as c_int {
        return Err(Error::Api("RedisModule_SetCommandInfo"));
    }
    Ok(())
}

/// Registers every command. ACL categories only where the server has module categories.
pub(crate) fn register(ctx: &Context, commands: &[Command]) -> Result<()> {
    let (create, get) = (
        api!(RedisModule_CreateCommand)?,
        api!(RedisModule_GetCommand)?,
    );
    // SAFETY: reading function pointers filled at load.
    let (categories, add_category) = unsafe {
        (
            raw::RedisModule_SetCommandACLCategories,
            raw::RedisModule_AddACLCategory,
        )
    };
    let own_category = add_category.is_some();
    let mut strings = Strings::default();
    for spec in commands {
        let name = strings.c(spec.name);
        let flags = strings.c(spec.flags);
        let (first, last) = if spec.key.is_some() { (1, 1) } else { (0, 0) };
        // SAFETY: a live context at load; static entry point; C strings kept in `strings`.
        let status = unsafe { create(ctx.ctx, name, Some(spec.entry), flags, first, last, first) };
        if status != raw::REDISMODULE_OK as c_int {
            return Err(Error::Api("RedisModule_CreateCommand"));
        }
        // SAFETY: as above; the command was just created.
        let command = unsafe { get(ctx.ctx, name) };
        if command.is_null() {
            return Err(Error::Api("RedisModule_GetCommand"));
        }
        set_info(command, spec)?;
        if let Some(set_categories) = categories {
            // `@jwks` exists only where modules may add categories (Redis 7.4+, Valkey).
            let acl = match own_category {
                true => spec.acl.to_owned(),
                false => spec.acl.replace(" jwks", ""),
            };
            let acl = strings.c(&acl);
            // SAFETY: a command of this module and a C string.
            if unsafe { set_categories(command, acl) } != raw::REDISMODULE_OK as c_int {
                return Err(Error::Api("RedisModule_SetCommandACLCategories"));
            }
        }
    }
    Ok(())
}
