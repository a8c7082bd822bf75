//! Key-set names: derived names are injective and reserved (refused as key-set names), and
//! JWKS.INFO lists them. The exhaustive property test is in core/src/names.rs; this checks the
//! same rules through a real server.

mod common;

use common::*;

#[test]
fn a_name_and_its_wrapped_form_cannot_both_be_key_sets() {
    let server = Server::start();
    let mut con = server.conn();
    rotate(&mut con, "a", &["ADD", &ec("a1", 1), "PROMOTE", "a1"]).unwrap();
    let err = rotate(&mut con, "{a}", &["ADD", &ec("b1", 2), "PROMOTE", "b1"]).unwrap_err();
    assert_eq!(err.code(), Some("BADNAME"), "{err}");
    assert!(
        err.to_string().contains("use the name without braces"),
        "{err}"
    );
    // Nor can a key set be created at another's derived name, tagged or not.
    rotate(&mut con, "jwks:{auth}", &["ADD", &ec("c1", 3)]).unwrap();
    for name in [
        "jwks:{auth}:cache",
        "jwks:{auth}:audit",
        "jwks:{auth}:metrics",
        "jwks:{auth}:events",
        "{a}:cache",
    ] {
        let err = rotate(&mut con, name, &["ADD", &ec("d1", 4)]).unwrap_err();
        assert_eq!(err.code(), Some("BADNAME"), "{name}: {err}");
        let err = cmd("JWKS.INVALIDATE", &[name])
            .query::<i64>(&mut con)
            .unwrap_err();
        assert_eq!(err.code(), Some("BADNAME"), "{name}: {err}");
    }
    // Both key sets still answer with their own documents.
    let a: String = cmd("JWKS.GET", &["a"]).query(&mut con).unwrap();
    assert!(a.contains("\"a1\"") && !a.contains("\"b1\""));
    let info = cmd("JWKS.INFO", &["jwks:{auth}"])
        .query::<redis::Value>(&mut con)
        .unwrap();
    let names: Vec<(String, String)> = pairs(&field(&info, "derived_keys"))
        .into_iter()
        .map(|(k, v)| (k, as_string(&v)))
        .collect();
    assert_eq!(
        names,
        [
            ("audit".to_string(), "jwks:{auth}:audit".to_string()),
            ("cache".into(), "jwks:{auth}:cache".into()),
            ("events".into(), "jwks:{auth}:events".into()),
            ("metrics".into(), "jwks:{auth}:metrics".into()),
        ]
    );
    let info = cmd("JWKS.INFO", &["a"])
        .query::<redis::Value>(&mut con)
        .unwrap();
    assert_eq!(
        as_string(&field(&field(&info, "derived_keys"), "cache")),
        "{a}:cache"
    );
}

#[test]
fn binary_empty_braced_and_long_names() {
    let server = Server::start();
    let mut con = server.conn();
    for name in [
        &b"\x00\r\n\xff"[..],
        b"a{b",
        b"{a}}",
        b"x{y}z",
        &[b'k'; 512],
    ] {
        let res: redis::Value = redis::cmd("JWKS.ROTATE")
            .arg(name)
            .arg("ADD")
            .arg(ec("k", 1))
            .query(&mut con)
            .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        assert_eq!(as_int(&field(&res, "generation")), 1);
        let doc: String = redis::cmd("JWKS.GET").arg(name).query(&mut con).unwrap();
        assert!(doc.contains("\"k\""));
    }
    for name in [&b""[..], b"a}b", b"{}x", b"{ab}", &[b'k'; 513]] {
        let err = redis::cmd("JWKS.ROTATE")
            .arg(name)
            .arg("ADD")
            .arg(ec("k", 1))
            .query::<redis::Value>(&mut con)
            .unwrap_err();
        assert_eq!(err.code(), Some("BADNAME"), "{name:?}: {err}");
    }
}

#[test]
fn etags_follow_the_bytes_across_recreation_and_restore() {
    let server = Server::start();
    let mut con = server.conn();
    let etag = |con: &mut redis::Connection| {
        let meta = cmd("JWKS.GET", &["k", "META"])
            .query::<redis::Value>(con)
            .unwrap();
        (
            as_string(&field(&meta, "etag")),
            as_string(&field(&meta, "generation")),
        )
    };
    rotate(&mut con, "k", &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let (first, g) = etag(&mut con);
    assert_eq!(g, "1");
    assert!(
        first.starts_with('"') && first.ends_with('"') && first.len() == 24,
        "{first}"
    );
    let dump: Vec<u8> = cmd("DUMP", &["k"]).query(&mut con).unwrap();
    // Recreated with another key: the generation repeats, the ETag must not.
    let _: i64 = cmd("DEL", &["k"]).query(&mut con).unwrap();
    rotate(&mut con, "k", &["ADD", &ec("b", 2), "PROMOTE", "b"]).unwrap();
    let (second, g) = etag(&mut con);
    assert_eq!(g, "1");
    assert_ne!(second, first);
    // Restored from the older dump: the same bytes as the first, so the same ETag.
    let _: () = redis::cmd("RESTORE")
        .arg("k")
        .arg(0)
        .arg(dump)
        .arg("REPLACE")
        .query(&mut con)
        .unwrap();
    assert_eq!(etag(&mut con).0, first);
    let info = cmd("JWKS.INFO", &["k"])
        .query::<redis::Value>(&mut con)
        .unwrap();
    assert_eq!(as_string(&field(&info, "etag")), first);
}

#[test]
fn a_read_keeps_the_key_set_as_warm_as_its_cache_and_risky_policies_are_logged() {
    // With lfu-log-factor 0 every access counts, so OBJECT FREQ shows each read at once.
    let server = Server::with_args(&["--maxmemory-policy", "allkeys-lfu", "--lfu-log-factor", "0"]);
    let mut con = server.conn();
    server.wait_log("maxmemory-policy allkeys-lfu can evict key sets", 1);
    rotate(&mut con, "k", &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
    let freq =
        |con: &mut redis::Connection| -> i64 { cmd("OBJECT", &["FREQ", "k"]).query(con).unwrap() };
    let before = freq(&mut con);
    for _ in 0..10 {
        let _: String = cmd("JWKS.GET", &["k"]).query(&mut con).unwrap();
    }
    assert!(
        freq(&mut con) >= before + 10,
        "{before} -> {}",
        freq(&mut con)
    );
    let _: () = cmd("CONFIG", &["SET", "maxmemory-policy", "allkeys-lru"])
        .query(&mut con)
        .unwrap();
    server.wait_log("maxmemory-policy allkeys-lru can evict key sets", 1);
    for safe in ["volatile-lru", "noeviction"] {
        let _: () = cmd("CONFIG", &["SET", "maxmemory-policy", safe])
            .query(&mut con)
            .unwrap();
    }
    let _: () = cmd("CONFIG", &["SET", "maxmemory-policy", "allkeys-random"])
        .query(&mut con)
        .unwrap();
    server.wait_log("maxmemory-policy allkeys-random can evict key sets", 1);
    assert_eq!(server.log().matches("can evict key sets").count(), 3);
}
