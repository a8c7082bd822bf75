//! Observability: the audit stream, the counters hash and the log lines. `audit` and
//! `metrics` build their records as plain values; `record` writes them through Redis.

pub mod audit;
pub mod log;
pub mod metrics;
pub mod record;
