//! Numbers and limits that cannot be fooled: key sets counted per db and only as the
//! module's own type; refused commands never grow memory; no replicated effect can fail on
//! a replica; an audit stream that can take no entry refuses the change; load-time
//! arguments are checked like CONFIG SET; small-order Ed25519 keys are refused.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use redis::Connection;

fn stats(con: &mut Connection) -> HashMap<String, i64> {
    let flat: Vec<String> = cmd("JWKS.STATS", &[] as &[&str]).query(con).unwrap();
    flat.chunks(2)
        .map(|p| (p[0].clone(), p[1].parse::<f64>().unwrap() as i64))
        .collect()
}

fn run(con: &mut Connection, args: &[&str]) {
    let _: redis::Value = cmd(args[0], &args[1..]).query(con).unwrap();
}

#[test]
fn key_sets_are_counted_per_db_and_only_as_key_sets() {
    let server = Server::start();
    let mut con = server.conn();
    run(&mut con, &["SELECT", "1"]);
    rotate(&mut con, "jwks:{x}", &["ADD", &ec("a", 1)]).unwrap();
    run(&mut con, &["SELECT", "0"]);
    // A hash that merely ends in :metrics is not a key set and its numbers are not ours.
    run(
        &mut con,
        &[
            "HSET",
            "app:user42:metrics",
            "jwt_jwks_cache_invalidation_errors_total",
            "777",
        ],
    );
    let s = stats(&mut con);
    assert_eq!(s["jwt_jwks_key_sets"], 1);
    assert_eq!(s["jwt_jwks_key_sets:1"], 1);
    assert_eq!(s["jwt_jwks_cache_invalidation_errors_total"], 0);
    assert_eq!(s["jwt_jwks_rotations_total"], 1);
    assert!(s.keys().all(|k| !k.contains("user42")), "{s:?}");
    // Arrivals by RESTORE, COPY and RENAME count; a deletion does not leave a ghost.
    run(&mut con, &["SELECT", "1"]);
    let dump: Vec<u8> = cmd("DUMP", &["jwks:{x}"]).query(&mut con).unwrap();
    run(&mut con, &["SELECT", "0"]);
    let _: () = redis::cmd("RESTORE")
        .arg("jwks:{r}")
        .arg(0)
        .arg(dump)
        .query(&mut con)
        .unwrap();
    run(&mut con, &["COPY", "jwks:{r}", "jwks:{c}"]);
    run(&mut con, &["RENAME", "jwks:{c}", "jwks:{n}"]);
    // Without the keyspace hook a renamed key set is registered at its first use.
    let _: redis::Value = cmd("JWKS.INFO", &["jwks:{n}"]).query(&mut con).unwrap();
    let s = stats(&mut con);
    assert_eq!((s["jwt_jwks_key_sets"], s["jwt_jwks_key_sets:0"]), (3, 2));
    let _: redis::Value = cmd("JWKS.POLICY", &["jwks:{n}", "PROMOTE-AFTER", "60000"])
        .query(&mut con)
        .unwrap();
    let s = stats(&mut con);
    assert!(
        s.contains_key("jwt_jwks_keyset_next_key_published:0:jwks:{n}"),
        "{s:?}"
    );
    assert!(!s.keys().any(|k| k.ends_with(":jwks:{c}")), "{s:?}");
    run(&mut con, &["DEL", "jwks:{r}"]);
    run(&mut con, &["MOVE", "jwks:{n}", "2"]);
    run(&mut con, &["SELECT", "2"]);
    let _: redis::Value = cmd("JWKS.INFO", &["jwks:{n}"]).query(&mut con).unwrap();
    run(&mut con, &["SELECT", "0"]);
    let s = stats(&mut con);
    assert_eq!(s["jwt_jwks_key_sets"], 2);
    assert_eq!(s["jwt_jwks_key_sets:2"], 1);
    run(&mut con, &["SWAPDB", "1", "2"]);
    let s = stats(&mut con);
    assert_eq!((s["jwt_jwks_key_sets:1"], s["jwt_jwks_key_sets:2"]), (1, 1));
    run(&mut con, &["FLUSHDB"]);
    run(&mut con, &["SELECT", "2"]);
    run(&mut con, &["FLUSHDB"]);
    assert_eq!(stats(&mut con)["jwt_jwks_key_sets"], 1);
    // And across a reload (RDB) the count is rebuilt from what was loaded.
    run(&mut con, &["DEBUG", "RELOAD"]);
    assert_eq!(stats(&mut con)["jwt_jwks_key_sets"], 1);
}

#[test]
fn replicas_and_migrate_targets_count_what_they_hold() {
    let primary = Server::start();
    let replica = Server::start();
    let other = Server::start();
    let mut p = primary.conn();
    let mut r = replica.conn();
    let mut o = other.conn();
    rotate(&mut p, "jwks:{a}", &["ADD", &ec("a", 1)]).unwrap();
    run(
        &mut r,
        &["REPLICAOF", "127.0.0.1", &primary.port.to_string()],
    );
    rotate(&mut p, "jwks:{b}", &["ADD", &ec("b", 2)]).unwrap();
    let _: i64 = cmd("WAIT", &["1", "5000"]).query(&mut p).unwrap();
    wait_for("replica holds both", || {
        stats(&mut r)["jwt_jwks_key_sets"] == 2
    });
    let _: redis::Value = cmd(
        "MIGRATE",
        &[
            "127.0.0.1",
            &other.port.to_string(),
            "jwks:{b}",
            "0",
            "5000",
        ],
    )
    .query(&mut p)
    .unwrap();
    assert_eq!(stats(&mut o)["jwt_jwks_key_sets"], 1);
    assert_eq!(stats(&mut p)["jwt_jwks_key_sets"], 1);
    wait_for("replica follows", || {
        stats(&mut r)["jwt_jwks_key_sets"] == 1
    });
}

#[test]
fn refused_and_keyless_commands_never_grow_memory() {
    let server = Server::with_args(&["--maxmemory", "20mb", "--maxmemory-policy", "noeviction"]);
    let mut con = server.conn();
    rotate(&mut con, "jwks:{auth}", &["ADD", &ec("a", 1)]).unwrap();
    let keys: i64 = cmd("DBSIZE", &[] as &[&str]).query(&mut con).unwrap();
    let before = used_memory(&mut con);
    let long = "n".repeat(400);
    let bad_jwk = r#"{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}"#;
    for chunk in 0..100 {
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            let name = format!("{long}:{chunk}:{i}");
            pipe.cmd("JWKS.INVALIDATE").arg(&name).ignore();
            pipe.cmd("JWKS.ROTATE")
                .arg(&name)
                .arg("ADD")
                .arg(bad_jwk)
                .ignore();
        }
        // Every command is refused; the pipeline's own reply is Ok(()).
        let _: redis::RedisResult<()> = pipe.query(&mut con);
    }
    let after = used_memory(&mut con);
    let grown: i64 = cmd("DBSIZE", &[] as &[&str]).query(&mut con).unwrap();
    assert_eq!(grown, keys, "refused commands created keys");
    assert!(after - before < 512 * 1024, "{before} -> {after}");
    let started = Instant::now();
    let s = stats(&mut con);
    assert_eq!(s["jwt_jwks_key_sets"], 1);
    assert!(started.elapsed() < Duration::from_millis(200));
}

#[test]
fn a_saturated_counter_replicates_as_its_value() {
    let primary = Server::start();
    let replica = Server::start();
    let mut p = primary.conn();
    let mut r = replica.conn();
    run(
        &mut r,
        &["REPLICAOF", "127.0.0.1", &primary.port.to_string()],
    );
    rotate(&mut p, "jwks:{a}", &["ADD", &ec("a", 1)]).unwrap();
    let max = i64::MAX.to_string();
    run(
        &mut p,
        &["HSET", "jwks:{a}:metrics", "jwt_jwks_rotations_total", &max],
    );
    rotate(&mut p, "jwks:{a}", &["ADD", &ec("b", 2)]).unwrap();
    let v: String = cmd("HGET", &["jwks:{a}:metrics", "jwt_jwks_rotations_total"])
        .query(&mut p)
        .unwrap();
    assert_eq!(v, max);
    let _: i64 = cmd("WAIT", &["1", "5000"]).query(&mut p).unwrap();
    wait_for("same data", || digest(&mut p) == digest(&mut r));
    assert!(!replica.log().contains("overflow"), "{}", replica.log());
}

#[test]
fn an_audit_stream_at_its_last_id_refuses_the_change() {
    let server = Server::start();
    let mut con = server.conn();
    rotate(&mut con, "jwks:{a}", &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let max = format!("{}-{}", u64::MAX, u64::MAX);
    run(&mut con, &["XADD", "jwks:{a}:audit", &max, "f", "v"]);
    let before = digest(&mut con);
    let err = rotate(&mut con, "jwks:{a}", &["ADD", &ec("b", 2)]).unwrap_err();
    assert_eq!(err.code(), Some("AUDITFULL"), "{err}");
    assert!(err.to_string().contains("nothing was changed"), "{err}");
    let err = cmd("JWKS.INVALIDATE", &["jwks:{a}"])
        .query::<i64>(&mut con)
        .unwrap_err();
    assert_eq!(err.code(), Some("AUDITFULL"), "{err}");
    assert_eq!(digest(&mut con), before);
}

/// Starts redis-server with the module and `args`, expecting it to refuse to start.
fn refused_at_load(module_args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let mut all: Vec<String> = vec![
        "--port".into(),
        free_port().to_string(),
        "--logfile".into(),
        log.display().to_string(),
        "--loadmodule".into(),
        module_path().display().to_string(),
    ];
    all.extend(module_args.iter().map(|s| s.to_string()));
    let status = Command::new(server_bin())
        .args(&all)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "{module_args:?} loaded");
    std::fs::read_to_string(log).unwrap_or_default()
}

#[test]
fn load_time_arguments_are_checked_like_config_set() {
    for (args, needle) in [
        (
            &["cache-ttl", "-5"][..],
            "module argument 'cache-ttl' must be an integer from 1 to 31536000",
        ),
        (
            &["min-rsa-bits", "0"],
            "'min-rsa-bits' must be an integer from 1024 to 16384",
        ),
        (
            &["audit-maxlen", "0"],
            "'audit-maxlen' must be an integer from 1 to 100000000",
        ),
        (&["bogus", "1"], "'bogus' is not a redis-jwks configuration"),
        (
            &["jwks.cache-ttl", "600"],
            "as a module argument write 'cache-ttl'",
        ),
    ] {
        let log = refused_at_load(args);
        assert!(log.contains(needle), "{args:?}:\n{log}");
    }
    // Good arguments still apply.
    let server = Server::with_module_args(&["cache-ttl", "600", "min-rsa-bits", "3072"], &[]);
    let v: Vec<String> = cmd("CONFIG", &["GET", "jwks.cache-ttl"])
        .query(&mut server.conn())
        .unwrap();
    assert_eq!(v[1], "600");
}

#[test]
fn small_order_and_non_canonical_ed25519_keys_are_refused() {
    let server = Server::start();
    let mut con = server.conn();
    for x in [
        "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        // The point of order 2 (y = -1).
        "7P___________________________________________3",
        // y = p (non-canonical encoding of 0).
        "7f___________________________________________3",
    ] {
        let jwk = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}"#);
        let err = rotate(&mut con, "jwks:{e}", &["ADD", &jwk]).unwrap_err();
        assert_eq!(err.code(), Some("BADJWK"), "{x}: {err}");
    }
}
