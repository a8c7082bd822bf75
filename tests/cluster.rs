//! A real Redis Cluster on loopback (3 primaries, 3 replicas, each loading the module),
//! driven by a cluster-aware client that routes by the commands' declared key positions.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use redis::cluster::{ClusterClient, ClusterConnection};
use redis::Connection;

struct Cluster {
    nodes: Vec<Server>,
}

impl Cluster {
    fn start() -> Cluster {
        let nodes: Vec<Server> = (0..6)
            .map(|_| {
                let bus = free_port().to_string();
                Server::with_args(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-port",
                    &bus,
                    "--repl-diskless-sync-delay",
                    "0",
                ])
            })
            .collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend([
            "--cluster-replicas".into(),
            "1".into(),
            "--cluster-yes".into(),
        ]);
        let out = Command::new("redis-cli")
            .args(&args)
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Cluster { nodes };
        cluster.wait_ok();
        cluster
    }

    fn wait_ok(&self) {
        for n in &self.nodes {
            wait_for("cluster_state:ok", || {
                n.cluster_info()
                    .is_some_and(|i| i.contains("cluster_state:ok"))
            });
        }
    }

    fn client(&self) -> ClusterConnection {
        let urls: Vec<String> = self.nodes.iter().map(|n| n.url()).collect();
        ClusterClient::builder(urls)
            .retries(20)
            .build()
            .and_then(|c| c.get_connection())
            .expect("cluster connection")
    }

    /// The primary that serves `slot`.
    fn owner(&self, slot: i64) -> usize {
        let mut con = self.nodes[0].conn();
        let slots: redis::Value = cmd::<&str>("CLUSTER", &["SLOTS"]).query(&mut con).unwrap();
        let redis::Value::Array(ranges) = slots else {
            panic!()
        };
        for r in ranges {
            let redis::Value::Array(r) = r else { continue };
            let (lo, hi) = (as_int(&r[0]), as_int(&r[1]));
            if (lo..=hi).contains(&slot) {
                let redis::Value::Array(node) = &r[2] else {
                    panic!()
                };
                let port = as_int(&node[1]) as u16;
                return self.nodes.iter().position(|n| n.port == port).unwrap();
            }
        }
        panic!("slot {slot} unassigned");
    }

    /// Waits until the replica of primary `i` has applied everything `i` propagated.
    fn wait_replica_caught_up(&self, i: usize) {
        let offset = |info: &str| -> Option<i64> {
            info.lines()
                .find_map(|l| l.strip_prefix("master_repl_offset:"))
                .and_then(|v| v.trim().parse().ok())
        };
        let replica = (0..self.nodes.len())
            .find(|r| {
                self.nodes[*r].try_info("replication").is_some_and(|info| {
                    info.contains("role:slave")
                        && info.contains(&format!("master_port:{}", self.nodes[i].port))
                })
            })
            .expect("a replica of the primary");
        wait_for("the replica to catch up", || {
            let primary = self.nodes[i]
                .try_info("replication")
                .and_then(|s| offset(&s));
            let copy = self.nodes[replica]
                .try_info("replication")
                .and_then(|s| offset(&s));
            primary.is_some() && primary == copy
        });
    }

    fn node_id(&self, i: usize) -> String {
        cmd::<&str>("CLUSTER", &["MYID"])
            .query(&mut self.nodes[i].conn())
            .unwrap()
    }
}

impl Server {
    fn cluster_info(&self) -> Option<String> {
        let mut c = redis::Client::open(self.url())
            .ok()?
            .get_connection()
            .ok()?;
        cmd::<&str>("CLUSTER", &["INFO"]).query(&mut c).ok()
    }

    fn try_info(&self, section: &str) -> Option<String> {
        let mut c = redis::Client::open(self.url())
            .ok()?
            .get_connection()
            .ok()?;
        cmd("INFO", &[section]).query(&mut c).ok()
    }
}

fn slot(con: &mut Connection, key: &str) -> i64 {
    cmd("CLUSTER", &["KEYSLOT", key]).query(con).unwrap()
}

const KEY_SETS: [&str; 4] = ["jwks:{auth}", "jwks:{billing}", "plain-a", "tenant/42"];

fn derived(key: &str) -> [String; 3] {
    let base = if key.contains('{') {
        key.to_string()
    } else {
        format!("{{{key}}}")
    };
    [
        format!("{base}:cache"),
        format!("{base}:audit"),
        format!("{base}:metrics"),
    ]
}

fn populate(c: &mut ClusterConnection) {
    for (i, k) in KEY_SETS.iter().enumerate() {
        let n = i as u64 * 10;
        let r: redis::Value = cmd("JWKS.ROTATE", &[*k, "ADD", &ec("a", n + 1), "PROMOTE", "a"])
            .query(c)
            .unwrap();
        assert_eq!(as_string(&field(&r, "current")), "a");
        let _: String = cmd("JWKS.GET", &[*k]).query(c).unwrap();
        let _: redis::Value = cmd("JWKS.ROTATE", &[*k, "ADD", &ec("b", n + 2)])
            .query(c)
            .unwrap();
        let _: String = cmd("JWKS.GET", &[*k]).query(c).unwrap();
    }
}

#[test]
fn cluster_slots_resharding_and_failover() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    populate(&mut c);

    // Every key a command touched lies in the key set's slot, on the node that owns it.
    let mut any = cluster.nodes[0].conn();
    let mut total = 0;
    for k in KEY_SETS {
        let s = slot(&mut any, k);
        let owner = cluster.owner(s);
        let mut on_owner = cluster.nodes[owner].conn();
        for d in derived(k) {
            assert_eq!(slot(&mut any, &d), s, "{d} is not in {k}'s slot");
            let exists: i64 = cmd("EXISTS", &[d.as_str()]).query(&mut on_owner).unwrap();
            assert_eq!(exists, 1, "{d} missing on the slot owner");
        }
        let in_slot: i64 = cmd("CLUSTER", &["COUNTKEYSINSLOT", &s.to_string()])
            .query(&mut on_owner)
            .unwrap();
        assert_eq!(in_slot, 4, "{k}: key set + cache + audit + metrics");
        total += 4;
    }
    // Nothing landed anywhere else.
    let keys_on_primaries: i64 = (0..6)
        .filter(|i| {
            cluster.nodes[*i]
                .try_info("replication")
                .is_some_and(|r| r.contains("role:master"))
        })
        .map(|i| {
            cmd::<&str>("DBSIZE", &[])
                .query::<i64>(&mut cluster.nodes[i].conn())
                .unwrap()
        })
        .sum();
    assert_eq!(keys_on_primaries, total);

    // Change events go to the slot's shard: a subscriber on the owner gets one per change.
    let billing = KEY_SETS[1];
    let events = format!("{billing}:events");
    let owner = cluster.owner(slot(&mut any, billing));
    assert_eq!(slot(&mut any, &events), slot(&mut any, billing));
    let mut sub = RawConn::connect(cluster.nodes[owner].port);
    assert!(matches!(sub.call(&["SSUBSCRIBE", &events]), Resp::List(_)));
    let _: redis::Value = cmd("JWKS.ROTATE", &[billing, "PROMOTE", "b"])
        .query(&mut c)
        .unwrap();
    let Resp::List(message) = sub.read() else {
        panic!("no event")
    };
    let event: serde_json::Value = serde_json::from_str(&message[2].text()).unwrap();
    assert_eq!(
        (event["key"].as_str(), event["current"].as_str()),
        (Some(billing), Some("b"))
    );
    drop(sub);

    // A lifecycle change that falls due after resharding: the receiving node applies it.
    let k = KEY_SETS[0];
    let info: redis::Value = cmd("JWKS.INFO", &[k]).query(&mut c).unwrap();
    let redis::Value::Array(keys_info) = field(&info, "keys") else {
        panic!()
    };
    let b_added = keys_info
        .iter()
        .find(|e| as_string(&field(e, "kid")) == "b")
        .map(|e| as_int(&field(e, "added_ms")))
        .unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let promote_after = (now_ms - b_added + 2500).to_string();
    let _: redis::Value = cmd("JWKS.POLICY", &[k, "PROMOTE-AFTER", &promote_after])
        .query(&mut c)
        .unwrap();

    // Resharding: move jwks:{auth}'s slot to another primary while a client keeps reading.
    let s = slot(&mut any, k);
    let from = cluster.owner(s);
    let to = (0..6)
        .find(|i| {
            *i != from
                && cluster.nodes[*i]
                    .try_info("replication")
                    .is_some_and(|r| r.contains("role:master"))
        })
        .unwrap();
    let digests = |i: usize| -> Vec<String> {
        let mut con = cluster.nodes[i].conn();
        std::iter::once(k.to_string())
            .chain(derived(k))
            .map(|key| {
                let v: Vec<String> = cmd("DEBUG", &["DIGEST-VALUE", key.as_str()])
                    .query(&mut con)
                    .unwrap();
                v[0].clone()
            })
            .collect()
    };
    // The policy dropped the cache (it would have outlived the promotion): let a read
    // refill it before taking the digests, so the reads during the move change nothing.
    let _: String = cmd("JWKS.GET", &[k]).query(&mut c).unwrap();
    wait_for("the cache refilled", || {
        cmd("EXISTS", &[derived(k)[0].as_str()])
            .query::<i64>(&mut cluster.nodes[from].conn())
            .unwrap()
            == 1
    });
    let before = digests(from);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, reads) = (stop.clone(), reads.clone());
        let mut rc = cluster.client();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let doc: Option<String> = cmd("JWKS.GET", &[k])
                    .query(&mut rc)
                    .expect("read during resharding");
                assert!(doc.expect("document").contains("\"b\""));
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let (from_id, to_id) = (cluster.node_id(from), cluster.node_id(to));
    let s_str = s.to_string();
    let _: () = cmd("CLUSTER", &["SETSLOT", &s_str, "IMPORTING", &from_id])
        .query(&mut cluster.nodes[to].conn())
        .unwrap();
    let _: () = cmd("CLUSTER", &["SETSLOT", &s_str, "MIGRATING", &to_id])
        .query(&mut cluster.nodes[from].conn())
        .unwrap();
    let mut src = cluster.nodes[from].conn();
    let keys: Vec<String> = cmd("CLUSTER", &["GETKEYSINSLOT", &s_str, "100"])
        .query(&mut src)
        .unwrap();
    assert_eq!(keys.len(), 4);
    // One MIGRATE for the whole key set: it moves together, atomically.
    let mut migrate = redis::cmd("MIGRATE");
    migrate
        .arg("127.0.0.1")
        .arg(cluster.nodes[to].port)
        .arg("")
        .arg(0)
        .arg(5000)
        .arg("KEYS");
    for key in &keys {
        migrate.arg(key);
    }
    let _: () = migrate.query(&mut src).unwrap();
    let migrated_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;

    // The destination first, then the source; the other primaries learn it from the bus.
    for i in [to, from] {
        let _: () = cmd("CLUSTER", &["SETSLOT", &s_str, "NODE", &to_id])
            .query(&mut cluster.nodes[i].conn())
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));

    stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader kept reading");
    assert!(reads.load(Ordering::Relaxed) > 10);
    assert_eq!(cluster.owner(s), to);
    assert_eq!(
        digests(to),
        before,
        "key set, cache, audit and counters arrived intact"
    );
    // The policy promotes b on the node that now holds the key set, after the move.
    wait_for("the scheduled promotion", || {
        let info: redis::Value = cmd("JWKS.INFO", &[k]).query(&mut c).unwrap();
        as_int(&field(&info, "generation")) == 3
    });
    let trail: Vec<(String, Vec<(String, String)>)> = cmd("XRANGE", &[&derived(k)[1], "-", "+"])
        .query(&mut c)
        .unwrap();
    let has = |f: &Vec<(String, String)>, name: &str, value: &str| {
        f.iter().any(|(n, v)| n == name && v == value)
    };
    let (id, fields) = trail
        .iter()
        .find(|(_, f)| has(f, "action", "JWKS_KEY_PROMOTED") && has(f, "user", "(schedule)"))
        .expect("a scheduled promotion in the audit");
    let applied_ms: i64 = id.split('-').next().unwrap().parse().unwrap();
    assert!(
        applied_ms >= migrated_at,
        "applied at {applied_ms}, before the move at {migrated_at}: {fields:?}"
    );
    let info: redis::Value = cmd("JWKS.INFO", &[k]).query(&mut c).unwrap();
    assert_eq!(as_string(&field(&info, "current")), "b");
    let counters = field(&info, "counters");
    assert_eq!(as_int(&field(&counters, "jwt_jwks_rotations_total")), 3);

    // Failover: kill the primary that now serves the slot; its replica takes over.
    // (WAIT on a fresh connection proves nothing: wait for the replica's offset instead.)
    cluster.wait_replica_caught_up(to);
    let before: HashMap<&str, String> = KEY_SETS
        .iter()
        .map(|k| (*k, cmd("JWKS.GET", &[*k]).query::<String>(&mut c).unwrap()))
        .collect();
    let mut cluster = cluster;
    cluster.nodes[to].kill();
    wait_for("a replica to take over the slot", || {
        let alive = (0..6).find(|i| *i != to).unwrap();
        let mut con = cluster.nodes[alive].conn();
        let info: String = cmd::<&str>("CLUSTER", &["INFO"]).query(&mut con).unwrap();
        info.contains("cluster_state:ok") && {
            let new_owner = cluster_owner_excluding(&cluster, s, to);
            new_owner.is_some()
        }
    });
    let mut c = cluster.client();
    for k in KEY_SETS {
        let doc: Option<String> = cmd("JWKS.GET", &[k]).query(&mut c).unwrap();
        assert_eq!(doc.as_ref(), Some(&before[k]), "{k} intact after failover");
    }
    let r: redis::Value = cmd("JWKS.ROTATE", &[k, "RETIRE", "a"])
        .query(&mut c)
        .unwrap();
    assert_eq!(as_int(&field(&r, "generation")), 4);
    assert_eq!(strings(&field(&r, "published")), vec!["b"]);
}

/// The owner of `slot` as seen by a live node, if it is not the dead one.
fn cluster_owner_excluding(cluster: &Cluster, slot: i64, dead: usize) -> Option<usize> {
    let alive = (0..6).find(|i| *i != dead)?;
    let mut con = redis::Client::open(cluster.nodes[alive].url())
        .ok()?
        .get_connection()
        .ok()?;
    let slots: redis::Value = cmd::<&str>("CLUSTER", &["SLOTS"]).query(&mut con).ok()?;
    let redis::Value::Array(ranges) = slots else {
        return None;
    };
    for r in ranges {
        let redis::Value::Array(r) = r else { continue };
        if (as_int(&r[0])..=as_int(&r[1])).contains(&slot) {
            let redis::Value::Array(node) = &r[2] else {
                return None;
            };
            let port = as_int(&node[1]) as u16;
            let i = cluster.nodes.iter().position(|n| n.port == port)?;
            return (i != dead).then_some(i);
        }
    }
    None
}

/// A key set that leaves its node by MIGRATE while its slot moves is not a deletion: the
/// source announces nothing (subscribers keep their keys until the server unsubscribes
/// them at the move) and writes nothing (a key it created in the slot would block
/// `SETSLOT ... NODE`), even when the key set moves before its derived keys.
#[test]
fn a_key_set_migrating_with_its_slot_is_not_announced_deleted() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    let k = "jwks:{moving}";
    let _: redis::Value = cmd("JWKS.ROTATE", &[k, "ADD", &ec("a", 1), "PROMOTE", "a"])
        .query(&mut c)
        .unwrap();
    let doc: Option<String> = cmd("JWKS.GET", &[k]).query(&mut c).unwrap();
    let cache = format!("{k}:cache");
    wait_for("the cache filled", || {
        cmd::<&str>("GET", &[&cache])
            .query::<Option<String>>(&mut c)
            .unwrap()
            == doc
    });
    let s = slot(&mut cluster.nodes[0].conn(), k);
    let from = cluster.owner(s);
    let to = (0..cluster.nodes.len())
        .find(|i| {
            *i != from
                && cluster.nodes[*i]
                    .try_info("replication")
                    .is_some_and(|r| r.contains("role:master"))
        })
        .unwrap();
    let mut sub = RawConn::connect(cluster.nodes[from].port);
    let ack = sub.call(&["SSUBSCRIBE", &format!("{k}:events")]);
    assert!(matches!(ack, Resp::List(_)), "{ack:?}");
    let (from_id, to_id, s_str) = (cluster.node_id(from), cluster.node_id(to), s.to_string());
    let _: () = cmd("CLUSTER", &["SETSLOT", &s_str, "IMPORTING", &from_id])
        .query(&mut cluster.nodes[to].conn())
        .unwrap();
    let mut src = cluster.nodes[from].conn();
    let _: () = cmd("CLUSTER", &["SETSLOT", &s_str, "MIGRATING", &to_id])
        .query(&mut src)
        .unwrap();
    let migrate = |keys: &[&str], src: &mut Connection| {
        let mut m = redis::cmd("MIGRATE");
        m.arg("127.0.0.1")
            .arg(cluster.nodes[to].port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS");
        for key in keys {
            m.arg(*key);
        }
        let _: () = m.query(src).unwrap();
    };
    migrate(&[k], &mut src);
    sub.set_timeout(std::time::Duration::from_millis(300));
    assert_eq!(sub.try_read(), None, "no event from the source");
    let left: i64 = cmd("CLUSTER", &["COUNTKEYSINSLOT", &s_str])
        .query(&mut src)
        .unwrap();
    assert_eq!(left, 3, "cache, audit and counters left, nothing added");
    let (audit, metrics) = (format!("{k}:audit"), format!("{k}:metrics"));
    migrate(&[&cache, &audit, &metrics], &mut src);
    for i in [to, from] {
        let _: () = cmd("CLUSTER", &["SETSLOT", &s_str, "NODE", &to_id])
            .query(&mut cluster.nodes[i].conn())
            .expect("the slot moves: the source holds no key of it");
    }
    let mut t = cluster.nodes[to].conn();
    let moved: Option<String> = cmd("JWKS.GET", &[k]).query(&mut t).unwrap();
    assert_eq!(moved, doc);
    let trail: Vec<redis::Value> = cmd("XRANGE", &[&audit, "-", "+"]).query(&mut t).unwrap();
    assert_eq!(
        trail.len(),
        3,
        "added, promoted, invalidated: no clean-up entry"
    );
}
