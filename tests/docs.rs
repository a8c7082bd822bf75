//! The docs are code: every shell example and redis-cli transcript in README.md and docs/ runs
//! against a real server, so a recipe cannot rot.
//!
//! - ```` ```sh ```` blocks run verbatim, in order, in one bash session per page (a page's
//!   later blocks use its earlier variables), and must succeed; `redis-cli` reaches the
//!   page's server through a shim on PATH, and a command's error reply fails the block.
//! - ```` ```console ```` blocks are transcripts: each `$ command` runs, and its output must be
//!   what the page shows, as redis-cli prints it on a terminal; `...` in a shown line stands
//!   for any text (IDs, times).
//! - ```` ```sh {test=<id>} ```` blocks belong to a dedicated test (monitoring, python, ...):
//!   this test only checks that a test claims `<id>`.
//! - Other blocks (```` ```text ````, ```` ```python ```` ...) are shown, not run.
//!
//! A page starting with `<!-- docs-test: plain-server -->` gets a server without the module
//! (started with `enable-module-command yes`); others get one with it loaded.
//!
//! A page runs in a temp directory, so whatever it writes stays out of the work tree; there
//! `target/release/libredis_jwks.so` is the module under test (`JWKS_MODULE`, else the
//! release build in `CARGO_TARGET_DIR`), and `cargo` builds this repository through a shim.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

#[derive(Debug)]
enum Block {
    Sh(String),
    Console(Vec<(String, Vec<String>)>),
    Tagged(String),
}

fn blocks(page: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = page.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| l.trim_start() != "```")
            .collect();
        let info = info.trim();
        if let Some(id) = info.split("{test=").nth(1) {
            out.push(Block::Tagged(id.trim_end_matches('}').to_owned()));
        } else if info == "sh" {
            out.push(Block::Sh(body.join("\n")));
        } else if info == "console" {
            out.push(Block::Console(transcript(&body)));
        }
    }
    out
}

/// `$ command` lines (continued by a trailing `\`) and the output lines after each.
fn transcript(body: &[&str]) -> Vec<(String, Vec<String>)> {
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    let mut continuing = false;
    for line in body {
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push((command.to_owned(), Vec::new()));
            continuing = command.ends_with('\\');
        } else if continuing {
            let last = steps.last_mut().expect("a command");
            last.0.push('\n');
            last.0.push_str(line);
            continuing = line.ends_with('\\');
        } else if let Some(last) = steps.last_mut() {
            last.1.push((*line).to_owned());
        }
    }
    steps
}

/// `...` in an expected line matches any text.
fn matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split("...").collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let mut rest = actual;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(at) = rest.find(part) else {
                return false;
            };
            rest = &rest[at + part.len()..];
        }
    }
    true
}

/// A directory whose `redis-cli` talks to `port`: with `-e` (an error reply fails) for
/// scripts, formatted as on a terminal for transcripts (JWKS_DOCS_TTY=1); and whose `cargo`
/// builds this repository wherever the page stands.
fn shim(dir: &Path, port: u16) -> PathBuf {
    let bin = dir.join("shim");
    std::fs::create_dir_all(&bin).unwrap();
    let cli = redis_cli();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let repo = repo_path("");
    write_script(
        &bin.join("redis-cli"),
        &format!(
            "#!/bin/sh\nif [ -n \"$JWKS_DOCS_TTY\" ]; then exec {cli} -p {port} --no-raw \"$@\"; fi\n\
             exec {cli} -p {port} -e \"$@\"\n"
        ),
    );
    write_script(
        &bin.join("cargo"),
        &format!(
            "#!/bin/sh\ncd '{}' && exec '{cargo}' \"$@\"\n",
            repo.display()
        ),
    );
    bin
}

fn write_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The module a page's `$PWD/target/release/libredis_jwks.so` stands for.
fn release_module() -> PathBuf {
    match std::env::var_os("JWKS_MODULE") {
        Some(p) => PathBuf::from(p),
        None => target_dir().join("release/libredis_jwks.so"),
    }
}

/// A temp directory for a page to run in: `target/release/libredis_jwks.so` links to the
/// module under test.
fn page_dir(work: &Path) -> PathBuf {
    let dir = work.join("cwd");
    std::fs::create_dir_all(dir.join("target/release")).unwrap();
    std::os::unix::fs::symlink(
        release_module(),
        dir.join("target/release/libredis_jwks.so"),
    )
    .unwrap();
    dir
}

const MARK: &str = "@@docs-step@@";

/// Runs a page's blocks against `port` in directory `cwd`; returns the problems found.
fn run_page(name: &str, page: &str, port: u16, work: &Path, cwd: &Path) -> Vec<String> {
    run_page_with(name, page, port, work, cwd, &[])
}

/// [`run_page`] with the directories `path` first on `PATH` (before the shims).
fn run_page_with(
    name: &str,
    page: &str,
    port: u16,
    work: &Path,
    cwd: &Path,
    path: &[&Path],
) -> Vec<String> {
    let mut script = String::from("set -e\n");
    // One section of output per step; a script block's output is not compared.
    let mut expected: Vec<Option<(String, Vec<String>)>> = Vec::new();
    for block in blocks(page) {
        match block {
            Block::Sh(body) => {
                script.push_str(&format!("echo {MARK}\n{body}\n"));
                expected.push(None);
            }
            Block::Console(steps) => {
                for (command, output) in steps {
                    script.push_str(&format!("echo {MARK}\nJWKS_DOCS_TTY=1 {command}\n"));
                    expected.push(Some((command, output)));
                }
            }
            Block::Tagged(_) => {}
        }
    }
    script.push_str(&format!("echo {MARK}\n"));
    let bin = shim(work, port);
    let mut dirs: Vec<PathBuf> = path.iter().map(|p| p.to_path_buf()).collect();
    dirs.push(bin);
    let path = std::env::join_paths(dirs.into_iter().chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(cwd)
        .env("PATH", path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut problems = Vec::new();
    if !out.status.success() {
        problems.push(format!(
            "{name}: the page's commands failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
        return problems;
    }
    let sections: Vec<&str> = stdout.split(&format!("{MARK}\n")).skip(1).collect();
    for (step, got) in expected.iter().zip(sections) {
        let Some((command, want)) = step else {
            continue;
        };
        let got: Vec<&str> = got.lines().collect();
        let same = got.len() == want.len() && want.iter().zip(&got).all(|(w, g)| matches(w, g));
        if !same {
            problems.push(format!(
                "{name}: `{command}` printed\n{}\nbut the page shows\n{}",
                got.join("\n"),
                want.join("\n")
            ));
        }
    }
    problems
}

fn pages() -> Vec<(String, String)> {
    let mut out = vec![(
        "README.md".to_owned(),
        std::fs::read_to_string(repo_path("README.md")).unwrap(),
    )];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo_path("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    for p in docs {
        let name = format!("docs/{}", p.file_name().unwrap().to_string_lossy());
        out.push((name, std::fs::read_to_string(&p).unwrap()));
    }
    out
}

#[test]
fn every_example_in_the_docs_runs_and_every_transcript_is_real() {
    let mut problems = Vec::new();
    for (name, page) in pages() {
        if name == "README.md" {
            continue; // its own test: it starts Redis the way the README says
        }
        if !blocks(&page)
            .iter()
            .any(|b| matches!(b, Block::Sh(_) | Block::Console(_)))
        {
            continue;
        }
        let server = if page.starts_with("<!-- docs-test: plain-server -->") {
            Server::plain_with(&["--enable-module-command", "yes"])
        } else {
            Server::start()
        };
        let work = tempfile::tempdir().unwrap();
        let cwd = page_dir(work.path());
        problems.extend(run_page(&name, &page, server.port, work.path(), &cwd));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// The README's quick start, as a new user runs it: `scripts/run.sh` builds the release
/// module and starts the server, the endpoint goes into a virtualenv, and the page's own
/// stop step (kill by the endpoint's pid file, SHUTDOWN) runs as its last block.
///
/// It runs in a temp directory laid out like the repository (`scripts/` and
/// redis.conf.example linked, `python/` copied, since pip builds in it), so the page's
/// `.venv`, pid file and build files stay out of the work tree; `cargo` builds this
/// repository through the shim. Only what must not clash with other tests changes: the
/// Redis and HTTP ports are free ones, and `redis-server` is the server under test
/// (`JWKS_SERVER_BIN`) reading redis.conf.example with its `loadmodule` pointing at the
/// module under test and its `dir` in the temp dir; it returns once the server answers.
#[test]
fn the_readme_quick_start_runs_as_written() {
    let page = std::fs::read_to_string(repo_path("README.md")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let (port, http_port) = (free_port(), free_port());
    let page = page
        .replace("6390", &port.to_string())
        .replace("8390", &http_port.to_string());

    let cwd = work.path().join("repo");
    std::fs::create_dir_all(&cwd).unwrap();
    for linked in ["scripts", "redis.conf.example"] {
        std::os::unix::fs::symlink(repo_path(linked), cwd.join(linked)).unwrap();
    }
    copy_tree(&repo_path("python"), &cwd.join("python"));
    let server_shim = work.path().join("server-shim");
    std::fs::create_dir_all(&server_shim).unwrap();
    write_script(
        &server_shim.join("redis-server"),
        &format!(
            "#!/bin/bash\n\
             # redis-server CONFIG ARGS...: CONFIG with the module and dir under test\n\
             conf=\"$1\"; shift\n\
             sed -e 's|^loadmodule .*|loadmodule {module}|' -e 's|^dir .*|dir {dir}|' \"$conf\" > '{dir}/redis.conf'\n\
             '{server}' '{dir}/redis.conf' \"$@\" || exit\n\
             # --daemonize yes returns before the server listens; a person typing the next\n\
             # command never notices, a script does.\n\
             for _ in $(seq 200); do '{cli}' -p {port} PING >/dev/null 2>&1 && exit 0; sleep 0.05; done\n",
            module = release_module().display(),
            dir = work.path().display(),
            server = which(&server_bin()).display(),
            cli = redis_cli(),
        ),
    );
    let stop = || {
        let _ = Command::new(redis_cli())
            .args(["-p", &port.to_string(), "SHUTDOWN", "NOSAVE"])
            .output();
    };
    let pid_file = cwd.join("jwks-endpoint.pid");
    let problems = run_page_with("README.md", &page, port, work.path(), &cwd, &[&server_shim]);
    // The endpoint removes its pid file as it exits (within a second of the kill).
    for _ in 0..50 {
        if !pid_file.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Had a step failed, the endpoint would still run: stop it by its pid file.
    let leftover = std::fs::read_to_string(&pid_file).ok();
    if let Some(pid) = &leftover {
        let _ = Command::new("kill").arg(pid.trim()).output();
    }
    stop();
    assert!(
        leftover.is_none() || !problems.is_empty(),
        "the README's stop step left the endpoint running (pid {leftover:?})"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// Copies a source tree, without what builds and test runs leave in it.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if [
            "build",
            "__pycache__",
            ".pytest_cache",
            ".venv",
            "node_modules",
        ]
        .contains(&name_str.as_ref())
            || name_str.ends_with(".egg-info")
        {
            continue;
        }
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// `program`'s path: as given if it has a `/`, else the first on `PATH`.
fn which(program: &str) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} not on PATH"))
}

#[test]
fn every_tagged_block_is_claimed_by_a_test() {
    let mut sources = String::new();
    for dir in ["tests", "python/tests", "node/test"] {
        let Ok(entries) = std::fs::read_dir(repo_path(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            sources.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    for (name, page) in pages() {
        for block in blocks(&page) {
            if let Block::Tagged(id) = block {
                assert!(
                    sources.contains(&format!("test={id}")),
                    "{name}: no test claims blocks tagged {{test={id}}}"
                );
            }
        }
    }
}

#[test]
fn wildcards_match_what_they_say() {
    assert!(matches("1) \"...-0\"", "1) \"1796-0\""));
    assert!(matches("a ... b ... c", "a x b y c"));
    assert!(!matches("a ... b", "a x c"));
    assert!(matches("exact", "exact"));
    let steps = transcript(&["$ one \\", "  two", "out", "$ three"]);
    assert_eq!(
        steps[0],
        ("one \\\n  two".to_owned(), vec!["out".to_owned()])
    );
    assert_eq!(steps[1].0, "three");
}
