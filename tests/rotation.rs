//! The user-visible rotation cycle: add next -> promote -> retire, with the cache
//! invalidated in the same command and the audit trail and counters to show for it.

mod common;

use common::*;
use redis::Value;
use serde_json::Value as Json;

fn doc_kids(doc: &str) -> Vec<String> {
    let v: Json = serde_json::from_str(doc).unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn get(con: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("JWKS.GET").arg(key).query(con).unwrap()
}

#[test]
fn full_rotation_cycle_invalidates_the_cache_each_time() {
    let server = Server::start();
    let mut con = server.conn();
    let k = "jwks:{auth}";

    let r = rotate(&mut con, k, &["ADD", &rsa("k1", 1), "PROMOTE", "k1"]).unwrap();
    assert_eq!(as_int(&field(&r, "generation")), 1);
    assert_eq!(as_string(&field(&r, "current")), "k1");
    assert_eq!(strings(&field(&r, "published")), vec!["k1"]);
    assert_eq!(as_int(&field(&r, "invalidated")), 1);

    assert_eq!(doc_kids(&get(&mut con, k).unwrap()), vec!["k1"]);
    let cached: String = redis::cmd("GET")
        .arg("jwks:{auth}:cache")
        .query(&mut con)
        .unwrap();
    assert_eq!(doc_kids(&cached), vec!["k1"]);
    let ttl: i64 = redis::cmd("TTL")
        .arg("jwks:{auth}:cache")
        .query(&mut con)
        .unwrap();
    assert!((3590..=3600).contains(&ttl), "ttl {ttl}");

    // Add the next key: published at once, cache dropped in the same command.
    let r = rotate(&mut con, k, &["ADD", &ec("k2", 2)]).unwrap();
    assert_eq!(as_int(&field(&r, "cache_deleted")), 1);
    let exists: i64 = redis::cmd("EXISTS")
        .arg("jwks:{auth}:cache")
        .query(&mut con)
        .unwrap();
    assert_eq!(exists, 0);
    assert_eq!(doc_kids(&get(&mut con, k).unwrap()), vec!["k1", "k2"]);

    // Promote: k2 signs, k1 stays published as previous.
    let r = rotate(&mut con, k, &["REASON", "scheduled", "PROMOTE", "k2"]).unwrap();
    assert_eq!(as_string(&field(&r, "current")), "k2");
    assert_eq!(doc_kids(&get(&mut con, k).unwrap()), vec!["k2", "k1"]);

    // Retire the old key.
    let r = rotate(&mut con, k, &["RETIRE", "k1"]).unwrap();
    assert_eq!(as_int(&field(&r, "generation")), 4);
    assert_eq!(doc_kids(&get(&mut con, k).unwrap()), vec!["k2"]);

    let trail = audit(&mut con, "jwks:{auth}:audit");
    let actions: Vec<&str> = trail.iter().map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions,
        vec![
            "JWKS_KEY_ADDED",
            "JWKS_KEY_PROMOTED",
            "JWKS_CACHE_INVALIDATED",
            "JWKS_KEY_ADDED",
            "JWKS_CACHE_INVALIDATED",
            "JWKS_KEY_PROMOTED",
            "JWKS_CACHE_INVALIDATED",
            "JWKS_KEY_RETIRED",
            "JWKS_CACHE_INVALIDATED",
        ]
    );
    for e in &trail {
        assert!(
            e["timestamp"].ends_with('Z') && e["timestamp"].len() == 20,
            "{e:?}"
        );
        assert_eq!(e["user"], "default");
    }
    assert_eq!(trail[5]["reason"], "scheduled");
    assert_eq!(trail[5]["demoted"], "k1");
    assert_eq!(trail[7]["was"], "previous");

    let counters: std::collections::HashMap<String, i64> = redis::cmd("HGETALL")
        .arg("jwks:{auth}:metrics")
        .query(&mut con)
        .unwrap();
    assert_eq!(counters["jwt_jwks_cache_invalidations_total"], 4);
    assert_eq!(counters["jwt_jwks_rotations_total"], 4);
    assert_eq!(counters["jwt_jwks_cache_fills_total"], 4);
    assert!(!counters.contains_key("jwt_jwks_cache_invalidation_errors_total"));

    let log = server.wait_log("JWKS_CACHE_INVALIDATED key='jwks:{auth}'", 4);
    assert_eq!(
        log.matches("JWKS_CACHE_INVALIDATED key='jwks:{auth}'")
            .count(),
        4,
        "{log}"
    );
    // One line per rotation: the invalidation line carries the rotation's change count.
    assert!(log.contains("generation=4 changes=1 deleted="), "{log}");
}

#[test]
fn cache_hit_writes_nothing_and_miss_fills_once() {
    let server = Server::start();
    let mut con = server.conn();
    rotate(&mut con, "ks", &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let first = get(&mut con, "ks").unwrap();
    let dirty = |con: &mut redis::Connection| -> i64 {
        let info: String = redis::cmd("INFO").arg("persistence").query(con).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("rdb_changes_since_last_save:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let before = dirty(&mut con);
    for _ in 0..10 {
        assert_eq!(get(&mut con, "ks").unwrap(), first);
    }
    assert_eq!(dirty(&mut con), before, "cache hits must not write");
    let fills: i64 = redis::cmd("HGET")
        .arg("{ks}:metrics")
        .arg("jwt_jwks_cache_fills_total")
        .query(&mut con)
        .unwrap();
    assert_eq!(fills, 1);
    assert_eq!(get(&mut con, "missing"), None);
}

#[test]
fn invalidate_deletes_the_cache_and_reports_it() {
    let server = Server::start();
    let mut con = server.conn();
    rotate(&mut con, "ks", &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    get(&mut con, "ks").unwrap();
    let n: i64 = cmd("JWKS.INVALIDATE", &["ks", "REASON", "deploy"])
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
    let n: i64 = cmd("JWKS.INVALIDATE", &["ks"]).query(&mut con).unwrap();
    assert_eq!(n, 0);
    let trail = audit(&mut con, "{ks}:audit");
    let last_two: Vec<(&str, &str, &str)> = trail[trail.len() - 2..]
        .iter()
        .map(|e| {
            (
                e["action"].as_str(),
                e["reason"].as_str(),
                e["deleted"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        last_two,
        vec![
            ("JWKS_CACHE_INVALIDATED", "deploy", "1"),
            ("JWKS_CACHE_INVALIDATED", "manual", "0")
        ]
    );
}

#[test]
fn ifgen_makes_a_retried_rotation_apply_once() {
    let server = Server::start();
    let mut con = server.conn();
    rotate(
        &mut con,
        "ks",
        &["IFGEN", "0", "ADD", &ec("a", 1), "PROMOTE", "a"],
    )
    .unwrap();
    let add_b = ["IFGEN", "1", "ADD", &ec("b", 2)];
    rotate(&mut con, "ks", &add_b).unwrap();
    let err = rotate(&mut con, "ks", &add_b).unwrap_err();
    assert!(
        err.to_string()
            .contains("generation mismatch: IFGEN 1 but the key set is at generation 2"),
        "{err}"
    );
    let trail = audit(&mut con, "{ks}:audit");
    assert_eq!(
        trail
            .iter()
            .filter(|e| e["action"] == "JWKS_KEY_ADDED")
            .count(),
        2
    );
}

#[test]
fn replace_syncs_the_published_set() {
    let server = Server::start();
    let mut con = server.conn();
    rotate(
        &mut con,
        "ks",
        &["ADD", &ec("a", 1), "ADD", &ec("b", 2), "PROMOTE", "a"],
    )
    .unwrap();
    let doc = format!(r#"{{"keys":[{},{}]}}"#, ec("a", 1), ec("c", 3));
    let r = rotate(&mut con, "ks", &["REPLACE", &doc]).unwrap();
    assert_eq!(strings(&field(&r, "published")), vec!["a", "c"]);
    assert_eq!(as_int(&field(&r, "changed")), 2);
    // Same document again: nothing changes, nothing is written, generation stays.
    let again = rotate(&mut con, "ks", &["REPLACE", &doc]).unwrap();
    assert_eq!(as_int(&field(&again, "changed")), 0);
    assert_eq!(
        as_int(&field(&again, "generation")),
        as_int(&field(&r, "generation"))
    );
}

#[test]
fn replies_are_maps_on_resp3_and_flat_arrays_on_resp2() {
    let server = Server::start();
    let mut con2 = server.conn();
    let mut con3 = server.conn_resp3();
    let r2 = rotate(&mut con2, "ks", &["ADD", &ec("a", 1)]).unwrap();
    assert!(matches!(r2, Value::Array(_)), "{r2:?}");
    let r3 = rotate(&mut con3, "ks", &["PROMOTE", "a"]).unwrap();
    assert!(matches!(r3, Value::Map(_)), "{r3:?}");
    let info: Value = cmd("JWKS.INFO", &["ks"]).query(&mut con3).unwrap();
    assert!(matches!(info, Value::Map(_)));
    assert_eq!(as_string(&field(&info, "current")), "a");
}

#[test]
fn info_describes_keys_cache_counters_and_derived_names() {
    let server = Server::start();
    let mut con = server.conn();
    rotate(
        &mut con,
        "jwks",
        &["ADD", &ec("a", 1), "PROMOTE", "a", "ADD", &rsa("b", 2)],
    )
    .unwrap();
    let info: Value = cmd("JWKS.INFO", &["jwks"]).query(&mut con).unwrap();
    assert_eq!(as_int(&field(&info, "generation")), 1);
    assert_eq!(as_int(&field(&info, "cache_ttl_ms")), -2);
    let keys = match field(&info, "keys") {
        Value::Array(k) => k,
        other => panic!("{other:?}"),
    };
    let states: Vec<(String, String)> = keys
        .iter()
        .map(|k| (as_string(&field(k, "kid")), as_string(&field(k, "state"))))
        .collect();
    assert_eq!(
        states,
        vec![("a".into(), "current".into()), ("b".into(), "next".into())]
    );
    assert!(as_int(&field(&keys[0], "promoted_ms")) > 0);
    let names = field(&info, "derived_keys");
    assert_eq!(as_string(&field(&names, "cache")), "{jwks}:cache");
    assert_eq!(as_string(&field(&names, "audit")), "{jwks}:audit");
    let counters = field(&info, "counters");
    assert_eq!(as_int(&field(&counters, "jwt_jwks_rotations_total")), 1);
    assert_eq!(as_int(&field(&info, "audit_length")), 4);
    let none: Value = cmd("JWKS.INFO", &["nothing"]).query(&mut con).unwrap();
    assert_eq!(none, Value::Nil);
}

#[test]
fn configs_apply_at_load_time_and_with_config_set() {
    let server = Server::with_module_args(&["cache-ttl", "60", "audit-maxlen", "5"], &[]);
    let mut con = server.conn();
    let ttl: Vec<String> = cmd("CONFIG", &["GET", "jwks.cache-ttl"])
        .query(&mut con)
        .unwrap();
    assert_eq!(ttl[1], "60");
    rotate(&mut con, "ks", &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    get(&mut con, "ks").unwrap();
    let pttl: i64 = cmd("PTTL", &["{ks}:cache"]).query(&mut con).unwrap();
    assert!(pttl > 50_000 && pttl <= 60_000, "{pttl}");
    let _: () = cmd("CONFIG", &["SET", "jwks.cache-ttl", "7"])
        .query(&mut con)
        .unwrap();
    let _: i64 = cmd("JWKS.INVALIDATE", &["ks"]).query(&mut con).unwrap();
    get(&mut con, "ks").unwrap();
    let pttl: i64 = cmd("PTTL", &["{ks}:cache"]).query(&mut con).unwrap();
    assert!(pttl <= 7_000, "{pttl}");
    // The audit stream stays near its cap.
    for _ in 0..500 {
        let _: i64 = cmd("JWKS.INVALIDATE", &["ks"]).query(&mut con).unwrap();
    }
    let len: i64 = cmd("XLEN", &["{ks}:audit"]).query(&mut con).unwrap();
    assert!(len < 200, "audit stream not trimmed: {len}");
    // The RSA floor is a config too.
    assert!(rotate(
        &mut con,
        "ks",
        &["ADD", &testkeys::rsa("small", 1, 1024).to_string()]
    )
    .is_err());
    let _: () = cmd("CONFIG", &["SET", "jwks.min-rsa-bits", "1024"])
        .query(&mut con)
        .unwrap();
    rotate(
        &mut con,
        "ks",
        &["ADD", &testkeys::rsa("small", 1, 1024).to_string()],
    )
    .unwrap();
    let bad: redis::RedisResult<()> =
        cmd("CONFIG", &["SET", "jwks.min-rsa-bits", "512"]).query(&mut con);
    assert!(bad.is_err());
}

#[test]
fn stats_sum_every_key_set_across_reload_and_flush() {
    let server = Server::start();
    let mut con = server.conn();
    let stats = |con: &mut redis::Connection| -> std::collections::HashMap<String, i64> {
        let flat: Vec<String> = cmd::<&str>("JWKS.STATS", &[]).query(con).unwrap();
        flat.chunks(2)
            .map(|p| (p[0].clone(), p[1].parse().unwrap()))
            .collect()
    };
    for (i, k) in ["a", "b:{t}", "c"].iter().enumerate() {
        rotate(
            &mut con,
            k,
            &["ADD", &ec("k", i as u64 + 1), "PROMOTE", "k"],
        )
        .unwrap();
    }
    let _: i64 = cmd("JWKS.INVALIDATE", &["a"]).query(&mut con).unwrap();
    let s = stats(&mut con);
    assert_eq!(s["jwt_jwks_cache_invalidations_total"], 4);
    assert_eq!(s["jwt_jwks_rotations_total"], 3);
    assert_eq!(s["jwt_jwks_key_sets"], 3);
    // After a reload the registry is rebuilt by one scan.
    let _: () = cmd::<&str>("DEBUG", &["RELOAD"]).query(&mut con).unwrap();
    assert_eq!(stats(&mut con)["jwt_jwks_cache_invalidations_total"], 4);
    rotate(&mut con, "d", &["ADD", &ec("k", 9)]).unwrap();
    assert_eq!(stats(&mut con)["jwt_jwks_key_sets"], 4);
    let _: () = cmd::<&str>("FLUSHALL", &[]).query(&mut con).unwrap();
    assert_eq!(stats(&mut con)["jwt_jwks_key_sets"], 0);
}

#[test]
fn an_invalidation_flood_logs_every_attempt_folded_into_counted_lines() {
    let server = Server::start();
    let mut con = server.conn();
    rotate(&mut con, "flood", &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let mut pipe = redis::pipe();
    for _ in 0..2000 {
        pipe.cmd("JWKS.INVALIDATE")
            .arg("flood")
            .arg("REASON")
            .arg("loop");
    }
    let _: Vec<i64> = pipe.query(&mut con).unwrap();
    // Each attempt has its audit entry and count; the log folds identical lines (syslog's
    // "repeated"), so the number of attempts the lines stand for is exact.
    let needle = "JWKS_CACHE_INVALIDATED key='flood' reason='loop'";
    let attempts = |log: &str| -> usize {
        log.lines()
            .filter(|l| l.contains(needle))
            .map(|l| {
                l.split(" repeated=")
                    .nth(1)
                    .map_or(1, |n| n.trim().parse().unwrap())
            })
            .sum()
    };
    let mut log = String::new();
    wait_for("2000 logged attempts", || {
        log = server.log();
        attempts(&log) >= 2000
    });
    assert_eq!(attempts(&log), 2000, "{log}");
    let lines = log.matches(needle).count();
    assert!(lines < 2000, "identical lines were not folded: {lines}");
    let counted: i64 = redis::cmd("HGET")
        .arg("{flood}:metrics")
        .arg("jwt_jwks_cache_invalidations_total")
        .query(&mut con)
        .unwrap();
    assert_eq!(counted, 2001);
}

#[test]
fn key_names_are_binary_safe() {
    let server = Server::start();
    let mut con = server.conn();
    let key: &[u8] = b"bin\x00ary\xff";
    let r: Value = redis::cmd("JWKS.ROTATE")
        .arg(key)
        .arg("ADD")
        .arg(ec("a", 1))
        .arg("PROMOTE")
        .arg("a")
        .query(&mut con)
        .unwrap();
    assert!(matches!(r, Value::Map(_) | Value::Array(_)), "{r:?}");
    let doc: String = redis::cmd("JWKS.GET").arg(key).query(&mut con).unwrap();
    assert!(doc.contains("\"kid\":\"a\""), "{doc}");
    let cached: String = redis::cmd("GET")
        .arg(b"{bin\x00ary\xff}:cache")
        .query(&mut con)
        .unwrap();
    assert_eq!(cached, doc);
    let deleted: i64 = redis::cmd("JWKS.INVALIDATE")
        .arg(key)
        .query(&mut con)
        .unwrap();
    assert_eq!(deleted, 1);
    let stats: Vec<String> = redis::cmd("JWKS.STATS").query(&mut con).unwrap();
    assert!(stats.contains(&"jwt_jwks_key_sets".to_owned()), "{stats:?}");
}

#[test]
fn reads_alternating_between_key_sets_get_each_its_own_document() {
    let server = Server::start();
    let mut con = server.conn();
    rotate(&mut con, "one", &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    rotate(&mut con, "two", &["ADD", &ec("b", 2), "PROMOTE", "b"]).unwrap();
    for _ in 0..3 {
        // Miss then hit for each, alternating, so the remembered cache name changes.
        for (key, kid) in [("one", "a"), ("two", "b"), ("one", "a")] {
            assert_eq!(doc_kids(&get(&mut con, key).unwrap()), vec![kid]);
        }
        let _: i64 = redis::cmd("JWKS.INVALIDATE")
            .arg("two")
            .query(&mut con)
            .unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg("{two}:cache")
        .arg("x")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg("{two}:cache")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("{two}:cache")
        .arg("f")
        .arg("v")
        .query(&mut con)
        .unwrap();
    // The document comes from the key set, whatever sits at the cache name; a change that
    // would write the cache is refused while another type holds it.
    assert_eq!(doc_kids(&get(&mut con, "two").unwrap()), vec!["b"]);
    let err = rotate(&mut con, "two", &["ADD", &ec("c", 3)]).unwrap_err();
    assert!(err.to_string().contains("{two}:cache"), "{err}");
    assert_eq!(get(&mut con, "nothing"), None);
}
