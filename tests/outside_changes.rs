//! What other commands do to key sets is reported truthfully: `SET` over a key set is
//! audited, counted and logged as lost; a reload that changes nothing announces nothing;
//! RESTOREs that never land leave nothing behind; a stored state that fails the module's
//! rules (weak RSA, a generation out of range) is refused on RESTORE and never published.

mod common;

use std::collections::HashMap;

use common::*;
use redis::{Connection, Value};

const K: &str = "jwks:{o}";

fn stats(con: &mut Connection) -> HashMap<String, i64> {
    let flat: Vec<String> = cmd("JWKS.STATS", &[] as &[&str]).query(con).unwrap();
    flat.chunks(2)
        .filter_map(|p| Some((p.first()?.clone(), p.get(1)?.parse().ok()?)))
        .collect()
}

#[test]
fn set_over_a_key_set_is_audited_counted_and_logged_as_lost() {
    let server = Server::start();
    let mut con = server.conn();
    rotate(&mut con, K, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let _: () = cmd("SET", &[K, "oops"]).query(&mut con).unwrap();
    wait_for("the lost entry", || {
        audit(&mut con, &derived(K, "audit"))
            .iter()
            .any(|e| e.get("action").map(String::as_str) == Some("JWKS_KEYSET_LOST"))
    });
    let lost: i64 = cmd(
        "HGET",
        &[&derived(K, "metrics"), "jwt_jwks_keysets_lost_total"],
    )
    .query(&mut con)
    .unwrap();
    assert_eq!(lost, 1);
    assert_eq!(stats(&mut con)["jwt_jwks_keysets_lost_total"], 1);
    server.wait_log("JWKS_KEYSET_LOST", 1);
    // A plain DEL is a deletion, not a loss.
    rotate(&mut con, "jwks:{o2}", &["ADD", &ec("b", 2), "PROMOTE", "b"]).unwrap();
    let _: i64 = cmd("DEL", &["jwks:{o2}"]).query(&mut con).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(60));
    assert_eq!(stats(&mut con)["jwt_jwks_keysets_lost_total"], 1);
}

#[test]
fn the_cache_left_behind_is_invalidated_like_any_other_audited_and_counted() {
    let server = Server::start();
    let mut con = server.conn();
    for (name, outside) in [("jwks:{del}", "DEL"), ("jwks:{set}", "SET")] {
        rotate(&mut con, name, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
        let _: String = cmd("JWKS.GET", &[name]).query(&mut con).unwrap();
        wait_for("the cache", || {
            cmd("EXISTS", &[&derived(name, "cache")])
                .query::<i64>(&mut con)
                .unwrap()
                == 1
        });
        match outside {
            "DEL" => cmd("DEL", &[name])
                .query::<i64>(&mut con)
                .map(|_| ())
                .unwrap(),
            _ => cmd("SET", &[name, "x"]).query::<()>(&mut con).unwrap(),
        }
        wait_for("the cache gone", || {
            cmd("EXISTS", &[&derived(name, "cache")])
                .query::<i64>(&mut con)
                .unwrap()
                == 0
        });
        let trail = audit(&mut con, &derived(name, "audit"));
        let last = trail.last().unwrap();
        assert_eq!(last["action"], "JWKS_CACHE_INVALIDATED", "{trail:?}");
        assert_eq!(last["user"], "(upkeep)");
        assert_eq!(last["deleted"], "1");
        let reason = if outside == "DEL" {
            "keyset_deleted"
        } else {
            "keyset_lost"
        };
        assert_eq!(last["reason"], reason);
        let invalidations: i64 = cmd(
            "HGET",
            &[
                &derived(name, "metrics"),
                "jwt_jwks_cache_invalidations_total",
            ],
        )
        .query(&mut con)
        .unwrap();
        // The rotation's and the clean-up's.
        assert_eq!(invalidations, 2, "{name}");
    }
    server.wait_log("reason='keyset_deleted'", 1);
}

#[test]
fn debug_reload_announces_nothing_when_nothing_changed() {
    let server = Server::start();
    let mut con = server.conn();
    rotate(&mut con, K, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let mut sub = RawConn::connect(server.port);
    let ack = sub.call(&["SSUBSCRIBE", &derived(K, "events")]);
    assert!(matches!(ack, Resp::List(_)), "{ack:?}");
    let _: () = cmd("DEBUG", &["RELOAD"]).query(&mut con).unwrap();
    sub.set_timeout(std::time::Duration::from_millis(300));
    assert_eq!(sub.try_read(), None, "no event for an unchanged key set");
    sub.set_timeout(std::time::Duration::from_secs(5));
    rotate(&mut con, K, &["ADD", &ec("b", 2)]).unwrap();
    let message = sub.read();
    assert!(message.text().contains("smessage") || matches!(message, Resp::List(_)));
}

#[test]
fn restores_with_a_past_absttl_leave_no_phantom_key_sets() {
    let server = Server::start();
    let mut con = server.conn();
    rotate(&mut con, K, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let dump: Vec<u8> = cmd("DUMP", &[K]).query(&mut con).unwrap();
    let mut pipe = redis::pipe();
    for i in 0..3000 {
        pipe.cmd("RESTORE")
            .arg(format!("jwks:{{ghost{i}}}"))
            .arg(1000)
            .arg(&dump)
            .arg("ABSTTL")
            .ignore();
    }
    let _: () = pipe.query(&mut con).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(stats(&mut con)["jwt_jwks_key_sets"], 1);
    let keys: i64 = cmd("DBSIZE", &[] as &[&str]).query(&mut con).unwrap();
    assert_eq!(keys, 3, "the set, its audit trail and counters");
}

/// A DUMP of the module type with `state` as the stored JSON: the type byte and module id
/// from a real dump, the string opcode, the string, EOF, then the dump's version and a CRC.
fn payload(real: &[u8], state: &str) -> Vec<u8> {
    let mut out = real[..10].to_vec();
    out.push(5);
    out.extend(rdb_len(state.len() as u64));
    out.extend(state.as_bytes());
    out.push(0);
    out.extend(&real[real.len() - 10..real.len() - 8]);
    out.extend(crc64(&out).to_le_bytes());
    out
}

#[test]
fn a_stored_state_that_breaks_the_rules_is_refused_on_restore() {
    let server = Server::start();
    let mut con = server.conn();
    let _: () = cmd("CONFIG", &["SET", "rdbcompression", "no"])
        .query(&mut con)
        .unwrap();
    rotate(&mut con, K, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let real: Vec<u8> = cmd("DUMP", &[K]).query(&mut con).unwrap();
    let start = real.iter().position(|&b| b == b'{').unwrap();
    // The string ends before the EOF opcode, the 2-byte version and the 8-byte CRC (which
    // may itself hold a '}').
    let end = real.len() - 11;
    let state = std::str::from_utf8(&real[start..end]).unwrap().to_owned();
    assert_eq!(
        payload(&real, &state),
        real,
        "the payload builder reproduces a real dump"
    );

    let huge = state.replacen("\"generation\":1", "\"generation\":18446744073709551615", 1);
    let weak_rsa = {
        let mut v: serde_json::Value = serde_json::from_str(&state).unwrap();
        v["keys"][0]["jwk"] = serde_json::json!({
            "kty": "RSA", "kid": "a", "use": "sig", "alg": "RS256", "e": "AQAB",
        });
        // A 512-bit modulus.
        v["keys"][0]["jwk"]["n"] = serde_json::json!("sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXbw");
        v.to_string()
    };
    for (what, bad) in [("generation", huge), ("512-bit RSA", weak_rsa)] {
        let before = digest(&mut con);
        let err = redis::cmd("RESTORE")
            .arg("jwks:{crafted}")
            .arg(0)
            .arg(payload(&real, &bad))
            .query::<Value>(&mut con)
            .unwrap_err();
        assert!(
            err.to_string().to_lowercase().contains("bad data format"),
            "{what}: {err}"
        );
        assert_eq!(digest(&mut con), before, "{what}: nothing stored");
    }
    server.wait_log("refused to load the key set", 2);
    let _: String = cmd("PING", &[] as &[&str]).query(&mut con).unwrap();
}

#[test]
fn a_snapshot_taken_right_after_a_deletion_holds_no_orphan_cache() {
    let mut server = Server::start();
    let mut con = server.conn();
    rotate(&mut con, K, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let doc: Option<String> = cmd("JWKS.GET", &[K]).query(&mut con).unwrap();
    wait_for("the cache filled", || {
        let c: Option<String> = cmd("GET", &[&derived(K, "cache")]).query(&mut con).unwrap();
        c == doc
    });
    // In one pipeline: on Redis 7.0 the clean-up would run only after the fork.
    let (_, _): (i64, Value) = redis::pipe()
        .cmd("DEL")
        .arg(K)
        .cmd("BGSAVE")
        .query(&mut con)
        .unwrap();
    wait_for("the snapshot", || {
        let info: String = cmd("INFO", &["persistence"]).query(&mut con).unwrap();
        info.contains("rdb_bgsave_in_progress:0") && info.contains("rdb_last_bgsave_status:ok")
    });
    server.start_again();
    let mut con = server.conn();
    let cache: Option<String> = cmd("GET", &[&derived(K, "cache")]).query(&mut con).unwrap();
    assert_eq!(cache, None);
    let set: Option<String> = cmd("JWKS.GET", &[K]).query(&mut con).unwrap();
    assert_eq!(set, None);
}

#[test]
fn a_scheduled_change_blocked_by_a_wrong_type_backs_off_and_logs_a_few_lines() {
    let server = Server::start();
    let mut con = server.conn();
    rotate(&mut con, K, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let _: Value = cmd("JWKS.POLICY", &[K, "PROMOTE-AFTER", "50"])
        .query(&mut con)
        .unwrap();
    rotate(&mut con, K, &["ADD", &ec("b", 2)]).unwrap();
    let _: i64 = cmd("DEL", &[&derived(K, "audit")]).query(&mut con).unwrap();
    let _: () = cmd("SET", &[&derived(K, "audit"), "not a stream"])
        .query(&mut con)
        .unwrap();
    // Attempts at about 0, 1, 3 and 7 s: a line for the 1st and 2nd (then the 4th, 8th...).
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let lines = server
        .log()
        .matches("could not apply the scheduled change")
        .count();
    assert!((1..=2).contains(&lines), "{lines} lines:\n{}", server.log());
    // Once the stray value is gone the change is applied.
    let _: i64 = cmd("DEL", &[&derived(K, "audit")]).query(&mut con).unwrap();
    wait_for("the promotion", || {
        let info: Value = cmd("JWKS.INFO", &[K]).query(&mut con).unwrap();
        as_string(&field(&info, "current")) == "b"
    });
}
