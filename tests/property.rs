//! Thousands of random command sequences (valid and invalid ops, random kids, random
//! orders) from a fixed seed against a live server, checking the invariants after each step.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use redis::{Connection, Value};
use serde_json::Value as Json;

const PUBLIC_MEMBERS: &[&str] = &[
    "kty", "kid", "use", "alg", "key_ops", "x5c", "x5t", "x5t#S256", "n", "e", "crv", "x", "y",
];

fn kid_pool(i: u64) -> String {
    format!("k{i}")
}

fn jwk_for(rng: &mut Rng, kid: &str) -> String {
    let seed = rng.below(40) + 1;
    match rng.below(10) {
        0..=4 => ec(kid, seed),
        5..=7 => rsa(kid, seed),
        // Invalid ones: private member, short modulus, not JSON, oct.
        8 => {
            let mut v: Json = serde_json::from_str(&ec(kid, seed)).unwrap();
            v["d"] = Json::from("AAAA");
            v.to_string()
        }
        _ => {
            let bad = [
                testkeys::rsa(kid, seed, 1024).to_string(),
                "{not json".to_string(),
                r#"{"kty":"oct","k":"AAAA"}"#.to_string(),
            ];
            rng.pick(&bad).clone()
        }
    }
}

fn random_ops(rng: &mut Rng) -> Vec<String> {
    let mut ops = Vec::new();
    for _ in 0..=rng.below(3) {
        let kid = kid_pool(rng.below(12));
        match rng.below(8) {
            0..=2 => {
                ops.push("ADD".into());
                ops.push(jwk_for(rng, &kid));
            }
            3 | 4 => {
                ops.push("PROMOTE".into());
                ops.push(kid);
            }
            5 | 6 => {
                ops.push("RETIRE".into());
                ops.push(kid);
            }
            _ => {
                let keys: Vec<Json> = (0..rng.below(4))
                    .map(|_| {
                        let k = kid_pool(rng.below(12));
                        // Key material derived from the kid so a kid keeps one key.
                        serde_json::from_str(&ec(&k, k[1..].parse::<u64>().unwrap() + 100)).unwrap()
                    })
                    .collect();
                ops.push("REPLACE".into());
                ops.push(serde_json::json!({ "keys": keys }).to_string());
            }
        }
    }
    ops
}

fn info_states(con: &mut Connection, key: &str) -> Vec<(String, String)> {
    let info: Value = cmd("JWKS.INFO", &[key]).query(con).unwrap();
    if info == Value::Nil {
        return Vec::new();
    }
    match field(&info, "keys") {
        Value::Array(keys) => keys
            .iter()
            .map(|k| (as_string(&field(k, "kid")), as_string(&field(k, "state"))))
            .collect(),
        other => panic!("{other:?}"),
    }
}

fn counters(con: &mut Connection, key: &str) -> HashMap<String, i64> {
    cmd("HGETALL", &[&format!("{{{key}}}:metrics")])
        .query(con)
        .unwrap()
}

#[test]
fn random_command_sequences_keep_the_invariants() {
    // A short audit stream keeps DEBUG DIGEST (run every step) cheap.
    let server = Server::with_module_args(&["audit-maxlen", "100"], &[]);
    let mut con = server.conn();
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let keysets = ["ps1", "ps2"];
    let mut last_counters: HashMap<&str, HashMap<String, i64>> = HashMap::new();
    let mut accepted = 0;
    let steps = 3000;
    for step in 0..steps {
        let key = *rng.pick(&keysets);
        let before = digest(&mut con);
        let result: redis::RedisResult<Value> = match rng.below(10) {
            0 => cmd("JWKS.INVALIDATE", &[key]).query(&mut con),
            1 => cmd("JWKS.GET", &[key]).query(&mut con),
            _ => {
                let mut args: Vec<String> = Vec::new();
                if rng.below(4) == 0 {
                    let info: Value = cmd("JWKS.INFO", &[key]).query(&mut con).unwrap();
                    let generation = if info == Value::Nil {
                        0
                    } else {
                        as_int(&field(&info, "generation"))
                    };
                    // Right generation, or a stale one.
                    let g = generation - (rng.below(2) as i64);
                    args.push("IFGEN".into());
                    args.push(g.max(0).to_string());
                }
                args.extend(random_ops(&mut rng));
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                rotate(&mut con, key, &refs)
            }
        };
        match &result {
            Ok(_) => accepted += 1,
            Err(e) => {
                // A rejected command changes nothing.
                let code = e.code().unwrap_or_default();
                assert!(
                    [
                        "ERR",
                        "BADJWK",
                        "NOKID",
                        "KIDCONFLICT",
                        "BADSTATE",
                        "FULL",
                        "GENMISMATCH",
                        "NOKEYSET",
                    ]
                    .contains(&code),
                    "{e}"
                );
                assert_eq!(
                    digest(&mut con),
                    before,
                    "step {step}: rejected command changed data"
                );
            }
        }

        // The server is alive.
        let pong: String = redis::cmd("PING").query(&mut con).unwrap();
        assert_eq!(pong, "PONG");
        // At most one current key.
        let states = info_states(&mut con, key);
        assert!(
            states.iter().filter(|(_, s)| s == "current").count() <= 1,
            "step {step}: {states:?}"
        );
        // The published JWKS parses, has only public members, and equals a fresh render.
        let served: Option<String> = cmd("JWKS.GET", &[key]).query(&mut con).unwrap();
        if let Some(doc) = served {
            let parsed: Json = serde_json::from_str(&doc).expect("JWKS parses");
            let kids: Vec<String> = parsed["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| {
                    for member in k.as_object().unwrap().keys() {
                        assert!(
                            PUBLIC_MEMBERS.contains(&member.as_str()),
                            "step {step}: member {member}"
                        );
                    }
                    k["kid"].as_str().unwrap().to_owned()
                })
                .collect();
            let published: Vec<String> = states.iter().map(|(k, _)| k.clone()).collect();
            assert_eq!(kids, published, "step {step}");
            let unique: HashSet<&String> = kids.iter().collect();
            assert_eq!(unique.len(), kids.len());
            let _: i64 = cmd("JWKS.INVALIDATE", &[key]).query(&mut con).unwrap();
            let fresh: String = cmd("JWKS.GET", &[key]).query(&mut con).unwrap();
            assert_eq!(
                fresh, doc,
                "step {step}: cached JWKS differs from the key set"
            );
        }
        // Counters only grow.
        let now = counters(&mut con, key);
        if let Some(prev) = last_counters.get(key) {
            for (name, value) in prev {
                assert!(
                    now.get(name).copied().unwrap_or(0) >= *value,
                    "step {step}: {name} shrank"
                );
            }
        }
        last_counters.insert(key, now);
    }
    // The sequence exercised both paths.
    assert!(
        accepted > steps / 5 && accepted < steps,
        "accepted {accepted} of {steps}"
    );
}
