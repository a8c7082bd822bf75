//! redis-jwks: JWT signing-key rotation and JWKS caching inside Redis.
//!
//! The pure core (JWKs, key sets, names, arguments, what a change writes, errors) is the
//! `redis-jwks-core` crate. Here, the Redis side, in layers that import only downwards:
//! `glue` (FFI, arguments, ACL, the key wrapper), `observe` (log writer, events, this
//! process's counts), `config`, `fleets` (the verifiers each key set has, from their acks);
//! `datatype`; `tracking` (what the module keeps about the keyspace and the hooks that keep
//! it; writes nothing); `write` (the one write path every change takes); `upkeep` (the
//! writes nobody's command makes: clean-ups, scheduled changes); `commands` (one file per
//! command, and the command table). This file only registers.

// pub means "for the other crate"; inside one, pub(crate) says so.
#![warn(unreachable_pub)]
// A panic in a module takes the server down (catch_unwind guards the entry points, but a
// caught panic still fails the command): no unwrap, expect or panic outside tests; tests
// may (clippy.toml). The module writes to the Redis log, never to the server's stdout.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::dbg_macro,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod commands;
mod config;
mod datatype;
mod fleets;
mod glue;
mod observe;
mod tracking;
mod upkeep;
mod write;

mod registration {
    use redis_module::{
        configuration::ConfigurationFlags, redis_module, AclCategory, Context, RedisString,
    };

    use crate::config;
    use crate::datatype::KEYSET_TYPE;
    use crate::{commands, observe, upkeep};

    /// The Redis allocator in the module; unit tests run outside Redis, where it would abort
    /// the test binary, so they keep the system's.
    #[cfg(not(test))]
    type Allocator = redis_module::alloc::RedisAlloc;
    #[cfg(not(test))]
    const ALLOCATOR: Allocator = redis_module::alloc::RedisAlloc;
    #[cfg(test)]
    type Allocator = std::alloc::System;
    #[cfg(test)]
    const ALLOCATOR: Allocator = std::alloc::System;

    fn init(ctx: &Context, args: &[RedisString]) -> redis_module::Status {
        let started = config::check_module_args(args)
            .and_then(|()| commands::table::register(ctx))
            .and_then(|()| upkeep::start(ctx));
        if let Err(e) = started {
            ctx.log_warning(&format!("redis-jwks not loaded: {e}"));
            return redis_module::Status::Err;
        }
        observe::log::start();
        redis_module::Status::Ok
    }

    redis_module! {
        name: "jwks",
        version: config::MODULE_VERSION,
        allocator: (Allocator, ALLOCATOR),
        data_types: [KEYSET_TYPE],
        // Module ACL categories (`+@jwks`) where the server supports them (Redis 7.4+,
        // Valkey); on older servers the commands load without it.
        acl_categories: ["jwks",],
        init: init,
        configurations: [
            i64: [
                ["cache-ttl", &config::CACHE_TTL, config::DEFAULT_CACHE_TTL_S, config::CACHE_TTL_RANGE.0, config::CACHE_TTL_RANGE.1, ConfigurationFlags::DEFAULT, None],
                ["audit-maxlen", &config::AUDIT_MAXLEN, config::DEFAULT_AUDIT_MAXLEN, config::AUDIT_MAXLEN_RANGE.0, config::AUDIT_MAXLEN_RANGE.1, ConfigurationFlags::DEFAULT, None],
                ["min-rsa-bits", &config::MIN_RSA_BITS, config::DEFAULT_MIN_RSA_BITS, config::MIN_RSA_BITS_RANGE.0, config::MIN_RSA_BITS_RANGE.1, ConfigurationFlags::DEFAULT, None],
                ["verifier-behind-ms", &config::VERIFIER_BEHIND_MS, config::DEFAULT_VERIFIER_BEHIND_MS, config::VERIFIER_BEHIND_RANGE.0, config::VERIFIER_BEHIND_RANGE.1, ConfigurationFlags::DEFAULT, None],
            ],
            string: [],
            bool: [
                ["fault-injection", &config::FAULT_INJECTION, false, ConfigurationFlags::IMMUTABLE, None],
                ["keyspace-hook", &config::KEYSPACE_HOOK, false, ConfigurationFlags::IMMUTABLE, None],
            ],
            enum: [],
            module_args_as_configuration: true,
        ]
    }
}
