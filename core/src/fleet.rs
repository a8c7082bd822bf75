//! The verifiers of one key set, as their acknowledgements report them (`JWKS.ACK`): which
//! generation each holds and until when it counts as live. Pure: time comes in as a
//! parameter; the module keeps one `Fleet` per key set in memory.
//!
//! Acks are liveness reports, not data: they are neither persisted nor replicated. A
//! restarted server or a new primary learns its fleet again within a third of the ack TTL
//! (every verifier re-acks that often), and counting a verifier that may have died while
//! the server was down would be the one thing worse than waiting for it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::error::{Error, Result};

/// Default liveness of an ack, and its range.
pub const DEFAULT_TTL_MS: i64 = 30_000;
pub const MIN_TTL_MS: i64 = 1_000;
pub const MAX_TTL_MS: i64 = 3_600_000;
/// Live verifiers one key set may have, and all key sets together: beyond them an ack
/// from a new ID is refused (a known ID may always ack again).
pub const MAX_PER_SET: usize = 10_000;
pub const MAX_IN_ALL: usize = 100_000;
pub const MAX_ID_BYTES: usize = 128;
/// Generations whose start is remembered, for how long a verifier has been behind.
const HISTORY: usize = 64;

/// `JWKS.ACK K GENERATION g ID id [TTL ms]`, the arguments after the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub generation: u64,
    pub id: Vec<u8>,
    pub ttl_ms: i64,
    /// The ETag of the document held (`JWKS.GET K META`'s `etag`): what tells generation g
    /// of this key set from generation g of one deleted, restored or recreated at the name.
    pub etag: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verifier {
    pub generation: u64,
    pub acked_ms: i64,
    pub until_ms: i64,
}

/// The live verifiers of one key set. Indexed three ways so that an ack, an expiry and the
/// question CONFIRM asks ("how many hold generation g or later?") each cost O(log V) or
/// O(generations held), never a walk over every verifier: 10,000 verifiers acking after a
/// rotation must not cost 10,000 x 10,000.
#[derive(Debug, Default, Clone)]
pub struct Fleet {
    verifiers: BTreeMap<Vec<u8>, Verifier>,
    /// (until, id) of every verifier held: expiries in order.
    expiries: BTreeSet<(i64, Vec<u8>)>,
    /// How many verifiers held hold each generation.
    held: BTreeMap<u64, usize>,
    /// When this node first saw each recent generation of the key set (oldest first), and
    /// its document's ETag.
    seen: VecDeque<(u64, i64, String)>,
}

impl Fleet {
    /// Records an ack (replacing the ID's previous one). `Ok(true)` if the ID is new.
    /// Refused for a new ID when the set already has `MAX_PER_SET` live verifiers.
    pub fn ack(&mut self, ack: &Ack, now_ms: i64) -> Result<bool> {
        self.prune(now_ms);
        let verifier = Verifier {
            generation: ack.generation,
            acked_ms: now_ms,
            until_ms: now_ms.saturating_add(ack.ttl_ms),
        };
        let new = match self.verifiers.get(&ack.id).copied() {
            Some(old) => {
                self.forget(&ack.id, old);
                false
            }
            None if self.verifiers.len() >= MAX_PER_SET => {
                return Err(Error::TooManyVerifiers("this key set", MAX_PER_SET));
            }
            None => true,
        };
        self.verifiers.insert(ack.id.clone(), verifier);
        self.expiries.insert((verifier.until_ms, ack.id.clone()));
        *self.held.entry(verifier.generation).or_insert(0) += 1;
        Ok(new)
    }

    fn forget(&mut self, id: &[u8], v: Verifier) {
        self.expiries.remove(&(v.until_ms, id.to_vec()));
        if let Some(n) = self.held.get_mut(&v.generation) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.held.remove(&v.generation);
            }
        }
    }

    /// Drops expired verifiers; returns how many.
    pub fn prune(&mut self, now_ms: i64) -> usize {
        let mut dropped = 0;
        while let Some((until, id)) = self.expiries.first().cloned() {
            if until > now_ms {
                break;
            }
            if let Some(v) = self.verifiers.remove(&id) {
                self.forget(&id, v);
            } else {
                self.expiries.remove(&(until, id));
            }
            dropped += 1;
        }
        dropped
    }

    /// Verifiers held, live or not yet pruned.
    pub fn len(&self) -> usize {
        self.verifiers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.verifiers.is_empty()
    }

    pub fn contains(&self, id: &[u8]) -> bool {
        self.verifiers.contains_key(id)
    }

    /// The verifier `id`, live or not yet pruned.
    pub fn get(&self, id: &[u8]) -> Option<&Verifier> {
        self.verifiers.get(id)
    }

    /// Live verifiers, by ID.
    pub fn live(&self, now_ms: i64) -> impl Iterator<Item = (&[u8], &Verifier)> {
        self.verifiers
            .iter()
            .filter(move |(_, v)| v.until_ms > now_ms)
            .map(|(id, v)| (id.as_slice(), v))
    }

    /// The generations held and how many verifiers hold each, after `prune`: what CONFIRM
    /// counts. O(generations held).
    pub fn held(&self) -> Vec<(u64, usize)> {
        self.held.iter().map(|(g, n)| (*g, *n)).collect()
    }

    /// When the first verifier held expires: a confirmation may come then without any ack.
    pub fn next_expiry(&self) -> Option<i64> {
        self.expiries.first().map(|(until, _)| *until)
    }

    /// The key set is at `generation`, whose document has `etag` (seen at `now_ms` if new).
    /// `etag` is only asked for when the generation is new to this fleet.
    pub fn saw_generation(&mut self, generation: u64, now_ms: i64, etag: impl FnOnce() -> String) {
        match self.seen.back() {
            Some((g, _, _)) if *g >= generation => return,
            _ => {}
        }
        if self.seen.len() >= HISTORY {
            self.seen.pop_front();
        }
        self.seen.push_back((generation, now_ms, etag()));
    }

    /// Refuses an ack whose ETag is not the document this node saw at its generation: the
    /// verifier holds a generation of another key set once at this name (deleted and
    /// recreated, or replaced by an older dump), whose numbers repeat. An ack without an
    /// ETag, or of a generation from before this node's memory, cannot be told apart.
    pub fn check(&self, ack: &Ack) -> Result<()> {
        let Some(etag) = &ack.etag else {
            return Ok(());
        };
        match self.seen.iter().find(|(g, _, _)| *g == ack.generation) {
            Some((_, _, seen)) if seen != etag => Err(Error::StaleAck {
                generation: ack.generation,
                etag: crate::error::Shown::new(etag),
            }),
            _ => Ok(()),
        }
    }

    /// Since when a verifier holding `generation` has been behind: when the next
    /// generation this node saw began (the oldest remembered if that is long gone).
    fn behind_since(&self, generation: u64) -> Option<i64> {
        self.seen
            .iter()
            .find(|(g, _, _)| *g > generation)
            .map(|(_, since, _)| *since)
    }

    /// Live verifiers behind the set's generation for longer than `threshold_ms`.
    /// O(generations held).
    pub fn behind(&self, now_ms: i64, threshold_ms: i64) -> usize {
        // Counted from the generations held (pruned or not: a scrape does not prune).
        let expired: BTreeMap<u64, usize> = self
            .expiries
            .iter()
            .take_while(|(until, _)| *until <= now_ms)
            .filter_map(|(_, id)| self.verifiers.get(id))
            .fold(BTreeMap::new(), |mut m, v| {
                *m.entry(v.generation).or_insert(0) += 1;
                m
            });
        self.held
            .iter()
            .filter(|(g, _)| {
                self.behind_since(**g)
                    .is_some_and(|since| now_ms.saturating_sub(since) > threshold_ms)
            })
            .map(|(g, n)| n.saturating_sub(expired.get(g).copied().unwrap_or(0)))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(id: &str, generation: u64, ttl_ms: i64) -> Ack {
        Ack {
            generation,
            id: id.into(),
            ttl_ms,
            etag: None,
        }
    }

    #[test]
    fn acks_expire_and_replace() {
        let mut f = Fleet::default();
        assert!(f.ack(&ack("a", 1, 1000), 0).unwrap());
        assert!(f.ack(&ack("b", 2, 5000), 0).unwrap());
        assert!(!f.ack(&ack("a", 2, 1000), 500).unwrap());
        f.prune(1000);
        assert_eq!(f.held(), vec![(2, 2)]);
        assert_eq!(f.next_expiry(), Some(1500));
        assert_eq!(f.prune(1500), 1);
        assert_eq!(f.held(), vec![(2, 1)]);
        assert_eq!(f.len(), 1);
        assert!(f.contains(b"b") && !f.contains(b"a"));
    }

    #[test]
    fn the_cap_refuses_new_ids_only() {
        let mut f = Fleet::default();
        for i in 0..MAX_PER_SET {
            f.ack(&ack(&i.to_string(), 1, 1000), 0).unwrap();
        }
        assert!(f.ack(&ack("new", 1, 1000), 10).is_err());
        assert!(f.ack(&ack("7", 1, 1000), 10).is_ok());
        // Expired ones make room.
        assert!(f.ack(&ack("new", 1, 1000), 1000).is_ok());
    }

    #[test]
    fn an_etag_tells_this_sets_generation_from_an_earlier_sets() {
        let mut f = Fleet::default();
        f.saw_generation(2, 0, || "\"new\"".into());
        let with = |etag: Option<&str>| Ack {
            etag: etag.map(str::to_owned),
            ..ack("v", 2, 1000)
        };
        assert!(f.check(&with(Some("\"new\""))).is_ok());
        let stale = f.check(&with(Some("\"old\""))).unwrap_err().to_string();
        assert!(stale.starts_with("STALE "), "{stale}");
        assert!(f.check(&with(None)).is_ok(), "without an ETag: cannot tell");
        let older = Ack {
            generation: 1,
            ..with(Some("\"x\""))
        };
        assert!(
            f.check(&older).is_ok(),
            "before this node's memory: cannot tell"
        );
    }

    #[test]
    fn behind_counts_from_when_the_next_generation_began() {
        let mut f = Fleet::default();
        f.saw_generation(3, 0, || "e3".into());
        f.ack(&ack("old", 3, 60_000), 0).unwrap();
        f.ack(&ack("new", 3, 60_000), 0).unwrap();
        f.saw_generation(4, 1_000, || "e4".into());
        f.saw_generation(4, 2_000, || unreachable!());
        f.ack(&ack("new", 4, 60_000), 1_500).unwrap();
        assert_eq!(f.behind(1_500, 1_000), 0);
        assert_eq!(f.behind(2_001, 1_000), 1);
        assert_eq!(f.behind(2_001, 10_000), 0);
    }
}
