//! Observability: the log lines, the change events and this process's counts. The audit
//! entries' fields and the counter names are the core's (`redis_jwks_core::audit`,
//! `redis_jwks_core::counter_names`), written by `commit` through the command's keys; `log`
//! writes the Redis log; `stats` counts what this process did.

pub(crate) mod events;
pub(crate) mod log;
pub(crate) mod stats;
