//! Verifiers learn of a change within milliseconds: every committed change publishes exactly
//! one message on the key set's sharded events channel (after the change, so a subscriber
//! that reloads on it sees the new state), on primaries and replicas; JWKS.KEY serves one
//! key by kid; client-side caching gets invalidation pushes for the cache key and the set.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::Value as Json;

const K: &str = "jwks:{ev}";

/// Subscribes to K's events channel; messages arrive on the returned receiver.
fn subscribe(port: u16) -> mpsc::Receiver<Json> {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sub = RawConn::connect(port);
        let ack = sub.call(&["SSUBSCRIBE", &derived(K, "events")]);
        let _ = ready_tx.send(ack);
        sub.set_timeout(Duration::from_secs(30));
        while let Some(Resp::List(items)) = sub.try_read() {
            if items.first().map(Resp::text).as_deref() == Some("smessage") {
                let message = items.get(2).map(Resp::text).unwrap_or_default();
                if tx
                    .send(serde_json::from_str(&message).expect("JSON message"))
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    let ack = ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(matches!(ack, Resp::List(_)), "{ack:?}");
    rx
}

fn next(rx: &mpsc::Receiver<Json>) -> Json {
    rx.recv_timeout(Duration::from_secs(5)).expect("an event")
}

fn none(rx: &mpsc::Receiver<Json>) {
    if let Ok(m) = rx.recv_timeout(Duration::from_millis(100)) {
        panic!("unexpected event {m}");
    }
}

fn meta(con: &mut redis::Connection) -> (i64, String) {
    let m: redis::Value = cmd("JWKS.GET", &[K, "META"]).query(con).unwrap();
    (
        as_int(&field(&m, "generation")),
        as_string(&field(&m, "etag")),
    )
}

#[test]
fn every_committed_change_publishes_exactly_one_event() {
    let server = Server::start();
    let mut con = server.conn();
    let rx = subscribe(server.port);
    rotate(&mut con, K, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let m = next(&rx);
    assert_eq!(
        (
            m["event"].as_str(),
            m["key"].as_str(),
            m["current"].as_str()
        ),
        (Some("rotated"), Some(K), Some("a"))
    );
    let (g, etag) = meta(&mut con);
    assert_eq!(
        (m["generation"].as_i64(), m["etag"].as_str()),
        (Some(g), Some(etag.as_str()))
    );
    none(&rx);
    // Nothing published for what changes nothing: a no-op, a refusal, a dry run.
    let doc = format!(r#"{{"keys":[{}]}}"#, ec("a", 1));
    rotate(&mut con, K, &["REPLACE", &doc]).unwrap();
    rotate(&mut con, K, &["PROMOTE", "nope"]).unwrap_err();
    rotate(&mut con, K, &["DRYRUN", "ADD", &ec("b", 2)]).unwrap();
    none(&rx);
    // Invalidation and policy changes are announced too.
    let _: i64 = cmd("JWKS.INVALIDATE", &[K]).query(&mut con).unwrap();
    assert_eq!(next(&rx)["event"], "invalidated");
    let _: redis::Value = cmd("JWKS.POLICY", &[K, "PROMOTE-AFTER", "150"])
        .query(&mut con)
        .unwrap();
    assert_eq!(next(&rx)["event"], "policy");
    // A scheduled change, with its reason.
    rotate(&mut con, K, &["ADD", &ec("b", 2)]).unwrap();
    assert_eq!(next(&rx)["generation"], 2);
    let m = next(&rx);
    assert_eq!(
        (
            m["event"].as_str(),
            m["reason"].as_str(),
            m["current"].as_str()
        ),
        (Some("rotated"), Some("policy"), Some("b"))
    );
    assert_eq!(meta(&mut con).1, m["etag"].as_str().unwrap());
    // Generic commands: another set renamed onto the name, then a deletion.
    rotate(&mut con, "jwks:{other}", &["ADD", &ec("x", 9)]).unwrap();
    let _: () = cmd("RENAME", &["jwks:{other}", K]).query(&mut con).unwrap();
    let m = next(&rx);
    assert_eq!(
        (m["event"].as_str(), m["generation"].as_i64()),
        (Some("replaced"), Some(1))
    );
    let _: i64 = cmd("DEL", &[K]).query(&mut con).unwrap();
    let m = next(&rx);
    assert_eq!(
        (m["event"].as_str(), m["generation"].as_i64()),
        (Some("deleted"), None)
    );
    none(&rx);
}

#[test]
fn a_subscriber_that_reloads_on_the_event_sees_the_new_state() {
    let server = Server::start();
    let mut con = server.conn();
    let rx = subscribe(server.port);
    let mut reader = server.conn();
    for i in 1..=20u64 {
        let kid = format!("k{i}");
        rotate(&mut con, K, &["ADD", &ec(&kid, i), "PROMOTE", &kid]).unwrap();
        let m = next(&rx);
        let doc: String = cmd("JWKS.GET", &[K]).query(&mut reader).unwrap();
        assert!(doc.contains(&format!("\"{}\"", m["current"].as_str().unwrap())));
        assert_eq!(m["generation"].as_u64(), Some(i));
    }
}

#[test]
fn replicas_deliver_the_events_and_serve_jwks_key() {
    let primary = Server::start();
    let replica = Server::start();
    let mut p = primary.conn();
    let mut r = replica.conn();
    replica.replicate(&primary);
    let rx = subscribe(replica.port);
    rotate(&mut p, K, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let m = next(&rx);
    assert_eq!(m["current"], "a");
    let jwk: Option<String> = cmd("JWKS.KEY", &[K, "a"]).query(&mut r).unwrap();
    let jwk: Json = serde_json::from_str(&jwk.unwrap()).unwrap();
    assert_eq!(jwk["kid"], "a");
    assert_eq!(jwk["kty"], "EC");
    let missing: Option<String> = cmd("JWKS.KEY", &[K, "zz"]).query(&mut r).unwrap();
    assert_eq!(missing, None);
    let none: Option<String> = cmd("JWKS.KEY", &["jwks:{none}", "a"])
        .query(&mut r)
        .unwrap();
    assert_eq!(none, None);
    // The replica's own AOF never holds the SPUBLISH (it is replicated to replicas only).
    let _: i64 = cmd("WAIT", &["1", "2000"]).query(&mut p).unwrap();
    wait_for("same data", || digest(&mut p) == digest(&mut r));
}

#[test]
fn client_side_caching_gets_invalidation_pushes() {
    let server = Server::start();
    let mut con = server.conn();
    rotate(&mut con, K, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let _: String = cmd("JWKS.GET", &[K]).query(&mut con).unwrap();
    wait_for("cache filled", || {
        cmd("EXISTS", &[derived(K, "cache")])
            .query::<i64>(&mut con)
            .unwrap()
            == 1
    });
    let mut tracked = RawConn::connect(server.port);
    tracked.call(&["HELLO", "3"]);
    assert_eq!(
        tracked.call(&["CLIENT", "TRACKING", "ON"]),
        Resp::Str("OK".into())
    );
    let cached = tracked.call(&["GET", &derived(K, "cache")]);
    let served = tracked.call(&["JWKS.GET", K]);
    assert_eq!(cached, served);
    rotate(&mut con, K, &["ADD", &ec("b", 2)]).unwrap();
    let mut invalidated = Vec::new();
    while invalidated.len() < 2 {
        match tracked.read() {
            Resp::Push(items) if items.first().map(Resp::text).as_deref() == Some("invalidate") => {
                if let Some(Resp::List(keys)) = items.get(1) {
                    invalidated.extend(keys.iter().map(Resp::text));
                }
            }
            other => panic!("{other:?}"),
        }
    }
    invalidated.sort();
    assert_eq!(invalidated, [K.to_string(), derived(K, "cache")]);
}

#[test]
fn flushes_and_swapdb_are_announced_too() {
    let server = Server::start();
    let mut con = server.conn();
    rotate(&mut con, K, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let rx = subscribe(server.port);
    // db 1 holds another key set under the same name; SWAPDB puts it at the name in db 0.
    let _: () = cmd("SELECT", &["1"]).query(&mut con).unwrap();
    rotate(&mut con, K, &["ADD", &ec("x", 9), "PROMOTE", "x"]).unwrap();
    assert_eq!(next(&rx)["current"], "x");
    let _: () = cmd("SWAPDB", &["0", "1"]).query(&mut con).unwrap();
    let mut seen: Vec<(String, String)> = (0..2)
        .map(|_| {
            let m = next(&rx);
            (
                m["event"].as_str().unwrap().to_owned(),
                m["current"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("replaced".into(), "a".into()),
            ("replaced".into(), "x".into())
        ]
    );
    none(&rx);
    let _: () = cmd("FLUSHALL", &[] as &[&str]).query(&mut con).unwrap();
    let gone: Vec<String> = (0..2)
        .map(|_| next(&rx)["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(gone, ["deleted", "deleted"]);
    none(&rx);
}
