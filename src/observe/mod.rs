//! Observability: the audit stream, the counters hash and the log lines. `audit` and
//! `metrics` are plain values (written by `commit` through the command's
//! keys); `log` writes the Redis log; `stats` counts what this process did.

pub mod audit;
pub mod events;
#[cfg(feature = "module")]
#[cfg_attr(test, allow(dead_code))]
pub mod log;
pub mod metrics;
pub mod stats;
