//! The shipped Prometheus rules and Alertmanager config pass promtool's and amtool's
//! checks and unit tests, and docs/monitoring.md holds a runbook section and a table row for
//! every alert.

use std::collections::BTreeSet;
use std::process::Command;

use crate::common::*;
use crate::support::{doc_blocks, RUN};

fn run_tool(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo_path("monitoring"))
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/deps.sh installs it)"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rules_and_alertmanager_config_check_and_unit_tests_pass() {
    run_tool("promtool", &["check", "rules", "prometheus/jwks_rules.yml"]);
    run_tool(
        "promtool",
        &["test", "rules", "prometheus/jwks_rules_test.yml"],
    );
    run_tool(
        "promtool",
        &["check", "config", "prometheus/prometheus.example.yml"],
    );
    run_tool("amtool", &["check-config", "alertmanager/alertmanager.yml"]);
}

/// Every block is either run by the end-to-end test or marked illustrative; every alert has a
/// runbook section its runbook_url points at, and a row in the alerts table.
#[test]
fn doc_blocks_and_runbook_links() {
    let blocks = doc_blocks();
    for b in &blocks {
        assert!(
            b.info == RUN || b.info == "text",
            "docs/monitoring.md: a block marked {:?} (use `{RUN}` or `text`):\n{}",
            b.info,
            b.code
        );
    }
    assert!(blocks.iter().filter(|b| b.info == RUN).count() >= 15);
    let doc = std::fs::read_to_string(repo_path("docs/monitoring.md")).unwrap();
    let anchors: BTreeSet<String> = doc
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect();
    assert!(anchors.contains("runbook"), "{anchors:?}");
    let rules = std::fs::read_to_string(repo_path("monitoring/prometheus/jwks_rules.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 9, "{alerts:?}");
    let links: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url: "))
        .map(|l| l.trim_matches('"'))
        .collect();
    assert_eq!(links.len(), alerts.len());
    for (alert, link) in alerts.iter().zip(&links) {
        let anchor = link
            .strip_prefix("docs/monitoring.md#")
            .unwrap_or_else(|| panic!("{alert}: runbook_url {link}"));
        assert_eq!(anchor, alert.to_lowercase(), "{alert}");
        assert!(anchors.contains(anchor), "no section for #{anchor}");
        assert!(
            doc.contains(&format!("| `{alert}` |")),
            "{alert} not in the table"
        );
    }
}
