//! Another application's keys at names that merely look derived (`session:{abc}:cache`,
//! `{user123}:cache`) are never read, changed or deleted while no key set owns the name,
//! whichever command put them there, with or without the keyspace hook; and a new key set
//! whose derived name holds such a value is refused (`BUSYKEY`, naming the key), writing
//! nothing.

mod common;

use common::*;
use redis::{Connection, Value};

fn servers() -> Vec<Server> {
    vec![
        Server::start(),
        Server::with_module_args(&["keyspace-hook", "yes"], &[]),
    ]
}

fn get(con: &mut Connection, key: &str) -> Option<String> {
    cmd("GET", &[key]).query(con).unwrap()
}

fn settle(con: &mut Connection) {
    // The module's jobs run right after the command or in the next event-loop iteration.
    std::thread::sleep(std::time::Duration::from_millis(60));
    let _: String = cmd("PING", &[] as &[&str]).query(con).unwrap();
}

#[test]
fn values_at_derived_looking_names_survive_every_generic_command() {
    for server in servers() {
        let mut con = server.conn();
        let _: () = cmd("SET", &["session:{abc}:cache", "x"])
            .query(&mut con)
            .unwrap();
        let _: () = cmd("SET", &["{user123}:cache", "y"])
            .query(&mut con)
            .unwrap();
        let _: () = cmd("SET", &["src", "z"]).query(&mut con).unwrap();
        let _: () = cmd("RENAME", &["src", "app:{r}:cache"])
            .query(&mut con)
            .unwrap();
        let _: i64 = cmd("COPY", &["{user123}:cache", "{c}:cache"])
            .query(&mut con)
            .unwrap();
        let dump: Vec<u8> = cmd("DUMP", &["{user123}:cache"]).query(&mut con).unwrap();
        let _: () = redis::cmd("RESTORE")
            .arg("{d}:cache")
            .arg(0)
            .arg(dump)
            .query(&mut con)
            .unwrap();
        let _: () = cmd("SELECT", &["1"]).query(&mut con).unwrap();
        let _: () = cmd("SET", &["{m}:cache", "w"]).query(&mut con).unwrap();
        let _: i64 = cmd("MOVE", &["{m}:cache", "0"]).query(&mut con).unwrap();
        let _: () = cmd("SELECT", &["0"]).query(&mut con).unwrap();
        let _: i64 = cmd("HSET", &["{h}:metrics", "visits", "3"])
            .query(&mut con)
            .unwrap();
        let _: String = cmd("XADD", &["{s}:audit", "*", "who", "me"])
            .query(&mut con)
            .unwrap();
        settle(&mut con);
        assert_eq!(get(&mut con, "session:{abc}:cache").as_deref(), Some("x"));
        assert_eq!(get(&mut con, "{user123}:cache").as_deref(), Some("y"));
        assert_eq!(get(&mut con, "app:{r}:cache").as_deref(), Some("z"));
        assert_eq!(get(&mut con, "{c}:cache").as_deref(), Some("y"));
        assert_eq!(get(&mut con, "{d}:cache").as_deref(), Some("y"));
        assert_eq!(get(&mut con, "{m}:cache").as_deref(), Some("w"));
        let h: i64 = cmd("HLEN", &["{h}:metrics"]).query(&mut con).unwrap();
        let s: i64 = cmd("XLEN", &["{s}:audit"]).query(&mut con).unwrap();
        assert_eq!((h, s), (1, 1));
        assert!(
            !server.log().contains("redis-jwks deleted"),
            "{}",
            server.log()
        );
    }
}

#[test]
fn a_new_key_set_refuses_a_strangers_value_at_its_derived_names() {
    for server in servers() {
        let mut con = server.conn();
        for (name, setup) in [
            ("session:{abc}", vec!["SET", "session:{abc}:cache", "x"]),
            ("u", vec!["HSET", "{u}:metrics", "visits", "3"]),
            ("v", vec!["XADD", "{v}:audit", "*", "who", "me"]),
            ("w", vec!["SET", "{w}:cache", "x"]),
        ] {
            let _: Value = cmd(setup[0], &setup[1..]).query(&mut con).unwrap();
            let before = digest(&mut con);
            let err = rotate(&mut con, name, &["ADD", &ec("k", 1), "PROMOTE", "k"]).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("BUSYKEY"), "{name}: {text}");
            assert!(text.contains(setup[1]), "names the key: {text}");
            assert_eq!(digest(&mut con), before, "{name}: nothing written");
        }
    }
}

#[test]
fn a_key_set_created_again_keeps_its_own_audit_trail_and_counters() {
    for server in servers() {
        let mut con = server.conn();
        let k = "jwks:{again}";
        rotate(&mut con, k, &["ADD", &ec("a", 1), "PROMOTE", "a"]).unwrap();
        let _: Option<String> = cmd("JWKS.GET", &[k]).query(&mut con).unwrap();
        // DEL and a new key set in one pipeline: the old cache's clean-up may still be
        // queued (Redis 7.0) and is the module's own.
        let (_, _): (i64, Value) = redis::pipe()
            .cmd("DEL")
            .arg(k)
            .cmd("JWKS.ROTATE")
            .arg(k)
            .arg("ADD")
            .arg(ec("b", 2))
            .arg("PROMOTE")
            .arg("b")
            .query(&mut con)
            .unwrap();
        settle(&mut con);
        let actions: Vec<String> = audit(&mut con, &derived(k, "audit"))
            .into_iter()
            .filter_map(|e| e.get("action").cloned())
            .collect();
        assert!(actions.len() >= 4, "{actions:?}");
        let doc: Option<String> = cmd("JWKS.GET", &[k]).query(&mut con).unwrap();
        assert!(doc.unwrap_or_default().contains("\"b\""));
    }
}
