//! Faults: memory full, and a crash in the middle of a workload with appendfsync always.

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use common::*;

#[test]
fn at_maxmemory_rotations_are_refused_and_reads_still_answer() {
    let server = Server::with_args(&["--maxmemory-policy", "noeviction"]);
    let mut con = server.conn();
    rotate(&mut con, "ks", &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let doc: String = cmd("JWKS.GET", &["ks"]).query(&mut con).unwrap();
    // Fill memory, then cap it below what is used.
    let blob = "x".repeat(1 << 20);
    for i in 0..8 {
        let _: () = cmd("SET", &[format!("filler{i}").as_str(), blob.as_str()])
            .query(&mut con)
            .unwrap();
    }
    let _: () = cmd("CONFIG", &["SET", "maxmemory", "1mb"])
        .query(&mut con)
        .unwrap();

    let before = digest(&mut con);
    let err = rotate(&mut con, "ks", &["ADD", &ec("b", 2)]).unwrap_err();
    assert_eq!(err.code(), Some("OOM"), "{err}");
    assert_eq!(
        digest(&mut con),
        before,
        "a refused rotation changed nothing"
    );
    // The cached document still answers.
    let again: String = cmd("JWKS.GET", &["ks"]).query(&mut con).unwrap();
    assert_eq!(again, doc);
    let info: redis::Value = cmd("JWKS.INFO", &["ks"]).query(&mut con).unwrap();
    assert_eq!(as_int(&field(&info, "generation")), 1);
    // Dropping a stale cache is allowed even when memory is full (by design).
    let n: i64 = cmd("JWKS.INVALIDATE", &["ks"]).query(&mut con).unwrap();
    assert_eq!(n, 1);
}

#[test]
fn kill_9_mid_workload_keeps_what_was_acknowledged() {
    let mut server = Server::with_args(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut con = server.conn();
    rotate(&mut con, "ks", &["ADD", &ec("k0", 1), "PROMOTE", "k0"]).unwrap();
    let acked = Arc::new(AtomicI64::new(1));
    let writer = {
        let (url, acked) = (server.url(), acked.clone());
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            for n in 1..10_000u64 {
                let r = rotate(
                    &mut c,
                    "ks",
                    &[
                        "ADD",
                        &ec(&format!("k{n}"), n + 1),
                        "PROMOTE",
                        &format!("k{n}"),
                        "RETIRE",
                        &format!("k{}", n - 1),
                    ],
                );
                match r {
                    Ok(v) => acked.store(as_int(&field(&v, "generation")), Ordering::SeqCst),
                    Err(_) => return,
                }
            }
        })
    };
    wait_for("some rotations", || acked.load(Ordering::SeqCst) > 50);
    server.kill();
    let _ = writer.join();
    let acknowledged = acked.load(Ordering::SeqCst);

    server.start_again();
    let mut con = server.conn();
    let info: redis::Value = cmd("JWKS.INFO", &["ks"]).query(&mut con).unwrap();
    let generation = as_int(&field(&info, "generation"));
    // Everything acknowledged survived; at most the one in flight applied on top.
    assert!(
        generation == acknowledged || generation == acknowledged + 1,
        "generation {generation}, acknowledged {acknowledged}"
    );
    // The audit trail and counters agree with the key set, command for command.
    let counters: std::collections::HashMap<String, i64> =
        cmd("HGETALL", &["{ks}:metrics"]).query(&mut con).unwrap();
    assert_eq!(counters["jwt_jwks_rotations_total"], generation);
    assert_eq!(counters["jwt_jwks_cache_invalidations_total"], generation);
    let trail = audit(&mut con, "{ks}:audit");
    let count = |a: &str| trail.iter().filter(|e| e["action"] == a).count() as i64;
    assert_eq!(count("JWKS_CACHE_INVALIDATED"), generation);
    assert_eq!(count("JWKS_KEY_PROMOTED"), generation);
    assert_eq!(trail.last().unwrap()["generation"], generation.to_string());
    assert_eq!(
        as_string(&field(&info, "current")),
        format!("k{}", generation - 1)
    );
}
