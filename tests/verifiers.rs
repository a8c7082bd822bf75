//! JWKS.ACK and JWKS.VERIFIERS: what verifiers report, how long it lasts, who may report,
//! what bounds it, and the numbers JWKS.STATS derives from it.

mod common;

use std::time::Duration;

use common::*;
use redis::{Connection, Value};

const K: &str = "jwks:{fleet}";

fn ack(
    con: &mut Connection,
    key: &str,
    generation: u64,
    id: &str,
    ttl: Option<u64>,
) -> redis::RedisResult<i64> {
    let generation = generation.to_string();
    let ttl = ttl.map(|t| t.to_string());
    let mut args = vec![key, "GENERATION", &generation, "ID", id];
    if let Some(ttl) = &ttl {
        args.extend(["TTL", ttl.as_str()]);
    }
    cmd("JWKS.ACK", &args).query(con)
}

/// (id, generation, current, next) of each live verifier.
fn verifiers(con: &mut Connection, key: &str) -> Vec<(String, i64, i64, i64)> {
    let list: Value = cmd("JWKS.VERIFIERS", &[key]).query(con).unwrap();
    let Value::Array(list) = list else {
        panic!("{list:?}")
    };
    list.iter()
        .map(|v| {
            (
                as_string(&field(v, "id")),
                as_int(&field(v, "generation")),
                as_int(&field(v, "current")),
                as_int(&field(v, "next")),
            )
        })
        .collect()
}

fn started(con: &mut Connection) {
    rotate(con, K, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
}

fn stats(con: &mut Connection) -> std::collections::HashMap<String, String> {
    let flat: Vec<String> = cmd("JWKS.STATS", &[] as &[&str]).query(con).unwrap();
    flat.chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect()
}

#[test]
fn acks_say_which_keys_each_verifier_holds() {
    let server = Server::start();
    let mut con = server.conn();
    started(&mut con);
    assert_eq!(ack(&mut con, K, 1, "host:1:a", None).unwrap(), 1);
    rotate(&mut con, K, &["ADD", &ec("b", 2)]).unwrap();
    // The reply is the set's generation: this verifier missed an event.
    assert_eq!(ack(&mut con, K, 1, "host:1:a", None).unwrap(), 2);
    assert_eq!(ack(&mut con, K, 2, "host:2:b", None).unwrap(), 2);
    assert_eq!(
        verifiers(&mut con, K),
        vec![("host:1:a".into(), 1, 1, 0), ("host:2:b".into(), 2, 1, 1)]
    );
    let v: Value = cmd("JWKS.VERIFIERS", &[K]).query(&mut con).unwrap();
    let first = match v {
        Value::Array(v) => v[0].clone(),
        other => panic!("{other:?}"),
    };
    assert!((0..1000).contains(&as_int(&field(&first, "age_ms"))));
    assert!((29_000..=30_000).contains(&as_int(&field(&first, "ttl_ms"))));
    let info: Value = cmd("JWKS.INFO", &[K]).query(&mut con).unwrap();
    assert_eq!(as_int(&field(&info, "verifiers")), 2);
}

#[test]
fn bad_acks_are_refused_and_change_nothing() {
    let server = Server::start();
    let mut con = server.conn();
    started(&mut con);
    let err = |r: redis::RedisResult<i64>| r.unwrap_err().to_string();
    assert!(err(ack(&mut con, K, 2, "x", None))
        .contains("generation 2 is newer than the key set's (1)"));
    assert!(err(ack(&mut con, "jwks:{none}", 0, "x", None)).contains("NOKEYSET"));
    assert!(err(ack(&mut con, K, 1, "x", Some(999))).contains("TTL needs"));
    assert!(err(ack(&mut con, K, 1, &"x".repeat(129), None)).contains("1 to 128 bytes"));
    assert!(err(ack(&mut con, K, 1, "a\u{7}b", None)).contains("control"));
    let e: redis::RedisResult<i64> = cmd("JWKS.ACK", &[K, "GENERATION", "1", "ID"]).query(&mut con);
    assert!(e
        .unwrap_err()
        .to_string()
        .contains("wrong number of arguments"));
    let e: redis::RedisResult<i64> =
        cmd("JWKS.ACK", &[K, "GENERATION", "1", "NAME", "x"]).query(&mut con);
    assert!(e.unwrap_err().to_string().contains("unknown option"));
    assert!(verifiers(&mut con, K).is_empty());
    let e: redis::RedisResult<Value> = cmd("JWKS.VERIFIERS", &["jwks:{none}"]).query(&mut con);
    assert!(e.unwrap_err().to_string().contains("NOKEYSET"));
}

#[test]
fn acks_expire_unless_repeated() {
    let server = Server::start();
    let mut con = server.conn();
    started(&mut con);
    ack(&mut con, K, 1, "short", Some(1000)).unwrap();
    ack(&mut con, K, 1, "long", Some(60_000)).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    ack(&mut con, K, 1, "short", Some(1000)).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(verifiers(&mut con, K).len(), 2, "re-acked in time");
    std::thread::sleep(Duration::from_millis(500));
    let left: Vec<String> = verifiers(&mut con, K).into_iter().map(|v| v.0).collect();
    assert_eq!(left, vec!["long".to_string()]);
}

#[test]
fn a_verifier_role_reads_and_acks_but_cannot_rotate() {
    let server = Server::start();
    let mut con = server.conn();
    started(&mut con);
    let _: () = cmd(
        "ACL",
        &[
            "SETUSER",
            "verifier",
            "on",
            ">v",
            "resetkeys",
            "%R~jwks:*",
            "resetchannels",
            "&jwks:*",
            "-@all",
            "+jwks.get",
            "+jwks.key",
            "+jwks.ack",
            "+jwks.verifiers",
        ],
    )
    .query(&mut con)
    .unwrap();
    let _: () = cmd(
        "ACL",
        &[
            "SETUSER",
            "reader",
            "on",
            ">r",
            "resetkeys",
            "%R~jwks:*",
            "-@all",
            "+jwks.get",
            "+jwks.verifiers",
        ],
    )
    .query(&mut con)
    .unwrap();
    let _: () = cmd(
        "ACL",
        &[
            "SETUSER",
            "other",
            "on",
            ">o",
            "resetkeys",
            "~other:*",
            "-@all",
            "+jwks.ack",
        ],
    )
    .query(&mut con)
    .unwrap();
    let as_user = |user: &str, pass: &str| {
        let mut c = server.conn();
        let _: () = cmd("AUTH", &[user, pass]).query(&mut c).unwrap();
        c
    };
    let mut v = as_user("verifier", "v");
    assert_eq!(ack(&mut v, K, 1, "v1", None).unwrap(), 1);
    assert_eq!(verifiers(&mut v, K).len(), 1);
    let e = rotate(&mut v, K, &["ADD", &ec("b", 2)]).unwrap_err();
    assert!(e.to_string().contains("NOPERM"), "{e}");
    let mut r = as_user("reader", "r");
    let e = ack(&mut r, K, 1, "r1", None).unwrap_err();
    assert!(e.to_string().contains("NOPERM"), "{e}");
    let mut o = as_user("other", "o");
    let e = ack(&mut o, K, 1, "o1", None).unwrap_err();
    assert!(e.to_string().contains("NOPERM"), "{e}");
    assert_eq!(verifiers(&mut con, K).len(), 1);
    // Not in @read: a role that reads everything does not ack by accident.
    let categories: Value = cmd("COMMAND", &["INFO", "jwks.ack"])
        .query(&mut con)
        .unwrap();
    assert!(
        !format!("{categories:?}").contains("@read"),
        "{categories:?}"
    );
}

#[test]
fn a_replica_refuses_acks_and_a_deleted_set_forgets_its_verifiers() {
    let primary = Server::start();
    let replica = Server::start();
    replica.replicate(&primary);
    let mut con = primary.conn();
    started(&mut con);
    let mut r = replica.conn();
    wait_for("replicated", || {
        cmd("JWKS.GET", &[K])
            .query::<Option<String>>(&mut r)
            .unwrap()
            .is_some()
    });
    let e = ack(&mut r, K, 1, "x", None).unwrap_err();
    assert_eq!(e.kind(), redis::ErrorKind::ReadOnly, "{e}");
    assert!(verifiers(&mut r, K).is_empty());
    ack(&mut con, K, 1, "v", None).unwrap();
    let _: () = cmd("DEL", &[K]).query(&mut con).unwrap();
    started(&mut con);
    assert!(
        verifiers(&mut con, K).is_empty(),
        "a new key set has no verifiers yet"
    );
    // A rotation (the module's own write) keeps them.
    ack(&mut con, K, 1, "v", None).unwrap();
    rotate(&mut con, K, &["ADD", &ec("b", 2)]).unwrap();
    assert_eq!(verifiers(&mut con, K).len(), 1);
}

#[test]
fn the_caps_refuse_new_ids_only() {
    let server = Server::start();
    let mut con = server.conn();
    started(&mut con);
    ack_many(&mut con, K, 1, (0..10_000).map(|i| i.to_string()));
    let e = ack(&mut con, K, 1, "one-too-many", None).unwrap_err();
    assert!(e.to_string().contains("too many verifiers"), "{e}");
    assert_eq!(ack(&mut con, K, 1, "17", None).unwrap(), 1);
    assert_eq!(verifiers(&mut con, K).len(), 10_000);
}

#[test]
fn stats_count_verifiers_behind_and_unknown_kids() {
    let server = Server::with_module_args(&["verifier-behind-ms", "0"], &[]);
    let mut con = server.conn();
    started(&mut con);
    let series = |m: &str| format!("{m}:0:{K}");
    let s = stats(&mut con);
    assert_eq!(s[&series("jwt_jwks_keyset_unknown_kid_lookups_total")], "0");
    assert!(
        !s.contains_key(&series("jwt_jwks_keyset_verifiers")),
        "no acks yet"
    );
    for _ in 0..3 {
        let _: Option<String> = cmd("JWKS.KEY", &[K, "forged"]).query(&mut con).unwrap();
    }
    let _: Option<String> = cmd("JWKS.KEY", &[K, "a"]).query(&mut con).unwrap();
    let _: Option<String> = cmd("JWKS.KEY", &["jwks:{none}", "x"])
        .query(&mut con)
        .unwrap();
    ack(&mut con, K, 1, "stuck", None).unwrap();
    ack(&mut con, K, 1, "fresh", None).unwrap();
    rotate(&mut con, K, &["ADD", &ec("b", 2)]).unwrap();
    ack(&mut con, K, 2, "fresh", None).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let s = stats(&mut con);
    assert_eq!(s[&series("jwt_jwks_keyset_unknown_kid_lookups_total")], "3");
    // A miss on a name that holds no key set is nobody's unknown kid.
    assert_eq!(s["jwt_jwks_unknown_kid_lookups_total"], "3");
    assert_eq!(s["jwt_jwks_verifier_acks_total"], "3");
    assert_eq!(s[&series("jwt_jwks_keyset_verifiers")], "2");
    assert_eq!(s[&series("jwt_jwks_keyset_verifiers_behind")], "1");
    let info: String = cmd("INFO", &["jwks"]).query(&mut con).unwrap();
    assert!(info.contains(&format!(
        "jwks_{}:1",
        series("jwt_jwks_keyset_verifiers_behind")
    )));
    // A behind threshold not yet passed counts nobody.
    let _: () = cmd("CONFIG", &["SET", "jwks.verifier-behind-ms", "60000"])
        .query(&mut con)
        .unwrap();
    assert_eq!(
        stats(&mut con)[&series("jwt_jwks_keyset_verifiers_behind")],
        "0"
    );
}

#[test]
fn acks_are_refused_over_maxmemory_and_counted_in_used_memory() {
    let server = Server::start();
    let mut con = server.conn();
    started(&mut con);
    let before = used_memory(&mut con);
    ack_many(
        &mut con,
        K,
        1,
        (0..5_000).map(|i| format!("verifier-{i:05}")),
    );
    let grown = used_memory(&mut con) - before;
    assert!(
        grown > 5_000 * 100,
        "acks are in used_memory: {grown} bytes"
    );
    let _: () = cmd("CONFIG", &["SET", "maxmemory", "1"])
        .query(&mut con)
        .unwrap();
    let e = ack(&mut con, K, 1, "one-more", None).unwrap_err();
    assert!(e.to_string().contains("OOM"), "{e}");
    let _: () = cmd("CONFIG", &["SET", "maxmemory", "0"])
        .query(&mut con)
        .unwrap();
    assert_eq!(verifiers(&mut con, K).len(), 5_000);
}
