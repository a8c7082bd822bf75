//! End to end: every `sh {test=monitoring}` block of docs/monitoring.md run verbatim (ports
//! aside), and each alert the shipped rules hold for a failure reaching Slack with the right
//! text. The stack takes seconds to start and the behaviours build on each other (node-wide
//! counters, the runbook blocks show what every alert left behind, "nothing else fired" comes
//! last), so one test starts it once and checks each behaviour in turn, one method each.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::*;
use crate::harness::{prom_alerts, prom_query, prom_value, slack_text, wait_value, Stack};
use crate::support::{ack, generation, info_jwks, text, unknown_kids, wait_until};

#[test]
fn docs_recipes_run_verbatim_and_alerts_reach_slack() {
    if !Stack::supported() {
        return;
    }
    let mut stack = Stack::start();
    // Part 1: the doc's blocks up to "Check that it works", as one session.
    stack.recipes_install_and_start_every_daemon();
    stack.secrets_are_readable_by_the_service_user_only();
    stack.prometheus_scrapes_both_nodes_with_info_jwks_numbers();
    stack.let_prometheus_take_12_samples();
    stack.deleting_a_key_set_fires_nothing();
    // Each failure the rules watch for, provoked, reaching Slack.
    stack.invalidation_errors_alert_reaches_slack();
    stack.module_not_loaded_alert_reaches_slack();
    stack.rotation_stalled_alert_reaches_slack();
    stack.verifiers_behind_alert_reaches_slack();
    stack.unknown_kid_spike_alert_reaches_slack();
    stack.deleting_a_failed_key_set_keeps_its_alert_firing();
    // Part 2: "Check that it works" and the runbook, block by block.
    stack.check_and_runbook_blocks_run_verbatim();
    // Nothing else ever fired, nothing resolved.
    stack.only_the_provoked_alerts_fired();
    stack.slack_heard_only_those_alerts_and_no_resolution();
    println!("end to end in {:?}", stack.started.elapsed());
}

impl Stack {
    /// The doc's blocks up to "Check that it works", run as one shell session as an
    /// operator pastes them, succeed: nothing left to install, the exporter's script answers,
    /// and every daemon started answers.
    fn recipes_install_and_start_every_daemon(&self) {
        let (status, setup_out) = (&self.setup_status, &self.setup_out);
        assert_eq!(status.trim(), "0", "the doc's recipes failed:\n{setup_out}");
        println!("doc recipes ran in {:?}", self.started.elapsed());
        assert!(setup_out.contains(" 0 newly installed"), "{setup_out}");
        assert!(
            setup_out.contains("redis_script_values{key=\"jwt_jwks_module_up\"} 1\n"),
            "{setup_out}"
        );
        self.daemons.assert_running();
    }

    /// The secrets the recipes write are root:prometheus 0640: the service user reads them,
    /// others cannot.
    fn secrets_are_readable_by_the_service_user_only(&self) {
        let hook = &self.hook;
        let perms = self.sh(
            "stat -c '%U:%G %a' /etc/prometheus/slack_webhook_url /etc/prometheus/redis_exporter_passwords.json\n\
             setpriv --reuid=prometheus --regid=prometheus --init-groups cat /etc/prometheus/slack_webhook_url\n\
             if setpriv --reuid=nobody --regid=nogroup --clear-groups cat /etc/prometheus/redis_exporter_passwords.json; then exit 1; fi",
        );
        assert!(perms.status.success(), "{}", text(&perms));
        assert!(
            text(&perms).starts_with(&format!(
                "root:prometheus 640\nroot:prometheus 640\n{hook}\n"
            )),
            "{}",
            text(&perms)
        );
    }

    /// Prometheus scrapes both nodes through the exporter: `instance` is the Redis node, for
    /// both; the numbers are INFO jwks's; key sets by db and by name; the audit stream's length.
    fn prometheus_scrapes_both_nodes_with_info_jwks_numbers(&mut self) {
        let (prom, bare) = (self.prom, &self.bare);
        let info = info_jwks(&mut self.con);
        let labels = wait_value(
            prom,
            &self.sel("jwt_jwks_cache_invalidations_total", ""),
            info["jwt_jwks_cache_invalidations_total"] as f64,
        );
        assert_eq!(labels["job"], "redis_jwks");
        wait_value(
            prom,
            &self.sel("jwt_jwks_cache_invalidation_errors_total", ""),
            0.0,
        );
        wait_value(prom, &self.sel("jwt_jwks_rotations_total", ""), 3.0);
        wait_value(prom, &self.sel("jwt_jwks_module_up", ""), 1.0);
        wait_value(
            prom,
            &format!("jwt_jwks_module_up{{instance=\"{bare}\"}}"),
            0.0,
        );
        wait_value(prom, &format!("redis_up{{instance=\"{bare}\"}}"), 1.0);
        wait_value(prom, &self.sel("jwt_jwks_key_sets", ",db=\"0\""), 2.0);
        wait_value(prom, &self.sel("jwt_jwks_key_sets", ",db=\"3\""), 1.0);
        let keysets: BTreeSet<(String, String)> = prom_query(
            prom,
            &self.sel("jwt_jwks_keyset_cache_invalidation_errors_total", ""),
        )
        .iter()
        .map(|s| {
            (
                s["metric"]["db"].as_str().unwrap().to_owned(),
                s["metric"]["keyset"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
        let want: BTreeSet<(String, String)> = [
            ("0", "jwks:{auth}"),
            ("0", "jwks:{old}"),
            ("3", "7:tenant:{x}"),
        ]
        .iter()
        .map(|(d, k)| (d.to_string(), k.to_string()))
        .collect();
        assert_eq!(keysets, want);
        let (len, _) = wait_until("audit stream length", 30, || {
            prom_value(
                prom,
                &self.sel("redis_stream_length", ",stream=\"jwks:{auth}:audit\""),
            )
        });
        assert!(len >= 3.0, "{len}");
    }

    /// A few seconds of samples before the errors, so that increase() over the alert's
    /// window hardly extrapolates and the rounded counts are exact.
    fn let_prometheus_take_12_samples(&self) {
        let prom = self.prom;
        wait_until("12 samples", 30, || {
            prom_value(
                prom,
                &format!(
                    "count_over_time({}[1m]) >= 12",
                    self.sel("jwt_jwks_cache_invalidations_total", "")
                ),
            )
        });
    }

    /// Housekeeping before any error: a key set deleted. Nothing may fire for it (checked
    /// by `only_the_provoked_alerts_fired`).
    fn deleting_a_key_set_fires_nothing(&mut self) {
        let prom = self.prom;
        let _: i64 = cmd("DEL", &["jwks:{old}"]).query(&mut self.con).unwrap();
        wait_value(prom, &self.sel("jwt_jwks_key_sets", ",db=\"0\""), 1.0);
    }

    /// Two real invalidation failures in one transaction (so one scrape sees both), then a
    /// rotation that invalidates fine: JwksCacheInvalidationErrors reaches Slack naming the
    /// node, both key sets, integer counts and the runbook.
    fn invalidation_errors_alert_reaches_slack(&mut self) {
        let (prom, node) = (self.prom, &self.node);
        let _: () = cmd("JWKS.DEBUG", &["FAIL-INVALIDATIONS", "2"])
            .query(&mut self.con)
            .unwrap();
        let _: redis::Value = redis::pipe()
            .atomic()
            .cmd("JWKS.ROTATE")
            .arg("jwks:{auth}")
            .arg("ADD")
            .arg(ec("k2", 2))
            .cmd("SELECT")
            .arg(3)
            .cmd("JWKS.ROTATE")
            .arg("7:tenant:{x}")
            .arg("ADD")
            .arg(ec("k2", 2))
            .cmd("SELECT")
            .arg(0)
            .cmd("JWKS.ROTATE")
            .arg("jwks:{auth}")
            .arg("ADD")
            .arg(ec("k3", 3))
            .query(&mut self.con)
            .unwrap();
        let info = info_jwks(&mut self.con);
        assert_eq!(info["jwt_jwks_cache_invalidation_errors_total"], 2);
        wait_value(
            prom,
            &self.sel("jwt_jwks_cache_invalidation_errors_total", ""),
            2.0,
        );

        // Slack: the node, both key sets, integer counts, the runbook.
        let errors = slack_text(&self.bodies, "JwksCacheInvalidationErrors");
        for want in [
            format!("*JWKS cache invalidation failed on Redis node {node}*"),
            format!("2 JWKS cache invalidation(s) failed on {node} in the last 10 minutes."),
            "Key set(s) with errors: 7:tenant:{x} (db 3: 1), jwks:{auth} (db 0: 1).".into(),
            "Runbook: docs/monitoring.md#jwkscacheinvalidationerrors".into(),
        ] {
            assert!(errors.contains(&want), "{want:?} not in:\n{errors}");
        }
    }

    /// The module is missing on the other node: JwksModuleNotLoaded says that, not
    /// "unreachable".
    fn module_not_loaded_alert_reaches_slack(&self) {
        let bare = &self.bare;
        let missing = slack_text(&self.bodies, "JwksModuleNotLoaded");
        for want in [
            format!("*redis-jwks is not loaded on Redis node {bare}*"),
            "Runbook: docs/monitoring.md#jwksmodulenotloaded".into(),
        ] {
            assert!(missing.contains(&want), "{want:?} not in:\n{missing}");
        }
    }

    /// A key set whose generator stopped (a PROMOTE-AFTER policy, the current key older than
    /// it, no next key published): JwksRotationStalled reaches Slack; a next key resolves it.
    fn rotation_stalled_alert_reaches_slack(&mut self) {
        let node = &self.node;
        rotate(
            &mut self.con,
            "jwks:{stall}",
            &["ADD", &ec("s1", 4), "PROMOTE", "s1"],
        )
        .unwrap();
        let _: redis::Value = cmd("JWKS.POLICY", &["jwks:{stall}", "PROMOTE-AFTER", "300"])
            .query(&mut self.con)
            .unwrap();
        let stalled = slack_text(&self.bodies, "JwksRotationStalled");
        for want in [
            "Key rotation stalled for key set jwks:{stall} (db 0)".to_string(),
            format!("on Redis node(s) {node}"),
            "Runbook: docs/monitoring.md#jwksrotationstalled".into(),
        ] {
            assert!(stalled.contains(&want), "{want:?} not in:\n{stalled}");
        }
        // A next key resolves it.
        rotate(&mut self.con, "jwks:{stall}", &["ADD", &ec("s2", 5)]).unwrap();
    }

    /// A verifier stuck on an old generation: the key set rotates, and it keeps acking the
    /// generation before (it missed the change event); another acks the current one. The
    /// acks outlive the test (10 minutes), so nothing resolves. JwksVerifiersBehind reaches
    /// Slack naming the key set.
    fn verifiers_behind_alert_reaches_slack(&mut self) {
        let (prom, node) = (self.prom, &self.node);
        let old = generation(&mut self.con, "jwks:{auth}");
        rotate(&mut self.con, "jwks:{auth}", &["ADD", &ec("k4", 6)]).unwrap();
        let now = generation(&mut self.con, "jwks:{auth}");
        assert_eq!(
            ack(&mut self.con, "jwks:{auth}", old, "stuck", 600_000),
            now
        );
        assert_eq!(
            ack(&mut self.con, "jwks:{auth}", now, "fresh", 600_000),
            now
        );
        wait_value(
            prom,
            &self.sel(
                "jwt_jwks_keyset_verifiers_behind",
                ",keyset=\"jwks:{auth}\"",
            ),
            1.0,
        );
        let behind = slack_text(&self.bodies, "JwksVerifiersBehind");
        for want in [
            "*Verifier(s) stuck on an old JWKS for key set jwks:{auth} (db 0)*".to_string(),
            format!("1 of 2 live verifier(s) of key set jwks:{{auth}} (db 0) on Redis node(s) {node} still hold an older generation"),
            "Runbook: docs/monitoring.md#jwksverifiersbehind".into(),
        ] {
            assert!(behind.contains(&want), "{want:?} not in:\n{behind}");
        }
        println!("Slack:\n{behind}");
    }

    /// Unknown kids: a verifier's connection (named, so the runbook's CLIENT LIST finds it;
    /// kept open to the end) looks up 1200 kids jwks:{auth} does not publish, in two halves so
    /// that Prometheus sees the counter rise whatever it first scraped: 4/s over 5 minutes. A
    /// few on another key set stay under the threshold. JwksUnknownKidSpike reaches Slack
    /// naming the key set and the node.
    fn unknown_kid_spike_alert_reaches_slack(&mut self) {
        let (prom, node) = (self.prom, &self.node);
        let mut verifier = self.redis.conn();
        let _: () = cmd("CLIENT", &["SETNAME", "verifier-a"])
            .query(&mut verifier)
            .unwrap();
        unknown_kids(&mut self.db3, "7:tenant:{x}", 5);
        unknown_kids(&mut verifier, "jwks:{auth}", 600);
        let auth_misses = self.sel(
            "jwt_jwks_keyset_unknown_kid_lookups_total",
            ",keyset=\"jwks:{auth}\"",
        );
        wait_value(prom, &auth_misses, 600.0);
        unknown_kids(&mut verifier, "jwks:{auth}", 600);
        wait_value(prom, &auth_misses, 1200.0);
        wait_value(
            prom,
            &self.sel("jwt_jwks_unknown_kid_lookups_total", ""),
            1205.0,
        );
        let spike = slack_text(&self.bodies, "JwksUnknownKidSpike");
        for want in [
            "*Unknown-kid lookups spike for key set jwks:{auth} (db 0)*".to_string(),
            "lookups per second of kids that key set jwks:{auth} (db 0) does not publish".into(),
            format!("by node: {node} "),
            "Runbook: docs/monitoring.md#jwksunknownkidspike".into(),
        ] {
            assert!(spike.contains(&want), "{want:?} not in:\n{spike}");
        }
        println!("Slack:\n{spike}");
        self.verifier = Some(verifier);
    }

    /// Housekeeping while the error alert fires: delete a key set that failed. Its series
    /// ends; the alert stays firing as the same alert.
    fn deleting_a_failed_key_set_keeps_its_alert_firing(&mut self) {
        let (prom, node) = (self.prom, &self.node);
        let key = ("JwksCacheInvalidationErrors".to_string(), node.clone());
        let before = prom_alerts(prom)[&key].clone();
        assert_eq!(before.0, "firing");
        let _: i64 = cmd("DEL", &["7:tenant:{x}"]).query(&mut self.db3).unwrap();
        wait_until("the deleted key set's series to end", 30, || {
            prom_query(
                prom,
                &self.sel(
                    "jwt_jwks_keyset_cache_invalidation_errors_total",
                    ",keyset=\"7:tenant:{x}\"",
                ),
            )
            .is_empty()
            .then_some(())
        });
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(prom_alerts(prom)[&key], before);
    }

    /// "Check that it works" and the runbook, block by block: each succeeds, says no error,
    /// and shows what the alerts so far left behind (see `expected_lines`).
    fn check_and_runbook_blocks_run_verbatim(&self) {
        let (run, split) = (&self.run, self.split);
        println!(
            "{} blocks in one session, then {} one by one",
            split,
            run.len() - split
        );
        for block in &run[split..] {
            let code = self.ports.apply(&block.code);
            let out = self.sh(&code);
            let said = text(&out);
            assert!(out.status.success(), "{code}\nfailed:\n{said}");
            for bad in ["ERR", "NOPERM", "WRONGPASS", "NOAUTH"] {
                assert!(
                    !said.lines().any(|l| l.starts_with(bad)),
                    "{code}\nsaid:\n{said}"
                );
            }
            let expect = expected_lines(&code);
            // INFO's lines end in \r\n; the expectations are whole lines.
            let lines = said.replace('\r', "");
            for want in expect {
                assert!(lines.contains(want), "{code}\nsaid:\n{said}");
            }
        }
    }

    /// Nothing else ever fired: each provoked alert once, for its node or (per key set, whichever
    /// node holds it) jwks:{auth} only; 7:tenant:{x}'s few misses stay quiet.
    fn only_the_provoked_alerts_fired(&self) {
        let (prom, node, bare) = (self.prom, &self.node, &self.bare);
        self.daemons.assert_running();
        let fired: BTreeSet<(String, String)> = prom_query(
            prom,
            "group by (alertname, instance) (last_over_time(ALERTS{alertstate=\"firing\"}[1h]))",
        )
        .iter()
        .map(|s| {
            (
                s["metric"]["alertname"].as_str().unwrap().to_owned(),
                s["metric"]["instance"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
        let want: BTreeSet<(String, String)> = [
            ("JwksCacheInvalidationErrors".to_string(), node.clone()),
            ("JwksModuleNotLoaded".to_string(), bare.clone()),
            // One alert per key set, whichever node holds it.
            ("JwksRotationStalled".to_string(), String::new()),
            ("JwksVerifiersBehind".to_string(), String::new()),
            ("JwksUnknownKidSpike".to_string(), String::new()),
        ]
        .into_iter()
        .collect();
        assert_eq!(fired, want);
        // The per-key-set alerts name jwks:{auth} only (7:tenant:{x}'s few misses stay quiet).
        let keysets: BTreeSet<(String, String)> = prom_query(
            prom,
            "group by (alertname, keyset) (last_over_time(ALERTS{alertstate=\"firing\", alertname=~\"JwksVerifiersBehind|JwksUnknownKidSpike\"}[1h]))",
        )
        .iter()
        .map(|s| {
            (
                s["metric"]["alertname"].as_str().unwrap().to_owned(),
                s["metric"]["keyset"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
        let want: BTreeSet<(String, String)> = [
            ("JwksUnknownKidSpike".to_string(), "jwks:{auth}".to_string()),
            ("JwksVerifiersBehind".to_string(), "jwks:{auth}".to_string()),
        ]
        .into_iter()
        .collect();
        assert_eq!(keysets, want);
    }

    /// Slack heard of those alerts only, and of no resolution but the stalled rotation's.
    fn slack_heard_only_those_alerts_and_no_resolution(&self) {
        for body in self.bodies.lock().unwrap().iter() {
            // The stalled rotation resolves once a next key is published; nothing else does.
            assert!(
                !body.contains("RESOLVED") || body.contains("JwksRotationStalled"),
                "{body}"
            );
            assert!(
                body.contains("JwksCacheInvalidationErrors")
                    || body.contains("JwksModuleNotLoaded")
                    || body.contains("JwksRotationStalled")
                    || body.contains("JwksVerifiersBehind")
                    || body.contains("JwksUnknownKidSpike"),
                "{body}"
            );
        }
    }
}

/// What a "Check that it works" or runbook block must show, by what it runs, once the
/// alerts fired: every line given, as a substring of its output with `\r` removed.
fn expected_lines(code: &str) -> &'static [&'static str] {
    if code.contains("JWKS.VERIFIERS") {
        &["stuck", "fresh"]
    } else if code.contains("verifier-behind-ms") {
        &[
            "\n100\n",
            "verifiers:0:jwks:{auth}:2\n",
            "verifiers_behind:0:jwks:{auth}:1\n",
        ]
    } else if code.contains("unknown_kid_lookups_total") {
        &["jwks_jwt_jwks_keyset_unknown_kid_lookups_total:0:jwks:{auth}:120"]
    } else if code.contains("CLIENT LIST") {
        &["name=verifier-a "]
    } else if code.contains("promtool query") {
        &["jwt_jwks_module_up{instance=\"", "=> 1 @", "=> 0 @"]
    } else if code.contains("amtool alert query") {
        &[
            "JwksCacheInvalidationErrors",
            "JwksModuleNotLoaded",
            "JwksVerifiersBehind",
            "JwksUnknownKidSpike",
        ]
    } else if code.contains("grep keyset_cache_invalidation_errors") {
        &["errors_total:0:jwks:{auth}:1"]
    } else if code.contains("XRANGE") {
        &["JWKS_CACHE_INVALIDATION_FAILED"]
    } else if code.contains("PING") {
        &["PONG"]
    } else if code.contains("last_scrape_error") {
        &["redis_up 1"]
    } else {
        &[]
    }
}
