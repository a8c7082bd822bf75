//! Monitoring, end to end with the real programs from Debian's packages: promtool and
//! amtool on the shipped files, then Redis with the module -> redis_exporter with the
//! shipped script -> Prometheus with the shipped rules -> Alertmanager with the shipped
//! config -> a local HTTP listener standing in for Slack. Loopback only.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
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
    run_tool("amtool", &["check-config", "alertmanager/alertmanager.yml"]);
}

/// The exporter script never errors (an error would fail the whole scrape) and returns
/// name/value strings that parse as numbers, with or without the module loaded.
#[test]
fn exporter_script_returns_numbers_and_never_errors() {
    let script = std::fs::read_to_string(repo_path("monitoring/jwks_exporter.lua")).unwrap();
    let with = Server::start();
    let mut con = with.conn();
    rotate(&mut con, "a", &["ADD", &ec("k", 1)]).unwrap();
    rotate(&mut con, "b", &["ADD", &ec("k", 1)]).unwrap();
    let _: i64 = cmd("JWKS.INVALIDATE", &["b"]).query(&mut con).unwrap();
    let flat: Vec<String> = cmd("EVAL", &[script.as_str(), "0"])
        .query(&mut con)
        .unwrap();
    let pairs: std::collections::HashMap<&str, f64> = flat
        .chunks(2)
        .map(|p| (p[0].as_str(), p[1].parse().expect("numeric value")))
        .collect();
    assert_eq!(pairs["jwt_jwks_cache_invalidations_total"], 3.0);
    assert_eq!(pairs["jwt_jwks_rotations_total"], 2.0);
    assert_eq!(pairs["jwt_jwks_key_sets"], 2.0);
    assert_eq!(pairs["jwt_jwks_module_up"], 1.0);

    let without = Server::plain();
    let flat: Vec<String> = cmd("EVAL", &[script.as_str(), "0"])
        .query(&mut without.conn())
        .unwrap();
    assert_eq!(flat, vec!["jwt_jwks_module_up", "0"]);
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

fn wait_until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn hget(con: &mut redis::Connection, field: &str) -> f64 {
    let v: Option<i64> = cmd("HGET", &["jwks:{auth}:metrics", field])
        .query(con)
        .unwrap();
    v.unwrap_or(0) as f64
}

#[test]
fn invalidation_errors_reach_prometheus_and_page_slack() {
    let redis = Server::with_module_args(&["fault-injection", "yes"], &[]);
    let mut con = redis.conn();
    rotate(
        &mut con,
        "jwks:{auth}",
        &["ADD", &ec("k1", 1), "PROMOTE", "k1"],
    )
    .unwrap();
    let _: String = cmd("JWKS.GET", &["jwks:{auth}"]).query(&mut con).unwrap();
    let _: i64 = cmd("JWKS.INVALIDATE", &["jwks:{auth}"])
        .query(&mut con)
        .unwrap();

    // The exporter runs as the least-privileged user the README documents.
    let acl: Vec<String> = std::fs::read_to_string(repo_path("monitoring/exporter.acl"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("user jwks_exporter "))
        .expect("exporter ACL line")
        .split_whitespace()
        .skip(1)
        .map(|w| w.replace(">CHANGE-ME", ">exporter-secret"))
        .collect();
    let _: () = cmd("ACL", &[&["SETUSER".to_string()], acl.as_slice()].concat())
        .query(&mut con)
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (slack_port, bodies) = slack_listener();

    // redis_exporter with the shipped script and the audit stream.
    let exporter_port = free_port();
    let exporter_log = d.join("exporter.log");
    let mut exporter = Proc::spawn(
        "prometheus-redis-exporter",
        &[
            format!("-redis.addr=redis://127.0.0.1:{}", redis.port),
            "-redis.user=jwks_exporter".into(),
            "-redis.password=exporter-secret".into(),
            format!(
                "-script={}",
                repo_path("monitoring/jwks_exporter.lua").display()
            ),
            "-check-single-streams=jwks:{auth}:audit".into(),
            format!("-web.listen-address=127.0.0.1:{exporter_port}"),
        ],
        &exporter_log,
    );

    // Alertmanager with the shipped config; only the secret's path and the waits differ.
    let hook = d.join("slack_webhook_url");
    std::fs::write(
        &hook,
        format!("http://127.0.0.1:{slack_port}/services/T000/B000/XXXX\n"),
    )
    .unwrap();
    let am_config = std::fs::read_to_string(repo_path("monitoring/alertmanager/alertmanager.yml"))
        .unwrap()
        .replace(
            "/etc/alertmanager/slack_webhook_url",
            &hook.display().to_string(),
        )
        .replace("group_wait: 30s", "group_wait: 1s")
        .replace("group_interval: 5m", "group_interval: 1s");
    std::fs::write(d.join("alertmanager.yml"), am_config).unwrap();
    let am_port = free_port();
    let am_log = d.join("alertmanager.log");
    let mut alertmanager = Proc::spawn(
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", d.join("alertmanager.yml").display()),
            format!("--storage.path={}", d.join("am-data").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".into(),
        ],
        &am_log,
    );

    // Prometheus with the shipped rules, scraping every second.
    let prom_port = free_port();
    let prom_config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n\
         scrape_configs:\n  - job_name: redis_exporter\n    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n",
        rules = repo_path("monitoring/prometheus/jwks_rules.yml").display()
    );
    std::fs::write(d.join("prometheus.yml"), prom_config).unwrap();
    let prom_log = d.join("prometheus.log");
    let mut prometheus = Proc::spawn(
        "prometheus",
        &[
            format!("--config.file={}", d.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", d.join("prom-data").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
        &prom_log,
    );

    // The spec's names exist in Prometheus, as counters with an instance label, with the
    // values in the hash.
    let want = hget(&mut con, "jwt_jwks_cache_invalidations_total");
    assert_eq!(want, 2.0);
    let (_, labels) = wait_until("invalidations in Prometheus", 90, || {
        exporter.assert_running(&exporter_log);
        prometheus.assert_running(&prom_log);
        alertmanager.assert_running(&am_log);
        prom_value(prom_port, "jwt_jwks_cache_invalidations_total").filter(|(v, _)| *v == want)
    });
    assert_eq!(labels["instance"], format!("127.0.0.1:{exporter_port}"));
    let (errors, _) = wait_until("errors series", 30, || {
        prom_value(prom_port, "jwt_jwks_cache_invalidation_errors_total")
    });
    assert_eq!(errors, 0.0);
    let (up, _) = wait_until("module up", 30, || {
        prom_value(prom_port, "jwt_jwks_module_up")
    });
    assert_eq!(up, 1.0);
    let (redis_up, _) = wait_until("redis_up", 30, || prom_value(prom_port, "redis_up"));
    assert_eq!(redis_up, 1.0);
    let (len, _) = wait_until("audit stream length", 30, || {
        prom_value(
            prom_port,
            "redis_stream_length{stream=\"jwks:{auth}:audit\"}",
        )
    });
    assert!(len >= 3.0, "{len}");

    // A real invalidation failure, driven through the module.
    let _: () = cmd("JWKS.DEBUG", &["FAIL-INVALIDATIONS", "1"])
        .query(&mut con)
        .unwrap();
    rotate(&mut con, "jwks:{auth}", &["ADD", &ec("k2", 2)]).unwrap();
    assert_eq!(
        hget(&mut con, "jwt_jwks_cache_invalidation_errors_total"),
        1.0
    );
    wait_until("errors = 1 in Prometheus", 30, || {
        prom_value(prom_port, "jwt_jwks_cache_invalidation_errors_total").filter(|(v, _)| *v == 1.0)
    });
    let (rotations, _) = wait_until("rotations", 30, || {
        prom_value(prom_port, "jwt_jwks_rotations_total").filter(|(v, _)| *v == 2.0)
    });
    assert_eq!(rotations, hget(&mut con, "jwt_jwks_rotations_total"));
    assert_eq!(
        wait_until("invalidations", 10, || prom_value(
            prom_port,
            "jwt_jwks_cache_invalidations_total"
        ))
        .0,
        hget(&mut con, "jwt_jwks_cache_invalidations_total")
    );

    // Slack gets a payload naming the alert.
    let body = wait_until("the Slack notification", 90, || {
        alertmanager.assert_running(&am_log);
        bodies
            .lock()
            .unwrap()
            .iter()
            .find(|b| b.contains("JwksCacheInvalidationErrors"))
            .cloned()
    });
    let payload: Json = serde_json::from_str(&body).expect("Slack payload is JSON");
    assert_eq!(payload["channel"], "#auth-oncall");
    let attachment = &payload["attachments"][0];
    assert!(attachment["title"]
        .as_str()
        .unwrap()
        .contains("JwksCacheInvalidationErrors"));
    assert!(attachment["text"]
        .as_str()
        .unwrap()
        .contains("JWKS_CACHE_INVALIDATION_FAILED"));
}
