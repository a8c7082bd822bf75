//! The zero-downtime promise under load: readers loop on JWKS.GET (and plain GET of the
//! cache key) while a writer runs full rotation cycles. From the recorded timeline: no read
//! that started after a JWKS.ROTATE returned sees an older generation, every document
//! holds the key that was signing, and JWKS.GET never misses.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::*;
use serde_json::Value as Json;

struct Rotation {
    end: Instant,
    generation: i64,
    published: Vec<String>,
    current: String,
}

struct Read {
    start: Instant,
    end: Instant,
    doc: Option<String>,
    plain: bool,
}

fn kids(doc: &str) -> Vec<String> {
    let v: Json = serde_json::from_str(doc).expect("document parses");
    v["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

#[test]
fn readers_never_see_a_stale_or_missing_document_during_rotations() {
    let server = Server::start();
    let key = "jwks:{live}";
    let mut con = server.conn();
    let r = rotate(
        &mut con,
        key,
        &["ADD", &ec("k0", 1), "PROMOTE", "k0", "ADD", &ec("k1", 2)],
    )
    .unwrap();
    let first = Rotation {
        end: Instant::now(),
        generation: as_int(&field(&r, "generation")),
        published: strings(&field(&r, "published")),
        current: as_string(&field(&r, "current")),
    };
    let timeline = Arc::new(Mutex::new(vec![first]));
    let reads = Arc::new(Mutex::new(Vec::<Read>::new()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let mut readers = Vec::new();
    for i in 0..4 {
        let (url, reads, done) = (server.url(), reads.clone(), done.clone());
        readers.push(std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            let plain = i % 2 == 1;
            let mut local = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let start = Instant::now();
                let doc: Option<String> = if plain {
                    redis::cmd("GET")
                        .arg("jwks:{live}:cache")
                        .query(&mut c)
                        .unwrap()
                } else {
                    redis::cmd("JWKS.GET")
                        .arg("jwks:{live}")
                        .query(&mut c)
                        .unwrap()
                };
                local.push(Read {
                    start,
                    end: Instant::now(),
                    doc,
                    plain,
                });
            }
            reads.lock().unwrap().extend(local);
        }));
    }

    // The writer: add next, promote it, retire the oldest; many cycles.
    let cycles = 150;
    for n in 1..=cycles {
        let next = format!("k{}", n + 1);
        let steps: [Vec<String>; 3] = [
            vec!["ADD".into(), ec(&next, n as u64 + 2)],
            vec!["PROMOTE".into(), format!("k{n}")],
            vec!["RETIRE".into(), format!("k{}", n - 1)],
        ];
        for step in steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            let r = rotate(&mut con, key, &args).unwrap();
            timeline.lock().unwrap().push(Rotation {
                end: Instant::now(),
                generation: as_int(&field(&r, "generation")),
                published: strings(&field(&r, "published")),
                current: as_string(&field(&r, "current")),
            });
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }

    let timeline = timeline.lock().unwrap();
    let reads = reads.lock().unwrap();
    let generation_of = |published: &[String]| {
        timeline
            .iter()
            .filter(|r| r.published == published)
            .map(|r| r.generation)
            .collect::<Vec<_>>()
    };
    let (mut checked, mut plain_misses) = (0, 0);
    for read in reads.iter() {
        // The last rotation that had returned before this read started.
        let Some(before) = timeline.iter().rev().find(|r| r.end < read.start) else {
            continue;
        };
        let Some(doc) = &read.doc else {
            assert!(read.plain, "JWKS.GET missed the document");
            plain_misses += 1;
            continue;
        };
        let seen = kids(doc);
        let generations = generation_of(&seen);
        assert!(
            !generations.is_empty(),
            "a document no rotation published: {seen:?}"
        );
        let generation = *generations.iter().max().unwrap();
        assert!(
            generation >= before.generation,
            "stale read: generation {generation} after rotation {} had returned",
            before.generation
        );
        // Not from the future either: no later than what had committed by the read's end.
        let latest = timeline
            .iter()
            .filter(|r| r.end <= read.end)
            .map(|r| r.generation)
            .max();
        assert!(latest.is_none_or(|l| generation <= l + 1));
        // The document holds the key that was signing when it was served: the current
        // key of its generation (the writer cannot timestamp the server's commit more
        // precisely than "before the reply", so the generation is what identifies it).
        let signing = &timeline
            .iter()
            .find(|r| r.generation == generation)
            .expect("generation in timeline")
            .current;
        assert!(
            seen.contains(signing),
            "document {seen:?} lacks the signing key {signing}"
        );
        assert_eq!(&seen[0], signing, "the signing key is published first");
        checked += 1;
    }
    assert!(checked > 1000, "only {checked} reads checked");
    eprintln!("{checked} reads checked, {plain_misses} plain GET misses (expected right after each invalidation)");
}
