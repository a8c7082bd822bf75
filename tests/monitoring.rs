//! Monitoring, with the real programs from Debian's packages: promtool and amtool on the
//! shipped files; redis_exporter 1.45 in its multi-target mode with the shipped script and
//! a JSON password file; and end to end, every `sh {test=monitoring}` block of
//! docs/monitoring.md run verbatim (ports aside) in a private mount namespace: Redis with
//! the module and Redis without -> redis_exporter -> Prometheus with the shipped rules ->
//! Alertmanager with the shipped config -> a local HTTP listener standing in for Slack.
//! Loopback only.
//!
//! One test binary, its tests by concern under tests/monitoring/:
//! - `rules`: promtool and amtool on the shipped files; the doc's blocks and runbook links.
//! - `exporter`: the exporter's script, its ACL user, redis_exporter in multi-target mode.
//! - `end_to_end`: the doc's recipes run verbatim and each alert reaching Slack, one method
//!   of [`harness::Stack`] per behaviour, on one stack started once.
//! - `harness`: starting that stack (namespace, stand-in systemctl, ports, Slack listener)
//!   and asking Prometheus; `support`: what the tests share (the doc's blocks, INFO jwks,
//!   acks, HTTP, waiting).

mod common;

#[path = "monitoring/end_to_end.rs"]
mod end_to_end;
#[path = "monitoring/exporter.rs"]
mod exporter;
#[path = "monitoring/harness.rs"]
mod harness;
#[path = "monitoring/rules.rs"]
mod rules;
#[path = "monitoring/support.rs"]
mod support;
