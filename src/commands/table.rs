//! Every command in one table: its handler, flags, ACL categories, key spec, and the docs
//! Redis serves through `COMMAND DOCS` (summary, since, complexity, arguments), which
//! redis-cli turns into argument hints. `register` hands it all to Redis.
//!
//! Not redis-module's `#[command]` macro (2.0.8), though it takes the same data: its
//! registration needs `RedisModule_SetCommandACLCategories` to exist (Redis 7.2+), so on
//! Redis 7.0, the floor, no command would register at all; it cannot leave out the `jwks`
//! category where modules may not add one (before 7.4); and its handlers take the arguments
//! as a `Vec<RedisString>`, an allocation per command that `JWKS.GET`, meant to cost what a
//! `GET` costs, does not make (`glue::dispatch` borrows them).

use redis_module::Context;

use super::{ack, debug, get, info, invalidate, key, policy, rotate, setstate, stats, verifiers};
use crate::glue::register::{self, arg, entry, option, Arg, ArgType, Command, KeyUse};
use redis_jwks_core::error::Result;

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
        "etag",
        "ETAG",
        ArgType::String,
        "the document's ETag: an ack about a key set once at this name is refused (STALE)",
    ),
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
            // deny-oom: an ack from a new verifier takes memory (counted in used_memory).
            flags: "fast deny-oom",
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

/// Registers every command (at load).
pub(crate) fn register(ctx: &Context) -> Result<()> {
    register::register(ctx, &commands())
}
