//! redis-jwks: JWT signing-key rotation and JWKS caching inside Redis.
//!
//! Pure core: `jwk`, `keyset`, `args`, `keys`, `commit`, `error`. Redis glue: `commands`
//! (one file per command, and the command table), `glue` (arguments, ACL, the key
//! wrapper), `datatype`, `upkeep` (derived state kept true), `config`. Observability:
//! `observe` (pure but for its log writer). This file only registers.

pub mod args;
pub mod commit;
pub mod error;
pub mod escape;
#[cfg(test)]
mod fuzz_replay;
pub mod jwk;
pub mod keys;
pub mod keyset;
pub mod observe;
#[doc(hidden)]
pub mod testkeys;

/// The Redis glue: compiled with the `module` feature, registered only outside unit tests
/// (the Redis allocator would abort a test binary), hence dead code under `cargo test`.
macro_rules! glue_modules {
    ($($name:ident),* $(,)?) => {
        $(
            #[cfg(feature = "module")]
            #[cfg_attr(test, allow(dead_code))]
            mod $name;
        )*
    };
}
glue_modules!(commands, config, datatype, glue, upkeep);

#[cfg(all(feature = "module", not(test)))]
mod registration {
    use redis_module::{
        configuration::ConfigurationFlags, redis_module, AclCategory, Context, RedisString,
    };

    use crate::config;
    use crate::datatype::KEYSET_TYPE;
    use crate::{commands, observe, upkeep};

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
        allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
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
