//! Every bad input gets a clear error naming the problem and changes nothing: the
//! server's DEBUG DIGEST is identical before and after each rejected command, and another
//! client's WATCH on the key set and its derived keys is not aborted (no key was opened
//! for writing).

mod common;

use common::*;
use serde_json::json;

fn setup(con: &mut redis::Connection) {
    rotate(
        con,
        "ks",
        &["ADD", &ec("a", 1), "PROMOTE", "a", "ADD", &ec("b", 2)],
    )
    .unwrap();
    let _: String = cmd("JWKS.GET", &["ks"]).query(con).unwrap();
    let _: () = cmd("SET", &["str", "x"]).query(con).unwrap();
    // A key set whose derived keys hold the wrong types.
    rotate(con, "w1", &["ADD", &ec("a", 1)]).unwrap();
    let _: () = cmd("DEL", &["{w1}:audit"]).query(con).unwrap();
    let _: () = cmd("SET", &["{w1}:audit", "oops"]).query(con).unwrap();
    rotate(con, "w2", &["ADD", &ec("a", 1)]).unwrap();
    let _: () = cmd("LPUSH", &["{w2}:cache", "oops"]).query(con).unwrap();
    let _: () = cmd("SET", &["{w3}:metrics", "oops"]).query(con).unwrap();
}

fn with_member(base: serde_json::Value, k: &str, v: serde_json::Value) -> String {
    let mut base = base;
    base[k] = v;
    base.to_string()
}

type Cases<'a> = Vec<(Vec<Vec<u8>>, &'a str)>;

fn args(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

#[test]
fn arity_and_option_errors_change_nothing() {
    let mut cases: Cases = vec![
        (vec![b"JWKS.ROTATE".to_vec()], "wrong number of arguments"),
        (
            vec![b"JWKS.ROTATE".to_vec(), b"ks".to_vec()],
            "wrong number of arguments",
        ),
        (vec![b"JWKS.GET".to_vec()], "wrong number of arguments"),
        (
            vec![b"JWKS.GET".to_vec(), b"ks".to_vec(), b"x".to_vec()],
            "unknown option 'x' (META)",
        ),
        (vec![b"JWKS.INFO".to_vec()], "wrong number of arguments"),
        (
            vec![b"JWKS.INVALIDATE".to_vec()],
            "wrong number of arguments",
        ),
        (
            vec![
                b"JWKS.INVALIDATE".to_vec(),
                b"ks".to_vec(),
                b"FOO".to_vec(),
                b"x".to_vec(),
            ],
            "unknown option 'FOO'",
        ),
        (
            vec![
                b"JWKS.INVALIDATE".to_vec(),
                b"ks".to_vec(),
                b"REASON".to_vec(),
            ],
            "REASON needs a value",
        ),
        (
            vec![
                b"JWKS.INVALIDATE".to_vec(),
                b"ks".to_vec(),
                b"REASON".to_vec(),
                b"".to_vec(),
            ],
            "must not be empty",
        ),
        (
            vec![b"JWKS.INVALIDATE".to_vec(), b"str".to_vec()],
            "WRONGTYPE",
        ),
        (
            vec![b"JWKS.INVALIDATE".to_vec(), b"w2".to_vec()],
            "WRONGTYPE key '{w2}:cache'",
        ),
        (
            vec![b"JWKS.INVALIDATE".to_vec(), b"missing".to_vec()],
            "NOKEYSET no key set at 'missing'",
        ),
        (
            vec![b"JWKS.INVALIDATE".to_vec(), b"{ks}:cache".to_vec()],
            "BADNAME",
        ),
        (
            vec![
                b"JWKS.DEBUG".to_vec(),
                b"FAIL-INVALIDATIONS".to_vec(),
                b"1".to_vec(),
            ],
            "disabled",
        ),
        (
            vec![b"JWKS.SETSTATE".to_vec(), b"ks".to_vec(), b"{}".to_vec()],
            "internal",
        ),
    ];
    // Verifier acks and CONFIRM.
    for (words, needle) in [
        (
            &["JWKS.ACK", "ks", "GENERATION", "1", "ID"][..],
            "wrong number of arguments",
        ),
        (
            &["JWKS.ACK", "ks", "GENERATION", "9", "ID", "v"],
            "newer than the key set's",
        ),
        (
            &["JWKS.ACK", "ks", "GENERATION", "1", "ID", "v", "TTL", "5"],
            "TTL needs",
        ),
        (
            &["JWKS.ACK", "ks", "GENERATION", "x", "ID", "v"],
            "GENERATION needs",
        ),
        (
            &["JWKS.ACK", "ks", "ID", "v", "TTL", "5000"],
            "GENERATION is required",
        ),
        (
            &["JWKS.ACK", "none", "GENERATION", "0", "ID", "v"],
            "NOKEYSET",
        ),
        (&["JWKS.VERIFIERS"], "wrong number of arguments"),
        (&["JWKS.VERIFIERS", "none"], "NOKEYSET"),
        (&["JWKS.POLICY", "ks", "CONFIRM", "101"], "percentage"),
        (
            &["JWKS.POLICY", "ks", "MIN-WAIT", "5"],
            "MIN-WAIT needs CONFIRM",
        ),
    ] {
        cases.push((args(words), needle));
    }
    check_all(cases, 20);
}

#[test]
fn rotate_argument_and_jwk_errors_change_nothing() {
    let ec_c = testkeys::ec("c", 3);
    let rsa_c = testkeys::rsa("c", 3, 2048);
    let huge = format!("{{\"kty\":\"RSA\",\"x\":\"{}\"}}", "A".repeat(1 << 20));
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let rot = |args: &[&str]| -> Vec<Vec<u8>> {
        let mut v = vec![b"JWKS.ROTATE".to_vec(), b"ks".to_vec()];
        v.extend(args.iter().map(|a| a.as_bytes().to_vec()));
        v
    };
    let rot_cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
        (rot(&["FROB", "x"]), "unknown option or operation 'FROB'"),
        (rot(&["IFGEN", "1"]), "at least one operation"),
        (rot(&["IFGEN", "x", "RETIRE", "b"]), "non-negative integer"),
        (rot(&["IFGEN", "-1", "RETIRE", "b"]), "non-negative integer"),
        (
            rot(&["IFGEN", "0", "IFGEN", "0", "RETIRE", "b"]),
            "IFGEN given twice",
        ),
        (
            rot(&["IFGEN", "7", "RETIRE", "b"]),
            "GENMISMATCH generation mismatch",
        ),
        (
            rot(&["REASON", "a", "REASON", "b", "RETIRE", "b"]),
            "REASON given twice",
        ),
        (rot(&["REASON", "", "RETIRE", "b"]), "invalid reason"),
        (
            rot(&["REASON", &"r".repeat(200), "RETIRE", "b"]),
            "longer than 128",
        ),
        (
            rot(&["RETIRE", "b", "REASON", "x"]),
            "before the first operation",
        ),
        (rot(&["RETIRE"]), "RETIRE needs a value"),
        (rot(&["ADD"]), "ADD needs a value"),
        (rot(&["ADD", ""]), "not JSON"),
        (rot(&["ADD", "[1,2]"]), "must be a JSON object"),
        (rot(&["ADD", "\"str\""]), "must be a JSON object"),
        (rot(&["ADD", &huge]), "too large"),
        (rot(&["ADD", &deep]), "not JSON"),
        (
            rot(&["ADD", &with_member(ec_c.clone(), "d", json!("AAAA"))]),
            "private member 'd'",
        ),
        (
            rot(&["ADD", &with_member(rsa_c.clone(), "p", json!("AAAA"))]),
            "private member 'p'",
        ),
        (
            rot(&["ADD", r#"{"kty":"oct","k":"c2VjcmV0"}"#]),
            "private member 'k'",
        ),
        (rot(&["ADD", r#"{"kty":"oct"}"#]), "'oct' keys"),
        (
            rot(&[
                "ADD",
                &with_member(ec_c.clone(), "y", json!(testkeys::RFC7517_EC_X)),
            ]),
            "not on P-256",
        ),
        (
            rot(&["ADD", &with_member(ec_c.clone(), "x", json!("AAAA"))]),
            "32 octets",
        ),
        (
            rot(&["ADD", &testkeys::rsa("s", 1, 1024).to_string()]),
            "at least 2048",
        ),
        (
            rot(&["ADD", &with_member(rsa_c.clone(), "e", json!("AQAB=="))]),
            "unpadded base64url",
        ),
        (
            rot(&["ADD", &with_member(rsa_c.clone(), "alg", json!("ES256"))]),
            "does not fit",
        ),
        (
            rot(&["ADD", &with_member(rsa_c.clone(), "foo", json!(1))]),
            "unknown member 'foo'",
        ),
        (
            rot(&["ADD", &with_member(rsa_c.clone(), "kid", json!(""))]),
            "'kid' must not be empty",
        ),
        (rot(&["ADD", &ec("a", 5)]), "duplicate kid 'a'"),
        (
            rot(&["ADD", &ec("c", 3), "ADD", &ec("c", 4)]),
            "duplicate kid 'c'",
        ),
        (rot(&["PROMOTE", "nope"]), "unknown kid 'nope'"),
        (rot(&["RETIRE", "nope"]), "unknown kid 'nope'"),
        (
            rot(&["PROMOTE", "a"]),
            "BADSTATE kid 'a' is already current",
        ),
        (rot(&["RETIRE", "a"]), "cannot retire the current key 'a'"),
        (rot(&["ADD", &ec("c", 3), "RETIRE", "nope"]), "unknown kid"),
        (rot(&["REPLACE", "{}"]), "missing 'keys'"),
        (
            rot(&["REPLACE", r#"{"keys":[]}"#]),
            "cannot retire the current key",
        ),
        (
            rot(&["REPLACE", &format!(r#"{{"keys":[{}]}}"#, ec("a", 9))]),
            "different key material",
        ),
        (
            rot(&["REPLACE", &format!(r#"{{"keys":[{0},{0}]}}"#, ec("a", 1))]),
            "duplicate kid",
        ),
    ];
    check_all(rot_cases, 19);
}

#[test]
fn bytes_types_and_names_errors_change_nothing() {
    let mut all: Cases = Vec::new();
    // Non-UTF-8 bytes and a key set key holding another type.
    all.push((
        vec![
            b"JWKS.ROTATE".to_vec(),
            b"ks".to_vec(),
            b"ADD".to_vec(),
            vec![0xff, 0xfe, b'{'],
        ],
        "not valid UTF-8",
    ));
    all.push((
        vec![
            b"JWKS.ROTATE".to_vec(),
            b"ks".to_vec(),
            b"PROMOTE".to_vec(),
            vec![0xc3, 0x28],
        ],
        "not valid UTF-8",
    ));
    all.push((
        vec![
            b"JWKS.ROTATE".to_vec(),
            b"str".to_vec(),
            b"ADD".to_vec(),
            ec("z", 7).into_bytes(),
        ],
        "WRONGTYPE",
    ));
    all.push((vec![b"JWKS.GET".to_vec(), b"str".to_vec()], "WRONGTYPE"));
    all.push((vec![b"JWKS.INFO".to_vec(), b"str".to_vec()], "WRONGTYPE"));
    all.push((
        vec![
            b"JWKS.ROTATE".to_vec(),
            b"w1".to_vec(),
            b"PROMOTE".to_vec(),
            b"a".to_vec(),
        ],
        "WRONGTYPE key '{w1}:audit'",
    ));
    all.push((
        vec![
            b"JWKS.ROTATE".to_vec(),
            b"w3".to_vec(),
            b"ADD".to_vec(),
            ec("z", 7).into_bytes(),
        ],
        "WRONGTYPE key '{w3}:metrics'",
    ));
    all.push((
        vec![
            b"JWKS.ROTATE".to_vec(),
            b"a}b".to_vec(),
            b"ADD".to_vec(),
            ec("z", 7).into_bytes(),
        ],
        "invalid key set name",
    ));
    // Names no key set may have: derived names of any key set, the wrapped form, too long.
    for name in [
        &b""[..],
        b"{ks}",
        b"{ks}:cache",
        b"jwks:{auth}:audit",
        b"k:metrics",
        b"k:events",
        &[b'n'; 513],
    ] {
        all.push((
            vec![
                b"JWKS.ROTATE".to_vec(),
                name.to_vec(),
                b"ADD".to_vec(),
                ec("z", 7).into_bytes(),
            ],
            "BADNAME invalid key set name",
        ));
    }

    check_all(all, 15);
}

/// Runs each rejected command against a fresh server set up by `setup`: the error names
/// the problem, DEBUG DIGEST does not move, a WATCH on the key set and its derived keys
/// is not aborted, and the server still answers.
fn check_all(all: Cases, at_least: usize) {
    let server = Server::start();
    let mut con = server.conn();
    setup(&mut con);
    let mut watcher = server.conn();
    for (args, needle) in &all {
        let before = digest(&mut con);
        let name = args.get(1).cloned().unwrap_or_default();
        let mut watched = vec![name.clone(), b"ks".to_vec()];
        for suffix in [":cache", ":audit", ":metrics"] {
            watched.push([b"{", name.as_slice(), b"}", suffix.as_bytes()].concat());
            watched.push([name.as_slice(), suffix.as_bytes()].concat());
            watched.push(format!("{{ks}}{suffix}").into_bytes());
        }
        let _: () = cmd("WATCH", &watched).query(&mut watcher).unwrap();
        let mut c = redis::cmd(std::str::from_utf8(&args[0]).unwrap());
        for a in &args[1..] {
            c.arg(a.as_slice());
        }
        let shown: Vec<String> = args
            .iter()
            .map(|a| String::from_utf8_lossy(a).chars().take(60).collect())
            .collect();
        match c.query::<redis::Value>(&mut con) {
            Ok(v) => panic!("{shown:?} accepted: {v:?}"),
            Err(e) => {
                let text = format!("{} {}", e.code().unwrap_or(""), e.detail().unwrap_or(""));
                assert!(
                    text.contains(needle),
                    "{shown:?}: expected {needle:?} in {text:?}"
                );
            }
        }
        assert_eq!(digest(&mut con), before, "{shown:?} changed the dataset");
        let _: () = redis::cmd("MULTI").query(&mut watcher).unwrap();
        let _: () = redis::cmd("PING").query(&mut watcher).unwrap();
        let exec: Option<Vec<String>> = redis::cmd("EXEC").query(&mut watcher).unwrap();
        assert_eq!(
            exec,
            Some(vec!["PONG".to_string()]),
            "{shown:?} aborted a WATCH"
        );
    }
    assert!(all.len() >= at_least, "{} cases", all.len());
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}
