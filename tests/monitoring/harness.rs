//! The end-to-end stack: two Redis nodes, and docs/monitoring.md's recipes run verbatim
//! (ports aside) in a private mount and PID namespace, with a stand-in systemctl, starting
//! redis_exporter, Prometheus and Alertmanager, which posts to a local listener standing in
//! for Slack; and how the tests ask Prometheus and the listener. What the stack must do is
//! in `end_to_end`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value as Json;

use crate::common::*;
use crate::support::{doc_blocks, http_get, wait_until, Block, RUN};

/// A stand-in for Slack's webhook: records every POST body, answers 200.
pub fn slack_listener() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind listener");
    let port = listener.local_addr().expect("addr").port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (port, bodies)
}

pub fn prom_query(port: u16, query: &str) -> Vec<Json> {
    let url = format!("http://127.0.0.1:{port}/api/v1/query");
    match ureq::get(&url).query("query", query).call() {
        Ok(resp) => {
            let text = resp.into_string().unwrap_or_default();
            let v: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
            v["data"]["result"].as_array().cloned().unwrap_or_default()
        }
        Err(_) => Vec::new(),
    }
}

pub fn prom_value(port: u16, query: &str) -> Option<(f64, Json)> {
    let r = prom_query(port, query);
    let first = r.first()?;
    let v = first["value"][1].as_str()?.parse().ok()?;
    Some((v, first["metric"].clone()))
}

/// The alerts Prometheus holds, as (alertname, instance) -> (state, activeAt).
pub fn prom_alerts(port: u16) -> HashMap<(String, String), (String, String)> {
    let text = http_get(&format!("http://127.0.0.1:{port}/api/v1/alerts")).unwrap_or_default();
    let v: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
    let s = |j: &Json| j.as_str().unwrap_or_default().to_owned();
    v["data"]["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            (
                (s(&a["labels"]["alertname"]), s(&a["labels"]["instance"])),
                (s(&a["state"]), s(&a["activeAt"])),
            )
        })
        .collect()
}

/// The test's ports in place of the doc's, as whole numbers (so `r1:6379` and `-p 6379`
/// change alike, `16379` does not).
pub struct Ports(Vec<(&'static str, u16)>);

impl Ports {
    pub fn apply(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let bytes = text.as_bytes();
        let mut i = 0;
        'scan: while i < bytes.len() {
            for (from, to) in &self.0 {
                let end = i + from.len();
                if text[i..].starts_with(from)
                    && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric())
                    && (end == bytes.len() || !bytes[end].is_ascii_alphanumeric())
                {
                    out.push_str(&to.to_string());
                    i = end;
                    continue 'scan;
                }
            }
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
        out
    }
}

pub fn copy_tree(from: &Path, to: &Path, ports: &Ports) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target, ports);
        } else {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            std::fs::write(target, ports.apply(&text)).unwrap();
        }
    }
}

/// Stand-in for systemd (there is none in the test's namespace): `systemctl restart UNIT`
/// stops the unit's previous process and starts the unit file's ExecStart, with ARGS from
/// its EnvironmentFile split at whitespace as systemd does, as its User, from /, then waits
/// until it answers. Before that, it shortens the durations of the installed
/// configuration (intervals, for:, Alertmanager's waits) so the test takes seconds: the
/// only change besides ports.
pub const SYSTEMCTL: &str = r#"#!/bin/sh
set -eu
state=@STATE@
case "$1" in restart|start) ;; *) echo "systemctl (test stand-in): $1 not supported" >&2; exit 1;; esac
unit=${2%.service}
file=/lib/systemd/system/$unit.service
user=$(sed -n 's/^User=//p' "$file")
envfile=$(sed -n 's/^EnvironmentFile=-\{0,1\}//p' "$file")
exec_start=$(sed -n 's/^ExecStart=//p' "$file")
alive() { [ -d "/proc/$1" ] && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null; }
if [ -f "$state/$unit.pid" ]; then
  pid=$(cat "$state/$unit.pid")
  kill "$pid" 2>/dev/null || true
  i=0; while alive "$pid" && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
fi
[ ! -f /etc/prometheus/prometheus.yml ] || sed -i -E 's/^( *(scrape|evaluation)_interval:) 15s$/\1 300ms/' /etc/prometheus/prometheus.yml
[ ! -f /etc/prometheus/jwks_rules.yml ] || sed -i -E 's/^( *(for|keep_firing_for):) ([0-9]+)m$/\1 \3s/' /etc/prometheus/jwks_rules.yml
[ ! -f /etc/prometheus/alertmanager.yml ] || sed -i -E 's/^( *group_wait:) 30s$/\1 100ms/; s/^( *group_interval:) 5m$/\1 250ms/' /etc/prometheus/alertmanager.yml
ARGS=
. "$envfile"
extra=$(cat "$state/$unit.extra" 2>/dev/null || true)
set -f
eval "set -- $exec_start $extra"
cd /
setsid setpriv --reuid="$user" --regid="$user" --init-groups -- "$@" </dev/null >>"$state/$unit.log" 2>&1 &
pid=$!
echo "$pid" > "$state/$unit.pid"
ready=$(cat "$state/$unit.ready")
i=0
until curl -fsS -o /dev/null "$ready" 2>/dev/null; do
  if ! alive "$pid" || [ $i -ge 600 ]; then
    echo "$unit did not start:" >&2; cat "$state/$unit.log" >&2; exit 1
  fi
  sleep 0.05; i=$((i+1))
done
"#;

pub const UNITS: [&str; 3] = [
    "prometheus-redis-exporter",
    "prometheus",
    "prometheus-alertmanager",
];

/// The private mount and PID namespace the doc's recipes run in (`unshare --kill-child`):
/// killing it ends, and reaps, every daemon started in it, however the test ends.
pub struct Namespace {
    child: std::process::Child,
    state: PathBuf,
}

impl Namespace {
    /// Runs `sh -eu -c code` in the namespace's mounts, from `cwd`.
    pub fn sh(&self, cwd: &Path, code: &str) -> Output {
        Command::new("nsenter")
            .arg(format!("--mount=/proc/{}/ns/mnt", self.child.id()))
            .args(["--", "sh", "-eu", "-c", code])
            .current_dir(cwd)
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    }

    /// Every daemon answers (the stand-in systemctl waited for that once).
    pub fn assert_running(&self) {
        for unit in UNITS {
            let url = std::fs::read_to_string(self.state.join(format!("{unit}.ready"))).unwrap();
            assert!(
                http_get(&url).is_some(),
                "{unit} stopped answering:\n{}",
                std::fs::read_to_string(self.state.join(format!("{unit}.log"))).unwrap_or_default()
            );
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus's value of `query` once it equals `want`.
pub fn wait_value(prom: u16, query: &str, want: f64) -> Json {
    wait_until(&format!("{query} == {want}"), 30, || {
        prom_value(prom, query)
            .filter(|(v, _)| *v == want)
            .map(|(_, m)| m)
    })
}

pub fn slack_text(bodies: &Arc<Mutex<Vec<String>>>, alert: &str) -> String {
    let body = wait_until(&format!("{alert} in Slack"), 30, || {
        bodies
            .lock()
            .unwrap()
            .iter()
            .find(|b| b.contains(alert))
            .cloned()
    });
    let payload: Json = serde_json::from_str(&body).expect("Slack payload is JSON");
    assert_eq!(payload["channel"], "#auth-oncall");
    let attachment = &payload["attachments"][0];
    assert!(
        attachment["title"]
            .as_str()
            .unwrap()
            .starts_with(&format!("[FIRING] {alert} (")),
        "{body}"
    );
    attachment["text"].as_str().unwrap().to_owned()
}

/// The running stack, started once for the end-to-end test; each behaviour it must show is
/// a method in `end_to_end`. Fields drop in order: the namespace (and every daemon in it)
/// first, the Redis nodes last.
pub struct Stack {
    pub daemons: Namespace,
    /// The checkout with the test's ports the recipes run from, under `_dir`.
    pub checkout: PathBuf,
    _dir: tempfile::TempDir,
    /// The doc's runnable blocks; those from `split` on ("Check that it works" and the
    /// runbook) run one by one, after the alerts fired.
    pub run: Vec<Block>,
    pub split: usize,
    pub ports: Ports,
    /// Prometheus's port.
    pub prom: u16,
    /// The webhook URL the recipes were given, and every body posted to it.
    pub hook: String,
    pub bodies: Arc<Mutex<Vec<String>>>,
    /// `setup.sh`'s exit status and its output (and the namespace's).
    pub setup_status: String,
    pub setup_out: String,
    pub started: Instant,
    /// The two nodes as Prometheus's `instance` label: with the module, without.
    pub node: String,
    pub bare: String,
    /// Connections to the node with the module, db 0 and db 3.
    pub con: redis::Connection,
    pub db3: redis::Connection,
    /// The verifier's connection named `verifier-a`, open to the end so that the runbook's
    /// CLIENT LIST finds it (set by `unknown_kid_spike_alert_reaches_slack`).
    pub verifier: Option<redis::Connection>,
    /// The node with the module (fault injection on, `verifier-behind-ms 100`).
    pub redis: Server,
    /// The node without the module, kept running.
    _plain: Server,
}

impl Stack {
    /// Whether the stack can run here: as root, with `unshare -m` permitted. Says why not.
    pub fn supported() -> bool {
        let uid = Command::new("id").arg("-u").output().unwrap();
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            println!(
                "SKIPPED: docs/monitoring.md's recipes write under /etc/prometheus and start \
                 services as the user prometheus; run this test as root (it uses unshare -m \
                 and a tmpfs, so the host is not changed)"
            );
            return false;
        }
        let probe = Command::new("unshare")
            .args(["-m", "true"])
            .status()
            .unwrap();
        if !probe.success() {
            println!("SKIPPED: unshare -m is not permitted here");
            return false;
        }
        true
    }

    /// The nodes with their key sets, the Slack listener, and the doc's blocks up to "Check
    /// that it works" run as one shell session in a new namespace; returns once that session
    /// ended, whatever its status (`recipes_install_and_start_every_daemon` checks it).
    pub fn start() -> Stack {
        // Two Redis nodes: one with the module (fault injection on), one without.
        // Verifiers count as behind 100 ms after the key set moved on, not a minute.
        let redis = Server::with_module_args(
            &["fault-injection", "yes", "verifier-behind-ms", "100"],
            &[],
        );
        let plain = Server::plain();
        let mut con = redis.conn();
        let mut db3 = redis::Client::open(format!("redis://127.0.0.1:{}/3", redis.port))
            .unwrap()
            .get_connection()
            .unwrap();
        rotate(
            &mut con,
            "jwks:{auth}",
            &["ADD", &ec("k1", 1), "PROMOTE", "k1"],
        )
        .unwrap();
        rotate(&mut con, "jwks:{old}", &["ADD", &ec("k1", 1)]).unwrap();
        // A name with ':' right after the db.
        rotate(&mut db3, "7:tenant:{x}", &["ADD", &ec("k1", 1)]).unwrap();
        let _: String = cmd("JWKS.GET", &["jwks:{auth}"]).query(&mut con).unwrap();
        let _: i64 = cmd("JWKS.INVALIDATE", &["jwks:{auth}"])
            .query(&mut con)
            .unwrap();

        let (slack_port, bodies) = slack_listener();
        let (exporter, prom, am) = (free_port(), free_port(), free_port());
        let ports = Ports(vec![
            ("6379", redis.port),
            ("6380", plain.port),
            ("9121", exporter),
            ("9090", prom),
            ("9093", am),
        ]);

        // A checkout with the test's ports, the stand-in systemctl, and the daemons' state.
        let dir = tempfile::tempdir().unwrap();
        let checkout = dir.path().join("checkout");
        copy_tree(
            &repo_path("monitoring"),
            &checkout.join("monitoring"),
            &ports,
        );
        let state = dir.path().join("state");
        std::fs::create_dir_all(state.join("bin")).unwrap();
        let systemctl = state.join("bin/systemctl");
        std::fs::write(
            &systemctl,
            SYSTEMCTL.replace("@STATE@", &state.display().to_string()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (unit, ready) in [
            (
                "prometheus-redis-exporter",
                format!("http://127.0.0.1:{exporter}/metrics"),
            ),
            ("prometheus", format!("http://127.0.0.1:{prom}/-/ready")),
            (
                "prometheus-alertmanager",
                format!("http://127.0.0.1:{am}/-/ready"),
            ),
        ] {
            std::fs::write(state.join(format!("{unit}.ready")), ready).unwrap();
        }
        // Debian's prometheus listens on :9090 unless told otherwise; the doc leaves it so.
        std::fs::write(
            state.join("prometheus.extra"),
            format!("--web.listen-address=127.0.0.1:{prom}"),
        )
        .unwrap();
        for unit in ["prometheus-redis-exporter", "prometheus-alertmanager"] {
            std::fs::copy(
                format!("/etc/default/{unit}"),
                state.join(format!("default-{unit}")),
            )
            .unwrap();
        }
        // Part 1: every block up to "Check that it works", as one shell session (the webhook
        // URL is what the operator pastes at `read`).
        let run: Vec<Block> = doc_blocks().into_iter().filter(|b| b.info == RUN).collect();
        let split = run
            .iter()
            .position(|b| b.section == "Check that it works")
            .expect("a Check section");
        let setup: String = run[..split]
            .iter()
            .map(|b| ports.apply(&b.code))
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(state.join("setup.sh"), &setup).unwrap();
        std::fs::write(state.join("apt.conf"), "APT::Get::Simulate \"true\";\n").unwrap();
        let namespace = format!(
            "mount -t tmpfs -o mode=0755 tmpfs /etc/prometheus\n\
             mount -t tmpfs -o mode=0755 tmpfs /var/lib/prometheus\n\
             chown prometheus:prometheus /var/lib/prometheus\n\
             mount --bind {s}/default-prometheus-redis-exporter /etc/default/prometheus-redis-exporter\n\
             mount --bind {s}/default-prometheus-alertmanager /etc/default/prometheus-alertmanager\n\
             cd {checkout}\n\
             export PATH={s}/bin:$PATH APT_CONFIG={s}/apt.conf\n\
             status=0\n\
             sh -eux {s}/setup.sh <{s}/stdin >{s}/setup.log 2>&1 || status=$?\n\
             echo $status >{s}/setup.status\n\
             exec sleep 3600\n",
            s = state.display(),
            checkout = checkout.display(),
        );
        let hook = format!("http://127.0.0.1:{slack_port}/services/T000/B000/XXXX");
        std::fs::write(state.join("stdin"), format!("{hook}\n")).unwrap();
        let started = Instant::now();
        let ns_log = std::fs::File::create(state.join("namespace.log")).unwrap();
        let daemons = Namespace {
            child: Command::new("unshare")
                .args(["--mount", "--propagation", "private", "--pid", "--fork"])
                .args([
                    "--kill-child",
                    "--mount-proc",
                    "sh",
                    "-eu",
                    "-c",
                    &namespace,
                ])
                .stdin(Stdio::null())
                .stdout(ns_log.try_clone().unwrap())
                .stderr(ns_log)
                .spawn()
                .expect("unshare"),
            state: state.clone(),
        };
        let status = wait_until("the doc's recipes", 60, || {
            std::fs::read_to_string(state.join("setup.status"))
                .ok()
                .filter(|s| s.ends_with('\n'))
        });
        let setup_out = std::fs::read_to_string(state.join("setup.log")).unwrap()
            + &std::fs::read_to_string(state.join("namespace.log")).unwrap();
        Stack {
            node: format!("127.0.0.1:{}", redis.port),
            bare: format!("127.0.0.1:{}", plain.port),
            daemons,
            checkout,
            _dir: dir,
            run,
            split,
            ports,
            prom,
            hook,
            bodies,
            setup_status: status,
            setup_out,
            started,
            con,
            db3,
            verifier: None,
            redis,
            _plain: plain,
        }
    }

    /// `name{instance="<node with the module>"<extra>}`.
    pub fn sel(&self, name: &str, extra: &str) -> String {
        format!("{name}{{instance=\"{}\"{extra}}}", self.node)
    }

    /// Runs `sh -eu -c code` in the namespace, from the checkout.
    pub fn sh(&self, code: &str) -> Output {
        self.daemons.sh(&self.checkout, code)
    }
}
