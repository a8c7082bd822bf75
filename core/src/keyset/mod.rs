//! The key-set state machine: which keys are published, which one signs, and how a rotation
//! moves them. Pure: no Redis types; time comes in as a parameter.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result, Shown};
use crate::jwk::Jwk;

mod confirm;
#[cfg(test)]
mod confirm_tests;
pub mod lifecycle;
mod persist;
#[cfg(test)]
mod tests;

pub use confirm::Confirmation;
pub use lifecycle::{Action, Due, Lifecycle};

/// Most keys one set may hold: the most one JWKS document may (`jwk::MAX_KEYS`), since the
/// set is published as one.
pub use crate::jwk::MAX_KEYS;
/// The largest generation: 2^53 - 1, the largest integer every output agrees on (RESP
/// integers, the events' JSON read by JavaScript or Python). Rotations saturate there.
pub const MAX_GENERATION: u64 = (1 << 53) - 1;
/// The latest time a stored key may carry (9999-12-31T23:59:59.999Z).
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;
/// The smallest RSA modulus any configuration accepts (`jwks.min-rsa-bits`'s floor): a
/// stored key set is re-validated against it, whatever the configuration is now, so a
/// crafted state cannot publish a weaker key and a raised setting cannot stop a restart.
pub const RSA_FLOOR_BITS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Published before it signs, so verifiers learn it first.
    Next,
    /// The signing key; at most one.
    Current,
    /// No longer signs; published until outstanding tokens expire.
    Previous,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Next => "next",
            State::Current => "current",
            State::Previous => "previous",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub jwk: Jwk,
    pub state: State,
    pub added_ms: i64,
    pub promoted_ms: Option<i64>,
    pub demoted_ms: Option<i64>,
    /// The first generation whose document publishes this key: a verifier holding that
    /// generation or a later one has it. For a key stored without it (by a build before
    /// 0.4.0, or in a set without CONFIRM), the set's generation when it was loaded: never
    /// earlier than the truth.
    pub added_gen: u64,
}

/// One rotation operation, already validated on its own.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Add(Jwk),
    Promote(String),
    Retire(String),
    Replace(Vec<Jwk>),
}

/// What a rotation did, one item per real change, in order: the audit trail's entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added {
        kid: String,
    },
    Promoted {
        kid: String,
        demoted: Option<String>,
    },
    Retired {
        kid: String,
        was: State,
    },
    /// Same key material under the same kid, other optional members (REPLACE only).
    Updated {
        kid: String,
    },
}

/// A key set's JWKS document and the strong ETag the endpoint serves it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub doc: String,
    pub etag: String,
}

/// A strong HTTP entity tag of a document's bytes (RFC 9110 §8.8.3), quoted: 128 bits of
/// its SHA-256. Derived from content alone, so it changes exactly when the bytes do, also
/// across a recreated or restored key set whose generation repeats.
pub fn etag(doc: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(doc);
    let mut tag = String::with_capacity(24);
    tag.push('"');
    tag.push_str(&URL_SAFE_NO_PAD.encode(&digest[..16]));
    tag.push('"');
    tag
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeySet {
    generation: u64,
    /// Insertion order; the published order is derived from it.
    entries: Vec<Entry>,
    lifecycle: Lifecycle,
}

impl KeySet {
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn current_kid(&self) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.state == State::Current)
            .map(|e| e.jwk.kid())
    }

    fn position(&self, kid: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.jwk.kid() == kid)
    }

    /// Published order: current first (the key most tokens name), then next, then previous,
    /// each in the order keys were added. Stable, so equal sets render byte-identical.
    pub fn published(&self) -> impl Iterator<Item = &Entry> {
        [State::Current, State::Next, State::Previous]
            .into_iter()
            .flat_map(move |s| self.entries.iter().filter(move |e| e.state == s))
    }

    pub fn published_kids(&self) -> Vec<&str> {
        self.published().map(|e| e.jwk.kid()).collect()
    }

    /// The JWKS document (RFC 7517 §5): public members only, since only those are stored.
    pub fn render(&self) -> String {
        #[derive(Serialize)]
        struct Document<'a> {
            keys: Vec<&'a RawValue>,
        }
        let doc = Document {
            keys: self.published().map(|e| e.jwk.json()).collect(),
        };
        // Each key's JSON text was made once when it was validated; this only joins them.
        serde_json::to_string(&doc).unwrap_or_default()
    }

    /// The document with its HTTP entity tag.
    pub fn rendered(&self) -> Rendered {
        let doc = self.render();
        let etag = etag(doc.as_bytes());
        Rendered { doc, etag }
    }

    /// Applies `ops` in order to a copy. All or nothing: the first error leaves `self` as is.
    /// Returns the new set (generation bumped if anything changed) and the changes made.
    /// `force` overrides the lifecycle policy's guards.
    pub fn apply(&self, ops: &[Op], now_ms: i64, force: bool) -> Result<(KeySet, Vec<Change>)> {
        self.apply_with(ops, now_ms, force, &[])
    }

    /// `apply`, with the generations the live verifiers hold (`fleet`), which a CONFIRM
    /// policy's guard consults.
    pub fn apply_with(
        &self,
        ops: &[Op],
        now_ms: i64,
        force: bool,
        fleet: &[(u64, usize)],
    ) -> Result<(KeySet, Vec<Change>)> {
        let mut next = self.clone();
        let mut changes = Vec::new();
        for op in ops {
            match op {
                Op::Add(jwk) => next.add(jwk.clone(), now_ms, &mut changes)?,
                Op::Promote(kid) => next.promote(kid, now_ms, force, fleet, &mut changes)?,
                Op::Retire(kid) => next.retire(kid, now_ms, force, &mut changes)?,
                Op::Replace(jwks) => next.replace(jwks, now_ms, force, &mut changes)?,
            }
        }
        if let Some(old) = self.current_kid() {
            if next.current_kid().is_none() {
                return Err(Error::RetireCurrent(Shown::new(old)));
            }
        }
        if next.entries.len() > MAX_KEYS {
            return Err(Error::TooManyKeys(MAX_KEYS));
        }
        if !changes.is_empty() {
            next.generation = self.generation.saturating_add(1).min(MAX_GENERATION);
        }
        Ok((next, changes))
    }

    fn add(&mut self, jwk: Jwk, now_ms: i64, changes: &mut Vec<Change>) -> Result<()> {
        if self.position(jwk.kid()).is_some() {
            return Err(Error::DuplicateKid(Shown::new(jwk.kid())));
        }
        changes.push(Change::Added {
            kid: jwk.kid().to_owned(),
        });
        // The generation this change will make (apply bumps it once, at the end).
        let added_gen = self.generation.saturating_add(1).min(MAX_GENERATION);
        self.entries.push(Entry {
            jwk,
            state: State::Next,
            added_ms: now_ms,
            promoted_ms: None,
            demoted_ms: None,
            added_gen,
        });
        Ok(())
    }

    fn promote(
        &mut self,
        kid: &str,
        now_ms: i64,
        force: bool,
        fleet: &[(u64, usize)],
        changes: &mut Vec<Change>,
    ) -> Result<()> {
        let at = self
            .position(kid)
            .ok_or_else(|| Error::UnknownKid(Shown::new(kid)))?;
        if self.entries[at].state == State::Current {
            return Err(Error::AlreadyCurrent(Shown::new(kid)));
        }
        if !force {
            let has_current = self.current_kid().is_some();
            let confirmation = self.confirmation_of(&self.entries[at], fleet);
            lifecycle::check_promote(
                self.lifecycle,
                &self.entries[at],
                has_current,
                confirmation.as_ref(),
                now_ms,
            )?;
        }
        let mut demoted = None;
        for e in self
            .entries
            .iter_mut()
            .filter(|e| e.state == State::Current)
        {
            e.state = State::Previous;
            e.demoted_ms = Some(now_ms);
            demoted = Some(e.jwk.kid().to_owned());
        }
        let e = &mut self.entries[at];
        e.state = State::Current;
        e.promoted_ms = Some(now_ms);
        e.demoted_ms = None;
        changes.push(Change::Promoted {
            kid: kid.to_owned(),
            demoted,
        });
        Ok(())
    }

    fn retire(
        &mut self,
        kid: &str,
        now_ms: i64,
        force: bool,
        changes: &mut Vec<Change>,
    ) -> Result<()> {
        let at = self
            .position(kid)
            .ok_or_else(|| Error::UnknownKid(Shown::new(kid)))?;
        if !force {
            lifecycle::check_retire(self.lifecycle, &self.entries[at], now_ms)?;
        }
        let removed = self.entries.remove(at);
        changes.push(Change::Retired {
            kid: kid.to_owned(),
            was: removed.state,
        });
        Ok(())
    }

    /// Makes the published set exactly `jwks`: present keys keep their state, new ones
    /// become `next`, missing ones are retired.
    fn replace(
        &mut self,
        jwks: &[Jwk],
        now_ms: i64,
        force: bool,
        changes: &mut Vec<Change>,
    ) -> Result<()> {
        for jwk in jwks {
            if let Some(at) = self.position(jwk.kid()) {
                // A reused kid with other key material would silently swap what verifiers
                // trust under that kid.
                if !self.entries[at].jwk.same_key(jwk) {
                    return Err(Error::KidConflict(Shown::new(jwk.kid())));
                }
            }
        }
        let gone: Vec<String> = self
            .entries
            .iter()
            .map(|e| e.jwk.kid().to_owned())
            .filter(|kid| !jwks.iter().any(|j| j.kid() == kid))
            .collect();
        for kid in gone {
            self.retire(&kid, now_ms, force, changes)?;
        }
        for jwk in jwks {
            match self.position(jwk.kid()) {
                // Optional members (use, alg, x5c...) may be updated in place.
                Some(at) if self.entries[at].jwk != *jwk => {
                    self.entries[at].jwk = jwk.clone();
                    changes.push(Change::Updated {
                        kid: jwk.kid().to_owned(),
                    });
                }
                Some(_) => {}
                None => self.add(jwk.clone(), now_ms, changes)?,
            }
        }
        Ok(())
    }
}

impl KeySet {
    /// For `MEMORY USAGE`: struct sizes plus the published members, with map overhead.
    pub fn approximate_bytes(&self) -> usize {
        const MAP_ENTRY_OVERHEAD: usize = 48;
        size_of::<KeySet>()
            + self
                .entries
                .iter()
                .map(|e| {
                    size_of::<Entry>()
                        + e.jwk.kid().len()
                        + e.jwk.json().get().len()
                        + e.jwk
                            .members()
                            .iter()
                            .map(|(k, v)| k.len() + v.to_string().len() + MAP_ENTRY_OVERHEAD)
                            .sum::<usize>()
                })
                .sum::<usize>()
    }
}
