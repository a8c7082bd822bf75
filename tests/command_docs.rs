//! COMMAND DOCS and COMMAND INFO come from the module's one command table: every public
//! command has a summary, since, complexity and typed arguments (so redis-cli can show
//! hints), and a key spec with the access it really needs.

mod common;

use std::collections::HashMap;

use common::*;
use redis::Value;

fn map(v: &Value) -> HashMap<String, Value> {
    pairs(v).into_iter().collect()
}

fn args_of(doc: &HashMap<String, Value>) -> Vec<HashMap<String, Value>> {
    match doc.get("arguments") {
        Some(Value::Array(items)) => items.iter().map(map).collect(),
        _ => Vec::new(),
    }
}

fn flags(arg: &HashMap<String, Value>) -> Vec<String> {
    match arg.get("flags") {
        Some(Value::Array(f) | Value::Set(f)) => f.iter().map(as_string).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn every_public_command_is_documented_with_typed_arguments() {
    let server = Server::start();
    let mut con = server.conn();
    let public = [
        ("jwks.rotate", 6),
        ("jwks.invalidate", 2),
        ("jwks.get", 2),
        ("jwks.key", 2),
        ("jwks.info", 1),
        ("jwks.policy", 3),
        ("jwks.stats", 0),
    ];
    for (name, arg_count) in public {
        let reply: Value = cmd("COMMAND", &["DOCS", name]).query(&mut con).unwrap();
        let docs = map(&reply);
        let doc = map(&docs[name]);
        for field in ["summary", "since", "complexity"] {
            assert!(!as_string(&doc[field]).is_empty(), "{name}: no {field}");
        }
        assert_eq!(as_string(&doc["group"]), "module");
        let args = args_of(&doc);
        assert_eq!(args.len(), arg_count, "{name}: {args:?}");
        if arg_count > 0 {
            assert_eq!(as_string(&args[0]["type"]), "key", "{name}");
        }
        for a in &args {
            assert!(!as_string(&a["summary"]).is_empty(), "{name}: {a:?}");
        }
    }
    // JWKS.ROTATE: options with their tokens and types, then one or more operations.
    let reply: Value = cmd("COMMAND", &["DOCS", "jwks.rotate"])
        .query(&mut con)
        .unwrap();
    let doc = map(&map(&reply)["jwks.rotate"]);
    let args = args_of(&doc);
    let token = |a: &HashMap<String, Value>| a.get("token").map(as_string).unwrap_or_default();
    let shape: Vec<(String, String, Vec<String>)> = args
        .iter()
        .map(|a| (token(a), as_string(&a["type"]), flags(a)))
        .collect();
    assert_eq!(
        shape[1..],
        [
            (
                "IFGEN".to_string(),
                "integer".to_string(),
                vec!["optional".to_string()]
            ),
            ("REASON".into(), "string".into(), vec!["optional".into()]),
            ("FORCE".into(), "pure-token".into(), vec!["optional".into()]),
            (
                "DRYRUN".into(),
                "pure-token".into(),
                vec!["optional".into()]
            ),
            ("".into(), "oneof".into(), vec!["multiple".into()]),
        ]
    );
    let ops: Vec<String> = match args[5].get("arguments") {
        Some(Value::Array(items)) => items.iter().map(|a| token(&map(a))).collect(),
        other => panic!("{other:?}"),
    };
    assert_eq!(ops, ["ADD", "PROMOTE", "RETIRE", "REPLACE"]);
}

#[test]
fn key_specs_say_what_access_each_command_needs() {
    let server = Server::start();
    let mut con = server.conn();
    for (name, flag, access) in [
        ("jwks.get", "readonly", "RO"),
        ("jwks.key", "readonly", "RO"),
        ("jwks.info", "readonly", "RO"),
        ("jwks.invalidate", "write", "RO"),
        ("jwks.rotate", "write", "RW"),
        ("jwks.policy", "write", "RW"),
    ] {
        let reply: Value = cmd("COMMAND", &["INFO", name]).query(&mut con).unwrap();
        let Value::Array(outer) = reply else { panic!() };
        let Value::Array(info) = &outer[0] else {
            panic!()
        };
        assert!(
            strings(&info[2]).contains(&flag.to_string()),
            "{name}: {:?}",
            info[2]
        );
        let Value::Array(specs) = &info[8] else {
            panic!("{name}: {info:?}")
        };
        let spec = map(&specs[0]);
        assert!(
            strings(&spec["flags"]).contains(&access.to_string()),
            "{name}: {spec:?}"
        );
    }
    // MODULE LIST shows the crate's version.
    let modules: Value = cmd("MODULE", &["LIST"]).query(&mut con).unwrap();
    let Value::Array(list) = modules else {
        panic!()
    };
    let jwks = list
        .iter()
        .map(map)
        .find(|m| as_string(&m["name"]) == "jwks")
        .unwrap();
    let v: Vec<i64> = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(as_int(&jwks["ver"]), v[0] * 10_000 + v[1] * 100 + v[2]);
}
