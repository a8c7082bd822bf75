//! The one serialized form of a key set: used by RDB, AOF rewrite, replication and DUMP.
//! JSON keeps it readable in `redis-check-rdb` output and forward-compatible via `v`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::lifecycle::MAX_AFTER_MS;
use super::{
    Entry, KeySet, Lifecycle, State, MAX_GENERATION, MAX_KEYS, MAX_TIME_MS, RSA_FLOOR_BITS,
};
use crate::error::{Error, Result, Shown};
use crate::jwk::{Jwk, Policy};

/// Format 1: generation and keys. Format 2 adds the lifecycle `policy`; format 3 a CONFIRM
/// policy and each key's `added_gen`. Each is written only when it is needed (a set without
/// a policy is still format 1), so what older builds wrote and read does not change, and a
/// replica of an older build keeps following a primary until CONFIRM is used.
const FORMAT_VERSION: u32 = 1;
const FORMAT_WITH_POLICY: u32 = 2;
const FORMAT_WITH_CONFIRM: u32 = 3;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredSet<E> {
    v: u32,
    generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    policy: Option<Lifecycle>,
    keys: Vec<E>,
}

/// One key as stored. Written from the JWK's JSON text (`J = &RawValue`) so saving a set
/// copies and escapes nothing; read back as an owned `Value`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredEntry<J> {
    state: State,
    added_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    promoted_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    demoted_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    added_gen: Option<u64>,
    jwk: J,
}

impl KeySet {
    pub fn to_stored(&self) -> String {
        let policy = self.lifecycle.is_set().then_some(self.lifecycle);
        let confirm = self.lifecycle.confirms();
        let stored = StoredSet {
            v: match (policy.is_some(), confirm) {
                (_, true) => FORMAT_WITH_CONFIRM,
                (true, false) => FORMAT_WITH_POLICY,
                (false, false) => FORMAT_VERSION,
            },
            generation: self.generation,
            policy,
            keys: self
                .entries
                .iter()
                .map(|e| StoredEntry {
                    state: e.state,
                    added_ms: e.added_ms,
                    promoted_ms: e.promoted_ms,
                    demoted_ms: e.demoted_ms,
                    added_gen: confirm.then_some(e.added_gen),
                    jwk: e.jwk.json(),
                })
                .collect(),
        };
        // Serializing plain structs of strings and numbers cannot fail.
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// Parses and re-validates a stored key set with `JWKS.ROTATE`'s rules (RSA against the
    /// lowest floor any configuration allows: a replica or a restarted server must load
    /// what the primary accepted under its config), and the ranges every output agrees on.
    pub fn from_stored(text: &str) -> Result<KeySet> {
        let stored: StoredSet<StoredEntry<Value>> =
            serde_json::from_str(text).map_err(|e| Error::State(e.to_string()))?;
        let confirm = stored.policy.is_some_and(|p| p.confirms());
        match (stored.v, &stored.policy) {
            (FORMAT_VERSION, None) => {}
            (FORMAT_WITH_POLICY, Some(_)) if !confirm => {}
            (FORMAT_WITH_CONFIRM, Some(_)) if confirm => {}
            (FORMAT_VERSION, Some(_)) => return Err(Error::State("format 1 has no policy".into())),
            (FORMAT_WITH_POLICY | FORMAT_WITH_CONFIRM, _) => {
                return Err(Error::State(format!(
                    "format {} {} a CONFIRM policy",
                    stored.v,
                    if confirm { "has no" } else { "needs" }
                )))
            }
            (v, _) => return Err(Error::State(format!("unknown format version {v}"))),
        }
        if stored.keys.len() > MAX_KEYS {
            return Err(Error::State(format!("more than {MAX_KEYS} keys")));
        }
        if stored.generation > MAX_GENERATION {
            return Err(Error::State(format!(
                "generation {} is above {MAX_GENERATION}",
                stored.generation
            )));
        }
        if let Some(p) = &stored.policy {
            if p.promote_after_ms > MAX_AFTER_MS
                || p.retire_after_ms > MAX_AFTER_MS
                || p.min_wait_ms > MAX_AFTER_MS
            {
                return Err(Error::State("policy durations out of range".into()));
            }
            if p.confirm_pct > 100 || (p.min_wait_ms > 0 && !p.confirms()) {
                return Err(Error::State("CONFIRM out of range".into()));
            }
        }
        let policy = Policy {
            min_rsa_bits: RSA_FLOOR_BITS,
        };
        let mut set = KeySet {
            generation: stored.generation,
            entries: Vec::with_capacity(stored.keys.len()),
            lifecycle: stored.policy.unwrap_or_default(),
        };
        for key in stored.keys {
            let jwk = Jwk::from_value(key.jwk, &policy)?;
            let times = [Some(key.added_ms), key.promoted_ms, key.demoted_ms];
            if times
                .iter()
                .flatten()
                .any(|t| !(0..=MAX_TIME_MS).contains(t))
            {
                return Err(Error::State(format!(
                    "times of kid {} out of range",
                    Shown::new(jwk.kid())
                )));
            }
            let added_gen = match (key.added_gen, confirm) {
                (Some(g), true) if g <= stored.generation => g,
                (None, false) => stored.generation,
                _ => {
                    return Err(Error::State(format!(
                        "added_gen of kid {} missing, out of range or not in format 3",
                        Shown::new(jwk.kid())
                    )))
                }
            };
            if set.position(jwk.kid()).is_some() {
                return Err(Error::State(format!(
                    "duplicate kid {}",
                    Shown::new(jwk.kid())
                )));
            }
            set.entries.push(Entry {
                jwk,
                state: key.state,
                added_ms: key.added_ms,
                promoted_ms: key.promoted_ms,
                demoted_ms: key.demoted_ms,
                added_gen,
            });
        }
        if set
            .entries
            .iter()
            .filter(|e| e.state == State::Current)
            .count()
            > 1
        {
            return Err(Error::State("more than one current key".into()));
        }
        Ok(set)
    }
}
