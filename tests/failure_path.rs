//! When the cache cannot be invalidated after a swap, the rotation still commits; the
//! failure is logged at warning, counted and audited, and the cache TTL bounds staleness.
//! Driven for real through the load-time-only fault switch.

mod common;

use common::*;

#[test]
fn failed_invalidation_commits_rotation_and_is_logged_counted_audited() {
    let server = Server::with_module_args(&["fault-injection", "yes"], &[]);
    let mut con = server.conn();
    rotate(&mut con, "ks", &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let stale: String = cmd("JWKS.GET", &["ks"]).query(&mut con).unwrap();

    let _: () = cmd("JWKS.DEBUG", &["FAIL-INVALIDATIONS", "1"])
        .query(&mut con)
        .unwrap();
    let r = rotate(&mut con, "ks", &["ADD", &ec("b", 2)]).unwrap();
    assert_eq!(
        as_int(&field(&r, "generation")),
        2,
        "the rotation committed"
    );
    assert_eq!(as_int(&field(&r, "invalidated")), 0);
    assert!(as_string(&field(&r, "invalidation_error")).contains("injected fault"));

    // The stale document is still cached, but with its TTL: it heals on expiry.
    let cached: String = cmd("GET", &["{ks}:cache"]).query(&mut con).unwrap();
    assert_eq!(cached, stale);
    let ttl: i64 = cmd("TTL", &["{ks}:cache"]).query(&mut con).unwrap();
    assert!(ttl > 0 && ttl <= 3600);

    let errors: i64 = cmd(
        "HGET",
        &["{ks}:metrics", "jwt_jwks_cache_invalidation_errors_total"],
    )
    .query(&mut con)
    .unwrap();
    assert_eq!(errors, 1);
    let trail = audit(&mut con, "{ks}:audit");
    let failed = trail.last().unwrap();
    assert_eq!(failed["action"], "JWKS_CACHE_INVALIDATION_FAILED");
    assert_eq!(failed["kids"], "b");
    assert_eq!(failed["generation"], "2");
    assert!(failed["error"].contains("injected fault"));
    assert!(failed["timestamp"].ends_with('Z'));
    let log = server.wait_log("JWKS_CACHE_INVALIDATION_FAILED", 1);
    let warning = log
        .lines()
        .find(|l| l.contains("JWKS_CACHE_INVALIDATION_FAILED"))
        .expect("warning logged");
    // Redis marks warning lines with '#', notice lines with '*'.
    assert!(warning.contains(" # "), "{warning}");

    // JWKS.INVALIDATE reports the failure as an error reply, also audited and counted.
    let _: () = cmd("JWKS.DEBUG", &["FAIL-INVALIDATIONS", "1"])
        .query(&mut con)
        .unwrap();
    let err = cmd("JWKS.INVALIDATE", &["ks"])
        .query::<i64>(&mut con)
        .unwrap_err();
    assert!(
        err.to_string().contains("cache invalidation failed"),
        "{err}"
    );
    // The next attempt works again and heals at once.
    let n: i64 = cmd("JWKS.INVALIDATE", &["ks"]).query(&mut con).unwrap();
    assert_eq!(n, 1);
    let counters: std::collections::HashMap<String, i64> =
        cmd("HGETALL", &["{ks}:metrics"]).query(&mut con).unwrap();
    assert_eq!(counters["jwt_jwks_cache_invalidation_errors_total"], 2);
    assert_eq!(counters["jwt_jwks_cache_invalidations_total"], 2);
}

#[test]
fn fault_switch_is_off_by_default_and_load_time_only() {
    let server = Server::start();
    let mut con = server.conn();
    let err = cmd("JWKS.DEBUG", &["FAIL-INVALIDATIONS", "1"])
        .query::<()>(&mut con)
        .unwrap_err();
    assert!(err.to_string().contains("disabled"), "{err}");
    let err = cmd("CONFIG", &["SET", "jwks.fault-injection", "yes"])
        .query::<()>(&mut con)
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("immutable")
            || err.to_string().contains("can't set"),
        "{err}"
    );
}

#[test]
fn ttl_heals_a_stale_cache() {
    let server = Server::with_module_args(&["fault-injection", "yes", "cache-ttl", "1"], &[]);
    let mut con = server.conn();
    rotate(&mut con, "ks", &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let _: String = cmd("JWKS.GET", &["ks"]).query(&mut con).unwrap();
    let _: () = cmd("JWKS.DEBUG", &["FAIL-INVALIDATIONS", "1"])
        .query(&mut con)
        .unwrap();
    rotate(&mut con, "ks", &["ADD", &ec("b", 2)]).unwrap();
    wait_for("stale cache to expire", || {
        let doc: String = cmd("JWKS.GET", &["ks"]).query(&mut con).unwrap();
        doc.contains("\"b\"")
    });
}
