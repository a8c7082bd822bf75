//! The exporter side: monitoring/jwks_exporter.lua's numbers, with and without the module;
//! the exporter's ACL user as the docs give it; Debian's redis_exporter running the script
//! in its multi-target mode.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use crate::support::{ack, doc_blocks, generation, http_get, info_jwks, unknown_kids};

/// The exporter script never errors (an error would fail the whole scrape) and returns
/// name/value strings that parse as numbers, with or without the module loaded.
#[test]
fn script_returns_numbers_and_never_errors() {
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

/// The issue-21 numbers reach the exporter's script: acks and unknown-kid lookups (node
/// counters), per key set the unknown-kid counter (from 0 for every key set held) and, once
/// acked, the live verifiers and those behind for longer than `verifier-behind-ms`.
#[test]
fn script_exports_verifier_and_unknown_kid_metrics() {
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
fn acl_is_the_docs_recipe() {
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

/// Debian's redis_exporter 1.45, multi-target: `-script` runs for `/scrape?target=` nodes,
/// each logging in as `-redis.user` with its password from the JSON password file; with
/// `-redis.addr=` empty, `/metrics` scrapes no node. A plain password file is fatal.
#[test]
fn multi_target_runs_the_script_with_a_json_password_file() {
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
