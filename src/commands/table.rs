//! Every command in one table: its handler, flags, ACL categories, key spec, and the docs
//! Redis serves through `COMMAND DOCS` (summary, since, complexity, arguments), which
//! redis-cli turns into argument hints. `register` hands it all to Redis.

use std::ffi::{c_char, CString};
use std::os::raw::c_int;
use std::ptr;

use redis_module::raw::{self, RedisModuleCtx, RedisModuleString};
use redis_module::Context;

use super::{ack, debug, get, info, invalidate, key, policy, rotate, setstate, stats, verifiers};
use crate::glue::call::{dispatch, Handler};
use crate::glue::redis_key::api;
use redis_jwks_core::error::{Error, Result};

type Entry = unsafe extern "C" fn(*mut RedisModuleCtx, *mut *mut RedisModuleString, c_int) -> c_int;

/// The C entry point of a handler.
macro_rules! entry {
    ($handler:path) => {{
        unsafe extern "C" fn entry(
            ctx: *mut RedisModuleCtx,
            argv: *mut *mut RedisModuleString,
            argc: c_int,
        ) -> c_int {
            // SAFETY: Redis calls this with a command's context and arguments.
            unsafe { dispatch(ctx, argv, argc, $handler as Handler) }
        }
        entry as Entry
    }};
}

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

const fn arg(name: &'static str, kind: ArgType, summary: &'static str) -> Arg {
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

const fn option(
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

const KEY: Arg = arg("key", ArgType::Key, "the key set's name");
const REASON: Arg = option(
    "reason",
    "REASON",
    ArgType::String,
    "recorded in the audit trail and the log",
);
const KEY_ONLY: &[Arg] = &[KEY];
const KEY_ARGS: &[Arg] = &[KEY, arg("kid", ArgType::String, "the key's kid")];
const GET_ARGS: &[Arg] = &[
    KEY,
    Arg {
        optional: true,
        token: Some("META"),
        ..arg(
            "meta",
            ArgType::Token,
            "reply with a map: document, etag, generation, ttl_ms",
        )
    },
];
const INVALIDATE_ARGS: &[Arg] = &[KEY, REASON];
const SETSTATE_ARGS: &[Arg] = &[
    KEY,
    arg("state", ArgType::String, "the key set's stored form"),
];
const DEBUG_ARGS: &[Arg] = &[Arg {
    token: Some("FAIL-INVALIDATIONS"),
    ..arg("count", ArgType::Integer, "how many invalidations fail")
}];

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

const ROTATE_OPS: &[Arg] = &[
    Arg {
        token: Some("ADD"),
        ..arg(
            "jwk",
            ArgType::String,
            "publish a public JWK (JSON) as `next`",
        )
    },
    Arg {
        token: Some("PROMOTE"),
        ..arg(
            "promote-kid",
            ArgType::String,
            "make this key `current`; the old one becomes `previous`",
        )
    },
    Arg {
        token: Some("RETIRE"),
        ..arg("retire-kid", ArgType::String, "unpublish this key")
    },
    Arg {
        token: Some("REPLACE"),
        ..arg(
            "jwks",
            ArgType::String,
            "make the published set exactly this JWKS document",
        )
    },
];

const ROTATE_ARGS: &[Arg] = &[
    KEY,
    option(
        "generation",
        "IFGEN",
        ArgType::Integer,
        "apply only if the key set is at this generation",
    ),
    REASON,
    Arg {
        optional: true,
        token: Some("FORCE"),
        ..arg(
            "force",
            ArgType::Token,
            "override the lifecycle policy's guards (emergency revocation)",
        )
    },
    Arg {
        optional: true,
        token: Some("DRYRUN"),
        ..arg(
            "dryrun",
            ArgType::Token,
            "reply as the real command would, with the resulting document; write nothing",
        )
    },
    Arg {
        multiple: true,
        sub: ROTATE_OPS,
        ..arg(
            "operation",
            ArgType::OneOf,
            "an operation, applied in order",
        )
    },
];

const POLICY_ARGS: &[Arg] = &[
    KEY,
    option(
        "promote-after",
        "PROMOTE-AFTER",
        ArgType::Integer,
        "ms after it was added that a next key becomes current (0: off)",
    ),
    option(
        "retire-after",
        "RETIRE-AFTER",
        ArgType::Integer,
        "ms after it was demoted that a previous key is retired (0: off)",
    ),
    option(
        "confirm",
        "CONFIRM",
        ArgType::Integer,
        "promote a next key once this % of live verifiers hold it (1-100; 0: off)",
    ),
    option(
        "min-wait",
        "MIN-WAIT",
        ArgType::Integer,
        "with CONFIRM: ms after it was added before a confirmed key is promoted",
    ),
];

const ACK_ARGS: &[Arg] = &[
    KEY,
    Arg {
        token: Some("GENERATION"),
        ..arg(
            "generation",
            ArgType::Integer,
            "the generation of the document the verifier holds",
        )
    },
    Arg {
        token: Some("ID"),
        ..arg("id", ArgType::String, "the verifier (e.g. host:pid:object)")
    },
    option(
        "ttl",
        "TTL",
        ArgType::Integer,
        "ms the verifier counts as live without another ack (default 30000)",
    ),
];

pub(crate) fn commands() -> [Command; 11] {
    [
        Command {
            name: "jwks.rotate",
            entry: entry!(rotate::run),
            flags: "write deny-oom",
            acl: "write slow jwks",
            arity: -3,
            key: Some(KeyUse::Write),
            summary: "Adds, promotes and retires keys of a key set atomically and deletes its cached JWKS",
            complexity: "O(N+M) with N the keys in the set and M the operations",
            since: "0.1.0",
            args: ROTATE_ARGS,
        },
        Command {
            name: "jwks.invalidate",
            entry: entry!(invalidate::run),
            // Not deny-oom: dropping a cached document must work when memory is full.
            flags: "write",
            acl: "write fast jwks",
            arity: -2,
            key: Some(KeyUse::ReadDerivedWrite),
            summary: "Deletes the cached JWKS of a key set, audited and counted",
            complexity: "O(1)",
            since: "0.1.0",
            args: INVALIDATE_ARGS,
        },
        Command {
            name: "jwks.get",
            entry: entry!(get::run),
            flags: "readonly fast",
            acl: "read fast jwks",
            arity: -2,
            key: Some(KeyUse::Read),
            summary: "Returns the JWKS document of a key set (with META: and its ETag, generation and TTL)",
            complexity: "O(1), O(N) for N keys the first time a version of the set is read",
            since: "0.1.0",
            args: GET_ARGS,
        },
        Command {
            name: "jwks.policy",
            entry: entry!(policy::run),
            flags: "write deny-oom",
            acl: "write slow jwks",
            arity: -2,
            key: Some(KeyUse::Write),
            summary: "Sets a key set's lifecycle policy: scheduled promotion and retirement, and guards",
            complexity: "O(N) with N the keys in the set",
            since: "0.2.0",
            args: POLICY_ARGS,
        },
        Command {
            name: "jwks.key",
            entry: entry!(key::run),
            flags: "readonly fast",
            acl: "read fast jwks",
            arity: 3,
            key: Some(KeyUse::Read),
            summary: "Returns the published JWK with this kid, as JSON",
            complexity: "O(N) with N the keys in the set",
            since: "0.2.0",
            args: KEY_ARGS,
        },
        Command {
            name: "jwks.ack",
            entry: entry!(ack::run),
            // Not readonly: cluster clients must send it to the primary, which keeps acks.
            flags: "fast",
            // Not @read: under CONFIRM an ack can bring a promotion.
            acl: "fast jwks",
            arity: -6,
            key: Some(KeyUse::Read),
            summary: "Reports that a verifier holds a generation of a key set's JWKS (for CONFIRM and monitoring)",
            complexity: "O(log V) with V the verifiers of the key set",
            since: "0.4.0",
            args: ACK_ARGS,
        },
        Command {
            name: "jwks.verifiers",
            entry: entry!(verifiers::run),
            flags: "readonly",
            acl: "read slow jwks",
            arity: 2,
            key: Some(KeyUse::Read),
            summary: "Lists the live verifiers of a key set: the generation each holds and whether it publishes the current and next keys",
            complexity: "O(V) with V the verifiers of the key set",
            since: "0.4.0",
            args: KEY_ONLY,
        },
        Command {
            name: "jwks.info",
            entry: entry!(info::run),
            flags: "readonly",
            acl: "read slow jwks",
            arity: 2,
            key: Some(KeyUse::Read),
            summary: "Describes a key set: keys and states, ETag, cache TTL, counters, derived keys",
            complexity: "O(N) with N the keys in the set",
            since: "0.1.0",
            args: KEY_ONLY,
        },
        Command {
            name: "jwks.stats",
            entry: entry!(stats::run),
            flags: "readonly",
            acl: "read slow jwks",
            arity: 1,
            key: None,
            summary: "This node's counters and key sets, as name/value pairs for redis_exporter",
            complexity: "O(N) with N the key sets on this node",
            since: "0.1.0",
            args: &[],
        },
        Command {
            name: "jwks.setstate",
            entry: entry!(setstate::run),
            flags: "write",
            acl: "write slow dangerous jwks",
            arity: 3,
            key: Some(KeyUse::Overwrite),
            summary: "Internal: how a key set reaches replicas and the AOF (refused from clients)",
            complexity: "O(N) with N the keys in the set",
            since: "0.1.0",
            args: SETSTATE_ARGS,
        },
        Command {
            name: "jwks.debug",
            entry: entry!(debug::run),
            flags: "admin",
            acl: "admin dangerous jwks",
            arity: 3,
            key: None,
            summary: "Makes the next invalidations fail, for drills (needs fault-injection yes at load)",
            complexity: "O(1)",
            since: "0.1.0",
            args: DEBUG_ARGS,
        },
    ]
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
pub(crate) fn register(ctx: &Context) -> Result<()> {
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
    for spec in commands() {
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
        set_info(command, &spec)?;
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
