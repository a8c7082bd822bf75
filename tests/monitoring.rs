//! Monitoring, with the real programs from Debian's packages: promtool and amtool on the
//! shipped files; redis_exporter 1.45 in its multi-target mode with the shipped script and
//! a JSON password file; and end to end, every `sh {test=monitoring}` block of
//! docs/monitoring.md run verbatim (ports aside) in a private mount namespace: Redis with
//! the module and Redis without -> redis_exporter -> Prometheus with the shipped rules ->
//! Alertmanager with the shipped config -> a local HTTP listener standing in for Slack.
//! Loopback only.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value as Json;

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

/// `INFO jwks` as name -> value, without Redis's `jwks_` prefix; the value is the last
/// field (key-set names contain ':').
fn info_jwks(con: &mut redis::Connection) -> HashMap<String, i64> {
    let info: String = cmd("INFO", &["jwks"]).query(con).unwrap();
    info.lines()
        .filter_map(|l| l.strip_prefix("jwks_"))
        .filter_map(|l| l.rsplit_once(':'))
        .map(|(k, v)| (k.to_owned(), v.parse().expect("integer")))
        .collect()
}

/// The exporter script never errors (an error would fail the whole scrape) and returns
/// name/value strings that parse as numbers, with or without the module loaded.
#[test]
fn exporter_script_returns_numbers_and_never_errors() {
    let script = std::fs::read_to_string(repo_path("monitoring/jwks_exporter.lua")).unwrap();
    let with = Server::start();
    let mut con = with.conn();
    rotate(&mut con, "a", &["ADD", &ec("k", 1)]).unwrap();
    rotate(&mut con, "b:c:{d}", &["ADD", &ec("k", 1)]).unwrap();
    let _: i64 = cmd("JWKS.INVALIDATE", &["b:c:{d}"])
        .query(&mut con)
        .unwrap();
    let flat: Vec<String> = cmd("EVAL", &[script.as_str(), "0"])
        .query(&mut con)
        .unwrap();
    let pairs: HashMap<&str, f64> = flat
        .chunks(2)
        .map(|p| (p[0].as_str(), p[1].parse().expect("numeric value")))
        .collect();
    assert_eq!(pairs["jwt_jwks_cache_invalidations_total"], 3.0);
    assert_eq!(pairs["jwt_jwks_rotations_total"], 2.0);
    assert_eq!(pairs["jwt_jwks_key_sets"], 2.0);
    assert_eq!(pairs["jwt_jwks_key_sets:0"], 2.0);
    assert_eq!(
        pairs["jwt_jwks_keyset_cache_invalidation_errors_total:0:b:c:{d}"],
        0.0
    );
    assert_eq!(pairs["jwt_jwks_module_up"], 1.0);
    // The same numbers as INFO jwks, which is what the script reads.
    for (name, value) in info_jwks(&mut con) {
        assert_eq!(pairs[name.as_str()], value as f64, "{name}");
    }

    let without = Server::plain();
    let flat: Vec<String> = cmd("EVAL", &[script.as_str(), "0"])
        .query(&mut without.conn())
        .unwrap();
    assert_eq!(flat, vec!["jwt_jwks_module_up", "0"]);
}

/// The key set's generation, from JWKS.INFO.
fn generation(con: &mut redis::Connection, key: &str) -> i64 {
    let info: redis::Value = cmd("JWKS.INFO", &[key]).query(con).unwrap();
    as_int(&field(&info, "generation"))
}

/// `JWKS.ACK key GENERATION g ID id TTL ttl`: the key set's generation.
fn ack(con: &mut redis::Connection, key: &str, generation: i64, id: &str, ttl_ms: u64) -> i64 {
    cmd(
        "JWKS.ACK",
        &[
            key,
            "GENERATION",
            &generation.to_string(),
            "ID",
            id,
            "TTL",
            &ttl_ms.to_string(),
        ],
    )
    .query(con)
    .unwrap()
}

/// `n` JWKS.KEY lookups of kids `key` does not publish, in one pipeline: every one a miss.
fn unknown_kids(con: &mut redis::Connection, key: &str, n: usize) {
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("JWKS.KEY").arg(key).arg(format!("forged-{i}"));
    }
    let replies: Vec<Option<String>> = pipe.query(con).unwrap();
    assert!(replies.iter().all(Option::is_none), "{replies:?}");
}

/// The issue-21 numbers reach the exporter's script: acks and unknown-kid lookups (node
/// counters), per key set the unknown-kid counter (from 0 for every key set held) and, once
/// acked, the live verifiers and those behind for longer than `verifier-behind-ms`.
#[test]
fn exporter_script_exports_verifier_and_unknown_kid_metrics() {
    let script = std::fs::read_to_string(repo_path("monitoring/jwks_exporter.lua")).unwrap();
    let server = Server::with_module_args(&["verifier-behind-ms", "100"], &[]);
    let mut con = server.conn();
    rotate(
        &mut con,
        "jwks:{auth}",
        &["ADD", &ec("k1", 1), "PROMOTE", "k1"],
    )
    .unwrap();
    rotate(&mut con, "7:tenant:{x}", &["ADD", &ec("k1", 1)]).unwrap();
    let eval = |con: &mut redis::Connection| -> HashMap<String, f64> {
        let flat: Vec<String> = cmd("EVAL", &[script.as_str(), "0"]).query(con).unwrap();
        flat.chunks(2)
            .map(|p| (p[0].clone(), p[1].parse().expect("numeric value")))
            .collect()
    };
    let before = eval(&mut con);
    assert_eq!(before["jwt_jwks_verifier_acks_total"], 0.0);
    assert_eq!(before["jwt_jwks_unknown_kid_lookups_total"], 0.0);
    for ks in ["jwks:{auth}", "7:tenant:{x}"] {
        assert_eq!(
            before[&format!("jwt_jwks_keyset_unknown_kid_lookups_total:0:{ks}")],
            0.0,
            "{before:?}"
        );
    }
    assert!(
        !before
            .keys()
            .any(|k| k.starts_with("jwt_jwks_keyset_verifiers")),
        "no verifier gauges before the first ack: {before:?}"
    );

    // A verifier stuck on the generation before a rotation, one on the current one; three
    // unknown kids on one key set, a known kid (a hit) and a key set that does not exist
    // (not a miss of a key set).
    let old = generation(&mut con, "jwks:{auth}");
    rotate(&mut con, "jwks:{auth}", &["ADD", &ec("k2", 2)]).unwrap();
    let now = generation(&mut con, "jwks:{auth}");
    assert!(now > old);
    assert_eq!(ack(&mut con, "jwks:{auth}", old, "stuck", 60000), now);
    assert_eq!(ack(&mut con, "jwks:{auth}", now, "fresh", 60000), now);
    unknown_kids(&mut con, "jwks:{auth}", 3);
    let hit: Option<String> = cmd("JWKS.KEY", &["jwks:{auth}", "k1"])
        .query(&mut con)
        .unwrap();
    assert!(hit.is_some());
    let _: Option<String> = cmd("JWKS.KEY", &["jwks:{none}", "k1"])
        .query(&mut con)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let after = eval(&mut con);
    assert_eq!(after["jwt_jwks_verifier_acks_total"], 2.0);
    assert_eq!(after["jwt_jwks_unknown_kid_lookups_total"], 3.0);
    assert_eq!(
        after["jwt_jwks_keyset_unknown_kid_lookups_total:0:jwks:{auth}"],
        3.0
    );
    assert_eq!(
        after["jwt_jwks_keyset_unknown_kid_lookups_total:0:7:tenant:{x}"],
        0.0
    );
    assert_eq!(after["jwt_jwks_keyset_verifiers:0:jwks:{auth}"], 2.0);
    assert_eq!(after["jwt_jwks_keyset_verifiers_behind:0:jwks:{auth}"], 1.0);
    assert!(
        !after.contains_key("jwt_jwks_keyset_verifiers:0:7:tenant:{x}"),
        "{after:?}"
    );
    // The stuck verifier reloads: none behind.
    ack(&mut con, "jwks:{auth}", now, "stuck", 60000);
    let healed = eval(&mut con);
    assert_eq!(
        healed["jwt_jwks_keyset_verifiers_behind:0:jwks:{auth}"],
        0.0
    );
    assert_eq!(healed["jwt_jwks_keyset_verifiers:0:jwks:{auth}"], 2.0);
}

/// The ACL rules of an `ACL SETUSER jwks_exporter ...` command line or aclfile line, shell
/// quotes removed.
fn acl_rules(line: &str) -> Vec<String> {
    let at = line.find("jwks_exporter ").expect("jwks_exporter") + "jwks_exporter ".len();
    line[at..]
        .split_whitespace()
        .map(|w| w.trim_matches('\'').to_owned())
        .collect()
}

/// monitoring/exporter.acl, the docs/acl.md recipe and the loop in docs/monitoring.md give
/// the exporter the same rules.
#[test]
fn exporter_acl_is_the_docs_recipe() {
    let file = std::fs::read_to_string(repo_path("monitoring/exporter.acl")).unwrap();
    let file_line = file
        .lines()
        .find(|l| l.starts_with("user jwks_exporter "))
        .expect("user line");
    let acl_md = std::fs::read_to_string(repo_path("docs/acl.md")).unwrap();
    let acl_line = acl_md
        .lines()
        .find(|l| l.starts_with("redis-cli ACL SETUSER jwks_exporter "))
        .expect("docs/acl.md recipe");
    let doc = doc_blocks();
    let mon_line = doc
        .iter()
        .flat_map(|b| b.code.lines())
        .find(|l| l.contains("ACL SETUSER jwks_exporter "))
        .expect("docs/monitoring.md recipe");
    assert_eq!(acl_rules(file_line), acl_rules(acl_line));
    assert_eq!(acl_rules(mon_line), acl_rules(acl_line));
    assert!(mon_line.contains("'%R~jwks:*:audit'") && mon_line.contains("'+config|get'"));
}

/// One fenced block of docs/monitoring.md: the `## ` section it is in, and its code with
/// the fence's indentation removed.
struct Block {
    section: String,
    info: String,
    code: String,
}

fn doc_blocks() -> Vec<Block> {
    let doc = std::fs::read_to_string(repo_path("docs/monitoring.md")).unwrap();
    let mut out = Vec::new();
    let mut section = String::new();
    let mut open: Option<(usize, String, String)> = None;
    for line in doc.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some((fence_indent, info, mut code)) = open.take() {
            if trimmed == "```" {
                out.push(Block {
                    section: section.clone(),
                    info,
                    code,
                });
            } else {
                code.push_str(line.get(fence_indent..).unwrap_or(line.trim_start()));
                code.push('\n');
                open = Some((fence_indent, info, code));
            }
        } else if let Some(info) = trimmed.strip_prefix("```") {
            open = Some((indent, info.trim().to_owned(), String::new()));
        } else if let Some(title) = line.strip_prefix("## ") {
            section = title.trim().to_owned();
        }
    }
    assert!(open.is_none(), "unclosed fence in docs/monitoring.md");
    out
}

const RUN: &str = "sh {test=monitoring}";

/// Every block is either run by this file or marked illustrative; every alert has a
/// runbook section its runbook_url points at, and a row in the alerts table.
#[test]
fn monitoring_doc_blocks_and_runbook_links() {
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

fn http_get(url: &str) -> Option<String> {
    ureq::get(url)
        .timeout(Duration::from_secs(5))
        .call()
        .ok()?
        .into_string()
        .ok()
}

/// Debian's redis_exporter 1.45, multi-target: `-script` runs for `/scrape?target=` nodes,
/// each logging in as `-redis.user` with its password from the JSON password file; with
/// `-redis.addr=` empty, `/metrics` scrapes no node. A plain password file is fatal.
#[test]
fn exporter_multi_target_runs_the_script_with_a_json_password_file() {
    let with = Server::start();
    let without = Server::plain();
    let acl_md = std::fs::read_to_string(repo_path("docs/acl.md")).unwrap();
    let recipe = acl_md
        .lines()
        .find(|l| l.starts_with("redis-cli ACL SETUSER jwks_exporter "))
        .expect("recipe");
    for server in [&with, &without] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(recipe)
            .env("PATH", shim_path(server))
            .current_dir(&server.dir)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    }
    rotate(&mut with.conn(), "jwks:{auth}", &["ADD", &ec("k", 1)]).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwords.json");
    std::fs::write(
        &pw,
        format!(
            "{{\"redis://127.0.0.1:{}\": \"exporter-secret\", \"redis://127.0.0.1:{}\": \"exporter-secret\"}}\n",
            with.port, without.port
        ),
    )
    .unwrap();
    let port = free_port();
    let log = dir.path().join("exporter.log");
    let args = |pw: &Path| {
        vec![
            "-redis.addr=".to_string(),
            "-redis.user=jwks_exporter".into(),
            format!("-redis.password-file={}", pw.display()),
            format!(
                "-script={}",
                repo_path("monitoring/jwks_exporter.lua").display()
            ),
            format!("-web.listen-address=127.0.0.1:{port}"),
        ]
    };
    let mut exporter = Proc::spawn("prometheus-redis-exporter", &args(&pw), &log);
    let scrape = |node: u16| {
        let url = format!("http://127.0.0.1:{port}/scrape?target=redis://127.0.0.1:{node}");
        let mut text = None;
        wait_for("the exporter", || {
            text = http_get(&url);
            text.is_some()
        });
        text.unwrap()
    };
    let m = scrape(with.port);
    exporter.assert_running(&log);
    assert!(m.contains("\nredis_up 1\n"), "{m}");
    assert!(
        m.contains("redis_script_values{key=\"jwt_jwks_module_up\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("redis_script_values{key=\"jwt_jwks_keyset_cache_invalidation_errors_total:0:jwks:{auth}\"} 0\n"),
        "{m}"
    );
    let p = scrape(without.port);
    assert!(p.contains("\nredis_up 1\n"), "{p}");
    assert!(
        p.contains("redis_script_values{key=\"jwt_jwks_module_up\"} 0\n"),
        "{p}"
    );
    let own = http_get(&format!("http://127.0.0.1:{port}/metrics")).unwrap();
    assert!(!own.contains("\nredis_up "), "{own}");
    drop(exporter);

    // The plain format (the password alone) stops the exporter at start.
    let plain = dir.path().join("password.txt");
    std::fs::write(&plain, "exporter-secret\n").unwrap();
    let out = Command::new("prometheus-redis-exporter")
        .args(args(&plain))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Error loading redis passwords"));
}

/// A stand-in for Slack's webhook: records every POST body, answers 200.
fn slack_listener() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind listener");
    let port = listener.local_addr().expect("addr").port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (port, bodies)
}

fn prom_query(port: u16, query: &str) -> Vec<Json> {
    let url = format!("http://127.0.0.1:{port}/api/v1/query");
    match ureq::get(&url).query("query", query).call() {
        Ok(resp) => {
            let text = resp.into_string().unwrap_or_default();
            let v: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
            v["data"]["result"].as_array().cloned().unwrap_or_default()
        }
        Err(_) => Vec::new(),
    }
}

fn prom_value(port: u16, query: &str) -> Option<(f64, Json)> {
    let r = prom_query(port, query);
    let first = r.first()?;
    let v = first["value"][1].as_str()?.parse().ok()?;
    Some((v, first["metric"].clone()))
}

/// The alerts Prometheus holds, as (alertname, instance) -> (state, activeAt).
fn prom_alerts(port: u16) -> HashMap<(String, String), (String, String)> {
    let text = http_get(&format!("http://127.0.0.1:{port}/api/v1/alerts")).unwrap_or_default();
    let v: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
    let s = |j: &Json| j.as_str().unwrap_or_default().to_owned();
    v["data"]["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            (
                (s(&a["labels"]["alertname"]), s(&a["labels"]["instance"])),
                (s(&a["state"]), s(&a["activeAt"])),
            )
        })
        .collect()
}

fn wait_until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The test's ports in place of the doc's, as whole numbers (so `r1:6379` and `-p 6379`
/// change alike, `16379` does not).
struct Ports(Vec<(&'static str, u16)>);

impl Ports {
    fn apply(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let bytes = text.as_bytes();
        let mut i = 0;
        'scan: while i < bytes.len() {
            for (from, to) in &self.0 {
                let end = i + from.len();
                if text[i..].starts_with(from)
                    && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric())
                    && (end == bytes.len() || !bytes[end].is_ascii_alphanumeric())
                {
                    out.push_str(&to.to_string());
                    i = end;
                    continue 'scan;
                }
            }
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
        out
    }
}

fn copy_tree(from: &Path, to: &Path, ports: &Ports) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target, ports);
        } else {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            std::fs::write(target, ports.apply(&text)).unwrap();
        }
    }
}

/// Stand-in for systemd (there is none in the test's namespace): `systemctl restart UNIT`
/// stops the unit's previous process and starts the unit file's ExecStart, with ARGS from
/// its EnvironmentFile split at whitespace as systemd does, as its User, from /, then waits
/// until it answers. Before that, it shortens the durations of the installed
/// configuration (intervals, for:, Alertmanager's waits) so the test takes seconds: the
/// only change besides ports.
const SYSTEMCTL: &str = r#"#!/bin/sh
set -eu
state=@STATE@
case "$1" in restart|start) ;; *) echo "systemctl (test stand-in): $1 not supported" >&2; exit 1;; esac
unit=${2%.service}
file=/lib/systemd/system/$unit.service
user=$(sed -n 's/^User=//p' "$file")
envfile=$(sed -n 's/^EnvironmentFile=-\{0,1\}//p' "$file")
exec_start=$(sed -n 's/^ExecStart=//p' "$file")
alive() { [ -d "/proc/$1" ] && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null; }
if [ -f "$state/$unit.pid" ]; then
  pid=$(cat "$state/$unit.pid")
  kill "$pid" 2>/dev/null || true
  i=0; while alive "$pid" && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
fi
[ ! -f /etc/prometheus/prometheus.yml ] || sed -i -E 's/^( *(scrape|evaluation)_interval:) 15s$/\1 300ms/' /etc/prometheus/prometheus.yml
[ ! -f /etc/prometheus/jwks_rules.yml ] || sed -i -E 's/^( *(for|keep_firing_for):) ([0-9]+)m$/\1 \3s/' /etc/prometheus/jwks_rules.yml
[ ! -f /etc/prometheus/alertmanager.yml ] || sed -i -E 's/^( *group_wait:) 30s$/\1 100ms/; s/^( *group_interval:) 5m$/\1 250ms/' /etc/prometheus/alertmanager.yml
ARGS=
. "$envfile"
extra=$(cat "$state/$unit.extra" 2>/dev/null || true)
set -f
eval "set -- $exec_start $extra"
cd /
setsid setpriv --reuid="$user" --regid="$user" --init-groups -- "$@" </dev/null >>"$state/$unit.log" 2>&1 &
pid=$!
echo "$pid" > "$state/$unit.pid"
ready=$(cat "$state/$unit.ready")
i=0
until curl -fsS -o /dev/null "$ready" 2>/dev/null; do
  if ! alive "$pid" || [ $i -ge 600 ]; then
    echo "$unit did not start:" >&2; cat "$state/$unit.log" >&2; exit 1
  fi
  sleep 0.05; i=$((i+1))
done
"#;

const UNITS: [&str; 3] = [
    "prometheus-redis-exporter",
    "prometheus",
    "prometheus-alertmanager",
];

/// The private mount and PID namespace the doc's recipes run in (`unshare --kill-child`):
/// killing it ends, and reaps, every daemon started in it, however the test ends.
struct Namespace {
    child: std::process::Child,
    state: PathBuf,
}

impl Namespace {
    /// Runs `sh -eu -c code` in the namespace's mounts, from `cwd`.
    fn sh(&self, cwd: &Path, code: &str) -> Output {
        Command::new("nsenter")
            .arg(format!("--mount=/proc/{}/ns/mnt", self.child.id()))
            .args(["--", "sh", "-eu", "-c", code])
            .current_dir(cwd)
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    }

    /// Every daemon answers (the stand-in systemctl waited for that once).
    fn assert_running(&self) {
        for unit in UNITS {
            let url = std::fs::read_to_string(self.state.join(format!("{unit}.ready"))).unwrap();
            assert!(
                http_get(&url).is_some(),
                "{unit} stopped answering:\n{}",
                std::fs::read_to_string(self.state.join(format!("{unit}.log"))).unwrap_or_default()
            );
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Prometheus's value of `query` once it equals `want`.
fn wait_value(prom: u16, query: &str, want: f64) -> Json {
    wait_until(&format!("{query} == {want}"), 30, || {
        prom_value(prom, query)
            .filter(|(v, _)| *v == want)
            .map(|(_, m)| m)
    })
}

fn slack_text(bodies: &Arc<Mutex<Vec<String>>>, alert: &str) -> String {
    let body = wait_until(&format!("{alert} in Slack"), 30, || {
        bodies
            .lock()
            .unwrap()
            .iter()
            .find(|b| b.contains(alert))
            .cloned()
    });
    let payload: Json = serde_json::from_str(&body).expect("Slack payload is JSON");
    assert_eq!(payload["channel"], "#auth-oncall");
    let attachment = &payload["attachments"][0];
    assert!(
        attachment["title"]
            .as_str()
            .unwrap()
            .starts_with(&format!("[FIRING] {alert} (")),
        "{body}"
    );
    attachment["text"].as_str().unwrap().to_owned()
}

#[test]
fn docs_recipes_run_verbatim_and_alerts_reach_slack() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        println!(
            "SKIPPED: docs/monitoring.md's recipes write under /etc/prometheus and start \
             services as the user prometheus; run this test as root (it uses unshare -m \
             and a tmpfs, so the host is not changed)"
        );
        return;
    }
    let probe = Command::new("unshare")
        .args(["-m", "true"])
        .status()
        .unwrap();
    if !probe.success() {
        println!("SKIPPED: unshare -m is not permitted here");
        return;
    }

    // Two Redis nodes: one with the module (fault injection on), one without.
    // Verifiers count as behind 100 ms after the key set moved on, not a minute.
    let redis = Server::with_module_args(
        &["fault-injection", "yes", "verifier-behind-ms", "100"],
        &[],
    );
    let plain = Server::plain();
    let mut con = redis.conn();
    let mut db3 = redis::Client::open(format!("redis://127.0.0.1:{}/3", redis.port))
        .unwrap()
        .get_connection()
        .unwrap();
    rotate(
        &mut con,
        "jwks:{auth}",
        &["ADD", &ec("k1", 1), "PROMOTE", "k1"],
    )
    .unwrap();
    rotate(&mut con, "jwks:{old}", &["ADD", &ec("k1", 1)]).unwrap();
    // A name with ':' right after the db.
    rotate(&mut db3, "7:tenant:{x}", &["ADD", &ec("k1", 1)]).unwrap();
    let _: String = cmd("JWKS.GET", &["jwks:{auth}"]).query(&mut con).unwrap();
    let _: i64 = cmd("JWKS.INVALIDATE", &["jwks:{auth}"])
        .query(&mut con)
        .unwrap();

    let (slack_port, bodies) = slack_listener();
    let (exporter, prom, am) = (free_port(), free_port(), free_port());
    let ports = Ports(vec![
        ("6379", redis.port),
        ("6380", plain.port),
        ("9121", exporter),
        ("9090", prom),
        ("9093", am),
    ]);

    // A checkout with the test's ports, the stand-in systemctl, and the daemons' state.
    let dir = tempfile::tempdir().unwrap();
    let checkout = dir.path().join("checkout");
    copy_tree(
        &repo_path("monitoring"),
        &checkout.join("monitoring"),
        &ports,
    );
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("bin")).unwrap();
    let systemctl = state.join("bin/systemctl");
    std::fs::write(
        &systemctl,
        SYSTEMCTL.replace("@STATE@", &state.display().to_string()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (unit, ready) in [
        (
            "prometheus-redis-exporter",
            format!("http://127.0.0.1:{exporter}/metrics"),
        ),
        ("prometheus", format!("http://127.0.0.1:{prom}/-/ready")),
        (
            "prometheus-alertmanager",
            format!("http://127.0.0.1:{am}/-/ready"),
        ),
    ] {
        std::fs::write(state.join(format!("{unit}.ready")), ready).unwrap();
    }
    // Debian's prometheus listens on :9090 unless told otherwise; the doc leaves it so.
    std::fs::write(
        state.join("prometheus.extra"),
        format!("--web.listen-address=127.0.0.1:{prom}"),
    )
    .unwrap();
    for unit in ["prometheus-redis-exporter", "prometheus-alertmanager"] {
        std::fs::copy(
            format!("/etc/default/{unit}"),
            state.join(format!("default-{unit}")),
        )
        .unwrap();
    }
    // Part 1: every block up to "Check that it works", as one shell session (the webhook
    // URL is what the operator pastes at `read`).
    let blocks = doc_blocks();
    let run: Vec<&Block> = blocks.iter().filter(|b| b.info == RUN).collect();
    let split = run
        .iter()
        .position(|b| b.section == "Check that it works")
        .expect("a Check section");
    let setup: String = run[..split]
        .iter()
        .map(|b| ports.apply(&b.code))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(state.join("setup.sh"), &setup).unwrap();
    std::fs::write(state.join("apt.conf"), "APT::Get::Simulate \"true\";\n").unwrap();
    let namespace = format!(
        "mount -t tmpfs -o mode=0755 tmpfs /etc/prometheus\n\
         mount -t tmpfs -o mode=0755 tmpfs /var/lib/prometheus\n\
         chown prometheus:prometheus /var/lib/prometheus\n\
         mount --bind {s}/default-prometheus-redis-exporter /etc/default/prometheus-redis-exporter\n\
         mount --bind {s}/default-prometheus-alertmanager /etc/default/prometheus-alertmanager\n\
         cd {checkout}\n\
         export PATH={s}/bin:$PATH APT_CONFIG={s}/apt.conf\n\
         status=0\n\
         sh -eux {s}/setup.sh <{s}/stdin >{s}/setup.log 2>&1 || status=$?\n\
         echo $status >{s}/setup.status\n\
         exec sleep 3600\n",
        s = state.display(),
        checkout = checkout.display(),
    );
    let hook = format!("http://127.0.0.1:{slack_port}/services/T000/B000/XXXX");
    std::fs::write(state.join("stdin"), format!("{hook}\n")).unwrap();
    let started = Instant::now();
    let ns_log = std::fs::File::create(state.join("namespace.log")).unwrap();
    let daemons = Namespace {
        child: Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--pid", "--fork"])
            .args([
                "--kill-child",
                "--mount-proc",
                "sh",
                "-eu",
                "-c",
                &namespace,
            ])
            .stdin(Stdio::null())
            .stdout(ns_log.try_clone().unwrap())
            .stderr(ns_log)
            .spawn()
            .expect("unshare"),
        state: state.clone(),
    };
    let status = wait_until("the doc's recipes", 60, || {
        std::fs::read_to_string(state.join("setup.status"))
            .ok()
            .filter(|s| s.ends_with('\n'))
    });
    let setup_out = std::fs::read_to_string(state.join("setup.log")).unwrap()
        + &std::fs::read_to_string(state.join("namespace.log")).unwrap();
    assert_eq!(status.trim(), "0", "the doc's recipes failed:\n{setup_out}");
    println!("doc recipes ran in {:?}", started.elapsed());
    assert!(setup_out.contains(" 0 newly installed"), "{setup_out}");
    assert!(
        setup_out.contains("redis_script_values{key=\"jwt_jwks_module_up\"} 1\n"),
        "{setup_out}"
    );
    daemons.assert_running();

    // The secrets: root:prometheus 0640; the service user reads them, others cannot.
    let perms = daemons.sh(
        &checkout,
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

    // instance is the Redis node, for both nodes; the numbers are INFO jwks's.
    let node = format!("127.0.0.1:{}", redis.port);
    let bare = format!("127.0.0.1:{}", plain.port);
    let sel = |name: &str, extra: &str| format!("{name}{{instance=\"{node}\"{extra}}}");
    let info = info_jwks(&mut con);
    let labels = wait_value(
        prom,
        &sel("jwt_jwks_cache_invalidations_total", ""),
        info["jwt_jwks_cache_invalidations_total"] as f64,
    );
    assert_eq!(labels["job"], "redis_jwks");
    wait_value(
        prom,
        &sel("jwt_jwks_cache_invalidation_errors_total", ""),
        0.0,
    );
    wait_value(prom, &sel("jwt_jwks_rotations_total", ""), 3.0);
    wait_value(prom, &sel("jwt_jwks_module_up", ""), 1.0);
    wait_value(
        prom,
        &format!("jwt_jwks_module_up{{instance=\"{bare}\"}}"),
        0.0,
    );
    wait_value(prom, &format!("redis_up{{instance=\"{bare}\"}}"), 1.0);
    wait_value(prom, &sel("jwt_jwks_key_sets", ",db=\"0\""), 2.0);
    wait_value(prom, &sel("jwt_jwks_key_sets", ",db=\"3\""), 1.0);
    let keysets: BTreeSet<(String, String)> = prom_query(
        prom,
        &sel("jwt_jwks_keyset_cache_invalidation_errors_total", ""),
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
            &sel("redis_stream_length", ",stream=\"jwks:{auth}:audit\""),
        )
    });
    assert!(len >= 3.0, "{len}");

    // A few seconds of samples before the errors, so that increase() over the alert's
    // window hardly extrapolates and the rounded counts are exact.
    wait_until("12 samples", 30, || {
        prom_value(
            prom,
            &format!(
                "count_over_time({}[1m]) >= 12",
                sel("jwt_jwks_cache_invalidations_total", "")
            ),
        )
    });

    // Housekeeping before any error: a key set deleted. Nothing may fire for it.
    let _: i64 = cmd("DEL", &["jwks:{old}"]).query(&mut con).unwrap();
    wait_value(prom, &sel("jwt_jwks_key_sets", ",db=\"0\""), 1.0);

    // Two real invalidation failures in one transaction (so one scrape sees both), then a
    // rotation that invalidates fine.
    let _: () = cmd("JWKS.DEBUG", &["FAIL-INVALIDATIONS", "2"])
        .query(&mut con)
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
        .query(&mut con)
        .unwrap();
    let info = info_jwks(&mut con);
    assert_eq!(info["jwt_jwks_cache_invalidation_errors_total"], 2);
    wait_value(
        prom,
        &sel("jwt_jwks_cache_invalidation_errors_total", ""),
        2.0,
    );

    // Slack: the node, both key sets, integer counts, the runbook.
    let errors = slack_text(&bodies, "JwksCacheInvalidationErrors");
    for want in [
        format!("*JWKS cache invalidation failed on Redis node {node}*"),
        format!("2 JWKS cache invalidation(s) failed on {node} in the last 10 minutes."),
        "Key set(s) with errors: 7:tenant:{x} (db 3: 1), jwks:{auth} (db 0: 1).".into(),
        "Runbook: docs/monitoring.md#jwkscacheinvalidationerrors".into(),
    ] {
        assert!(errors.contains(&want), "{want:?} not in:\n{errors}");
    }
    // The module is missing on the other node: that, not "unreachable".
    let missing = slack_text(&bodies, "JwksModuleNotLoaded");
    for want in [
        format!("*redis-jwks is not loaded on Redis node {bare}*"),
        "Runbook: docs/monitoring.md#jwksmodulenotloaded".into(),
    ] {
        assert!(missing.contains(&want), "{want:?} not in:\n{missing}");
    }

    // A key set whose generator stopped: a PROMOTE-AFTER policy, the current key older than
    // it, and no next key published.
    rotate(
        &mut con,
        "jwks:{stall}",
        &["ADD", &ec("s1", 4), "PROMOTE", "s1"],
    )
    .unwrap();
    let _: redis::Value = cmd("JWKS.POLICY", &["jwks:{stall}", "PROMOTE-AFTER", "300"])
        .query(&mut con)
        .unwrap();
    let stalled = slack_text(&bodies, "JwksRotationStalled");
    for want in [
        "Key rotation stalled for key set jwks:{stall} (db 0)".to_string(),
        format!("on Redis node(s) {node}"),
        "Runbook: docs/monitoring.md#jwksrotationstalled".into(),
    ] {
        assert!(stalled.contains(&want), "{want:?} not in:\n{stalled}");
    }
    // A next key resolves it.
    rotate(&mut con, "jwks:{stall}", &["ADD", &ec("s2", 5)]).unwrap();

    // A verifier stuck on an old generation: the key set rotates, and it keeps acking the
    // generation before (it missed the change event); another acks the current one. The
    // acks outlive the test (10 minutes), so nothing resolves.
    let old = generation(&mut con, "jwks:{auth}");
    rotate(&mut con, "jwks:{auth}", &["ADD", &ec("k4", 6)]).unwrap();
    let now = generation(&mut con, "jwks:{auth}");
    assert_eq!(ack(&mut con, "jwks:{auth}", old, "stuck", 600_000), now);
    assert_eq!(ack(&mut con, "jwks:{auth}", now, "fresh", 600_000), now);
    wait_value(
        prom,
        &sel(
            "jwt_jwks_keyset_verifiers_behind",
            ",keyset=\"jwks:{auth}\"",
        ),
        1.0,
    );
    let behind = slack_text(&bodies, "JwksVerifiersBehind");
    for want in [
        "*Verifier(s) stuck on an old JWKS for key set jwks:{auth} (db 0)*".to_string(),
        format!("1 of 2 live verifier(s) of key set jwks:{{auth}} (db 0) on Redis node(s) {node} still hold an older generation"),
        "Runbook: docs/monitoring.md#jwksverifiersbehind".into(),
    ] {
        assert!(behind.contains(&want), "{want:?} not in:\n{behind}");
    }
    println!("Slack:\n{behind}");

    // Unknown kids: a verifier's connection (named, so the runbook's CLIENT LIST finds it)
    // looks up 1200 kids jwks:{auth} does not publish, in two halves so that Prometheus sees
    // the counter rise whatever it first scraped: 4/s over 5 minutes. A few on another key
    // set stay under the threshold.
    let mut verifier = redis.conn();
    let _: () = cmd("CLIENT", &["SETNAME", "verifier-a"])
        .query(&mut verifier)
        .unwrap();
    unknown_kids(&mut db3, "7:tenant:{x}", 5);
    unknown_kids(&mut verifier, "jwks:{auth}", 600);
    let auth_misses = sel(
        "jwt_jwks_keyset_unknown_kid_lookups_total",
        ",keyset=\"jwks:{auth}\"",
    );
    wait_value(prom, &auth_misses, 600.0);
    unknown_kids(&mut verifier, "jwks:{auth}", 600);
    wait_value(prom, &auth_misses, 1200.0);
    wait_value(prom, &sel("jwt_jwks_unknown_kid_lookups_total", ""), 1205.0);
    let spike = slack_text(&bodies, "JwksUnknownKidSpike");
    for want in [
        "*Unknown-kid lookups spike for key set jwks:{auth} (db 0)*".to_string(),
        "lookups per second of kids that key set jwks:{auth} (db 0) does not publish".into(),
        format!("by node: {node} "),
        "Runbook: docs/monitoring.md#jwksunknownkidspike".into(),
    ] {
        assert!(spike.contains(&want), "{want:?} not in:\n{spike}");
    }
    println!("Slack:\n{spike}");

    // Housekeeping while the error alert fires: delete a key set that failed. Its series
    // ends; the alert stays firing as the same alert.
    let key = ("JwksCacheInvalidationErrors".to_string(), node.clone());
    let before = prom_alerts(prom)[&key].clone();
    assert_eq!(before.0, "firing");
    let _: i64 = cmd("DEL", &["7:tenant:{x}"]).query(&mut db3).unwrap();
    wait_until("the deleted key set's series to end", 30, || {
        prom_query(
            prom,
            &sel(
                "jwt_jwks_keyset_cache_invalidation_errors_total",
                ",keyset=\"7:tenant:{x}\"",
            ),
        )
        .is_empty()
        .then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(prom_alerts(prom)[&key], before);

    // Part 2: "Check that it works" and the runbook, block by block.
    println!(
        "{} blocks in one session, then {} one by one",
        split,
        run.len() - split
    );
    for block in &run[split..] {
        let code = ports.apply(&block.code);
        let out = daemons.sh(&checkout, &code);
        let said = text(&out);
        assert!(out.status.success(), "{code}\nfailed:\n{said}");
        for bad in ["ERR", "NOPERM", "WRONGPASS", "NOAUTH"] {
            assert!(
                !said.lines().any(|l| l.starts_with(bad)),
                "{code}\nsaid:\n{said}"
            );
        }
        let expect: &[&str] = if code.contains("JWKS.VERIFIERS") {
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
        };
        // INFO's lines end in \r\n; the expectations are whole lines.
        let lines = said.replace('\r', "");
        for want in expect {
            assert!(lines.contains(want), "{code}\nsaid:\n{said}");
        }
    }

    // Nothing else ever fired, nothing resolved.
    daemons.assert_running();
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
    for body in bodies.lock().unwrap().iter() {
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
    println!("end to end in {:?}", started.elapsed());
}
