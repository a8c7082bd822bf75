//! redis-jwks: JWT signing-key rotation and JWKS caching inside Redis.
//!
//! Pure core: `jwk`, `keyset`, `args`, `keys`. Redis glue: `commands`, `datatype`,
//! `effects`, `strings`, `registry`, `config`. Observability: `observe`. This file only
//! registers.

pub mod args;
pub mod error;
#[cfg(test)]
mod fuzz_replay;
pub mod jwk;
pub mod keys;
pub mod keyset;
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
glue_modules!(commands, config, datatype, effects, observe, registry, strings);

#[cfg(all(feature = "module", not(test)))]
mod registration {
    use redis_module::{
        configuration::ConfigurationFlags, redis_module, AclCategory, Context, RedisResult,
        RedisString,
    };

    use crate::commands::{self, guarded};
    use crate::config;
    use crate::datatype::KEYSET_TYPE;
    use crate::observe;

    fn init(ctx: &Context, _args: &[RedisString]) -> redis_module::Status {
        // JWKS.GET is registered by hand (see its file); flags and key spec as listed below.
        if let Err(e) = commands::get::register(ctx) {
            ctx.log_warning(e);
            return redis_module::Status::Err;
        }
        observe::log::start();
        // Flush and stop the logging thread when the server shuts down cleanly.
        if let Some(subscribe) = unsafe { redis_module::raw::RedisModule_SubscribeToServerEvent } {
            let event = redis_module::raw::RedisModuleEvent {
                id: redis_module::raw::REDISMODULE_EVENT_SHUTDOWN,
                dataver: 1,
            };
            unsafe { subscribe(ctx.ctx, event, Some(on_shutdown)) };
        }
        redis_module::Status::Ok
    }

    unsafe extern "C" fn on_shutdown(
        _ctx: *mut redis_module::raw::RedisModuleCtx,
        _event: redis_module::raw::RedisModuleEvent,
        _subevent: u64,
        _data: *mut std::ffi::c_void,
    ) {
        observe::log::stop();
    }

    /// Each command's entry point: its handler behind the panic guard.
    macro_rules! guarded_commands {
        ($($name:ident => $handler:path),* $(,)?) => {
            $(fn $name(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
                guarded(ctx, args, $handler)
            })*
        };
    }
    guarded_commands! {
        rotate => commands::rotate::run,
        invalidate => commands::invalidate::run,
        info => commands::info::run,
        setstate => commands::setstate::run,
        debug => commands::debug::run,
        stats => commands::stats::run,
    }

    // The keyspace was replaced wholesale: JWKS.STATS must scan again.
    #[redis_module_macros::loading_event_handler]
    fn on_loading(_ctx: &Context, _event: redis_module::server_events::LoadingSubevent) {
        crate::registry::reset();
    }
    #[redis_module_macros::flush_event_handler]
    fn on_flush(_ctx: &Context, _event: redis_module::server_events::FlushSubevent) {
        crate::registry::reset();
    }

    // Key positions (first, last, step) = (1, 1, 1): cluster routing and ACL key checks see
    // the key set; its derived keys share its hash tag. INVALIDATE is not deny-oom on
    // purpose: dropping a stale JWKS must work even when memory is full.
    redis_module! {
        name: "jwks",
        version: 1,
        allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
        data_types: [KEYSET_TYPE],
        // Module ACL categories (`+@jwks`) where the server supports them (Redis 7.4+,
        // Valkey); on older servers the commands load without categories.
        acl_categories: ["jwks",],
        init: init,
        commands: [
            ["jwks.rotate", rotate, "write deny-oom", 1, 1, 1, "", "write slow jwks"],
            ["jwks.invalidate", invalidate, "write", 1, 1, 1, "", "write fast jwks"],
            // jwks.get: "write", 1, 1, 1, "write fast jwks" -- registered in `init`.
            ["jwks.info", info, "readonly", 1, 1, 1, "", "read slow jwks"],
            ["jwks.setstate", setstate, "write", 1, 1, 1, "", "write slow dangerous jwks"],
            ["jwks.debug", debug, "admin", 0, 0, 0, "", "admin dangerous jwks"],
            ["jwks.stats", stats, "readonly", 0, 0, 0, "", "read slow jwks"],
        ],
        configurations: [
            i64: [
                ["cache-ttl", &config::CACHE_TTL, config::DEFAULT_CACHE_TTL_S, 1, 31_536_000, ConfigurationFlags::DEFAULT, None],
                ["audit-maxlen", &config::AUDIT_MAXLEN, config::DEFAULT_AUDIT_MAXLEN, 1, 100_000_000, ConfigurationFlags::DEFAULT, None],
                ["min-rsa-bits", &config::MIN_RSA_BITS, config::DEFAULT_MIN_RSA_BITS, 1024, 16384, ConfigurationFlags::DEFAULT, None],
            ],
            string: [],
            bool: [
                ["fault-injection", &config::FAULT_INJECTION, false, ConfigurationFlags::IMMUTABLE, None],
            ],
            enum: [],
            module_args_as_configuration: true,
        ]
    }
}
