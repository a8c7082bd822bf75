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
        ("jwks.policy", 5),
        ("jwks.stats", 0),
        ("jwks.ack", 5),
        ("jwks.verifiers", 1),
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
        ("jwks.verifiers", "readonly", "RO"),
        // Not readonly (cluster clients must reach the primary) and not write.
        ("jwks.ack", "fast", "RO"),
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

/// The public commands, each with arguments that pass its arity, and the categories its
/// flags give it.
const CATEGORIES: [(&str, &[&str], &[&str]); 7] = [
    ("jwks.get", &["jwks:{a}"], &["read", "fast"]),
    ("jwks.key", &["jwks:{a}", "kid"], &["read", "fast"]),
    ("jwks.info", &["jwks:{a}"], &["read", "slow"]),
    ("jwks.stats", &[], &["read", "slow"]),
    (
        "jwks.rotate",
        &["jwks:{a}", "RETIRE", "kid"],
        &["write", "slow"],
    ),
    ("jwks.invalidate", &["jwks:{a}"], &["write", "fast"]),
    ("jwks.policy", &["jwks:{a}"], &["write", "slow"]),
];

/// Where modules can set their commands' ACL categories (Redis 7.2+, Valkey), every command
/// is in those its flags say; where they can also add one (Redis 7.4+, Valkey), in `@jwks`
/// too. On Redis 7.0 module commands are in no category: only `+<command>` grants them.
/// Checked by what the server enforces (COMMAND INFO and ACL DRYRUN), not by
/// `ACL CAT jwks`'s listing, which Valkey 8.0.1 leaves empty for module categories.
#[test]
fn every_command_is_in_its_acl_categories() {
    let server = Server::start();
    let mut con = server.conn();
    let v = server_version();
    let categories_set = v.valkey || v.at_least(7, 2);
    let module_categories = v.valkey || v.at_least(7, 4);
    let dryrun = |con: &mut redis::Connection, user: &str, name: &str, args: &[&str]| {
        let mut c = cmd("ACL", &["DRYRUN", user, name]);
        for a in args {
            c.arg(*a);
        }
        let reply: String = c.query(con).unwrap();
        reply == "OK"
    };
    let setuser = |con: &mut redis::Connection, user: &str, rules: &[&str]| {
        let mut c = cmd("ACL", &["SETUSER", user, "on", "nopass", "~*"]);
        for r in rules {
            c.arg(*r);
        }
        let _: () = c.query(con).unwrap();
    };
    setuser(&mut con, "reader", &["-@all", "+@read"]);
    setuser(&mut con, "writer", &["-@all", "+@write"]);
    setuser(&mut con, "by_name", &["-@all"]);
    if module_categories {
        setuser(&mut con, "jwks_only", &["-@all", "+@jwks"]);
        setuser(&mut con, "all_but_jwks", &["+@all", "-@jwks"]);
    } else {
        let unknown: redis::RedisResult<()> =
            cmd("ACL", &["SETUSER", "jwks_only", "+@jwks"]).query(&mut con);
        assert!(
            unknown.is_err(),
            "{v:?} has no module categories, yet knows @jwks"
        );
    }
    for (name, args, categories) in CATEGORIES {
        let reply: Value = cmd("COMMAND", &["INFO", name]).query(&mut con).unwrap();
        let Value::Array(outer) = reply else { panic!() };
        let Value::Array(info) = &outer[0] else {
            panic!("{name}: {outer:?}")
        };
        let listed = strings(&info[6]);
        if !categories_set {
            assert!(listed.is_empty(), "{name} on {v:?}: {listed:?}");
        }
        for category in categories.iter().filter(|_| categories_set) {
            assert!(
                listed.contains(&format!("@{category}")),
                "{name}: {listed:?}"
            );
        }
        assert_eq!(
            listed.contains(&"@jwks".to_string()),
            module_categories,
            "{name} on {v:?}: {listed:?}"
        );
        let read = categories.contains(&"read");
        assert_eq!(
            dryrun(&mut con, "reader", name, args),
            read && categories_set,
            "{name}"
        );
        assert_eq!(
            dryrun(&mut con, "writer", name, args),
            !read && categories_set,
            "{name}"
        );
        let _: () = cmd("ACL", &["SETUSER", "by_name", &format!("+{name}")])
            .query(&mut con)
            .unwrap();
        assert!(dryrun(&mut con, "by_name", name, args), "{name}");
        if module_categories {
            assert!(dryrun(&mut con, "jwks_only", name, args), "{name}");
            assert!(!dryrun(&mut con, "all_but_jwks", name, args), "{name}");
        }
    }
}
