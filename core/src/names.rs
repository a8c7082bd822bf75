//! Key-set names and the names derived from them. Pure: bytes in, bytes out.
//!
//! A key set at `K` owns a few derived keys (and one pub/sub channel) that must live in K's
//! cluster slot and belong to K alone. The scheme:
//!
//! - `K` has a hash tag (`jwks:{auth}`): derived name = `K` + suffix (`jwks:{auth}:cache`);
//! - `K` has none (`jwks`): derived name = `{K}` + suffix (`{jwks}:cache`), so the tag of the
//!   derived name is K itself and it hashes like K.
//!
//! Two rules make the scheme injective (no two key sets share a derived name) and keep every
//! derived name unusable as a key-set name:
//!
//! 1. A key-set name may not end in a reserved suffix (`:cache`, `:audit`, `:metrics`,
//!    `:events`). Every derived name ends in one, so no key set can sit at a derived name.
//! 2. A key-set name may not be exactly `{X}` with no `}` inside X: that is how the name `X`
//!    is wrapped, so `{X}` would share every derived name with `X`. Name it `X` instead.
//!
//! With no suffix a suffix of another, equal derived names imply equal suffixes and then
//! equal wrapped names, and (by rule 2) equal key-set names. `tests` checks this
//! exhaustively over short adversarial names and at random over long ones.
//!
//! A name with a `}` but no valid hash tag (`a}b`, `{}x`) is refused too: wrapping it would
//! give a derived name whose tag is not K, in another slot.

use smallvec::SmallVec;

use crate::error::{Error, Result, Shown};

/// A key name, on the stack when short (as nearly all are).
pub type Name = SmallVec<[u8; 64]>;

/// Longest key-set name accepted: names are stored, logged and repeated in every derived
/// name, and nothing legitimate needs more.
pub const MAX_NAME_BYTES: usize = 512;

/// What a derived name is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Derived {
    /// The rendered JWKS, a string with a TTL, for plain `GET` readers.
    Cache,
    /// The audit trail, a stream.
    Audit,
    /// The counters, a hash.
    Metrics,
    /// The change-event channel (sharded pub/sub), not a key.
    Events,
}

impl Derived {
    pub const ALL: [Derived; 4] = [
        Derived::Cache,
        Derived::Audit,
        Derived::Metrics,
        Derived::Events,
    ];

    pub fn suffix(self) -> &'static [u8] {
        match self {
            Derived::Cache => b":cache",
            Derived::Audit => b":audit",
            Derived::Metrics => b":metrics",
            Derived::Events => b":events",
        }
    }

    /// The field name under which `JWKS.INFO` lists it.
    pub fn label(self) -> &'static str {
        match self {
            Derived::Cache => "cache",
            Derived::Audit => "audit",
            Derived::Metrics => "metrics",
            Derived::Events => "events",
        }
    }
}

/// The hash tag Redis Cluster would use for `key`, if any: the bytes between the first `{`
/// and the first `}` after it, when that is non-empty.
pub fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let after = key.get(open + 1..)?;
    let close = after.iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &after[..close])
}

/// The Redis Cluster hash slot of `key` (0..16383): CRC16-XMODEM of its hash tag, or of
/// the whole key without one.
pub fn slot(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hash_tag(key).unwrap_or(key)) % 16384
}

/// True for `{X}` where X is non-empty and has no `}`: the wrapped form of the name `X`.
fn is_wrapped(name: &[u8]) -> bool {
    match name {
        [b'{', inner @ .., b'}'] => !inner.is_empty() && !inner.contains(&b'}'),
        _ => false,
    }
}

fn refuse(name: &[u8], why: &'static str) -> Error {
    Error::KeyName(Shown::bytes(name), why)
}

/// Checks that `name` may hold a key set (see the module comment for the rules).
pub fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() {
        return Err(refuse(name, "must not be empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(refuse(name, "is longer than 512 bytes"));
    }
    if Derived::ALL.iter().any(|d| name.ends_with(d.suffix())) {
        return Err(refuse(
            name,
            "ends in a suffix reserved for derived keys (:cache, :audit, :metrics, :events)",
        ));
    }
    if hash_tag(name).is_some() {
        if is_wrapped(name) {
            return Err(refuse(
                name,
                "is how the name inside the braces is wrapped for its derived keys; use the name without braces",
            ));
        }
    } else if name.contains(&b'}') {
        return Err(refuse(
            name,
            "contains '}' without a valid {hash tag}; its derived keys would land in another slot",
        ));
    }
    Ok(())
}

/// The derived name of `what` for the key set `key`, which must have passed `check_name`.
pub fn derived(key: &[u8], what: Derived) -> Name {
    let suffix = what.suffix();
    let mut name = Name::with_capacity(key.len() + 2 + suffix.len());
    if hash_tag(key).is_some() {
        name.extend_from_slice(key);
    } else {
        name.push(b'{');
        name.extend_from_slice(key);
        name.push(b'}');
    }
    name.extend_from_slice(suffix);
    name
}

/// The inverse of `derived`: which key set (and which kind) `name` belongs to, if any.
pub fn owner(name: &[u8]) -> Option<(Derived, Name)> {
    let what = *Derived::ALL.iter().find(|d| name.ends_with(d.suffix()))?;
    let base = &name[..name.len() - what.suffix().len()];
    let key: &[u8] = if is_wrapped(base) {
        &base[1..base.len() - 1]
    } else {
        base
    };
    if check_name(key).is_err() || derived(key, what).as_slice() != name {
        return None;
    }
    Some((what, Name::from_slice(key)))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn d(key: &str, what: Derived) -> String {
        String::from_utf8(derived(key.as_bytes(), what).to_vec()).unwrap()
    }

    /// Redis Cluster's slot of a key: CRC16/XMODEM of its hash tag (or of the whole key).
    fn slot(key: &[u8]) -> u16 {
        let hashed = hash_tag(key).unwrap_or(key);
        let mut crc: u16 = 0;
        for &b in hashed {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc % 16384
    }

    #[test]
    fn slot_matches_redis() {
        // Values from CLUSTER KEYSLOT on a real server.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"123456789"), 12739);
    }

    #[test]
    fn naming() {
        assert_eq!(d("jwks:{auth}", Derived::Cache), "jwks:{auth}:cache");
        assert_eq!(d("jwks", Derived::Audit), "{jwks}:audit");
        assert_eq!(d("a{b", Derived::Metrics), "{a{b}:metrics");
        for bad in [
            &b""[..],
            b"{}x",
            b"a}b",
            b"{a}",
            b"{a{b}",
            b"jwks:cache",
            b"{a}:audit",
            b"x:events",
            b"k:metrics",
        ] {
            assert!(
                check_name(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        for good in [
            &b"a"[..],
            b"{a}b",
            b"{a}:x",
            b"a{b",
            b"x:cache2",
            b"\0\r\n\xff",
            b"{a}}",
        ] {
            assert!(
                check_name(good).is_ok(),
                "{:?}",
                String::from_utf8_lossy(good)
            );
        }
        assert!(check_name(&[b'k'; MAX_NAME_BYTES]).is_ok());
        assert!(check_name(&[b'k'; MAX_NAME_BYTES + 1]).is_err());
    }

    /// Checks the properties for a set of candidate names: derived names of distinct
    /// accepted names never coincide, no accepted name is a derived name, every derived
    /// name is in its key set's slot, and `owner` inverts `derived`.
    fn check_all(names: &[Vec<u8>]) -> usize {
        let accepted: Vec<&Vec<u8>> = names.iter().filter(|n| check_name(n).is_ok()).collect();
        let mut owners: HashMap<Vec<u8>, &Vec<u8>> = HashMap::new();
        for key in &accepted {
            for what in Derived::ALL {
                let name = derived(key, what);
                assert_eq!(slot(&name), slot(key), "{key:?} {what:?}");
                assert!(
                    check_name(&name).is_err(),
                    "derived name {name:?} accepted as a key set"
                );
                assert_eq!(owner(&name), Some((what, Name::from_slice(key))));
                if let Some(other) = owners.insert(name.to_vec(), key) {
                    assert_eq!(other, *key, "{other:?} and {key:?} share {name:?}");
                }
            }
        }
        for key in &accepted {
            assert!(
                !owners.contains_key(key.as_slice()),
                "{key:?} is a derived name"
            );
            assert_eq!(owner(key), None);
        }
        accepted.len()
    }

    #[test]
    fn injective_and_reserved_over_every_short_name() {
        // Every string of up to 5 tokens over an alphabet built to collide: braces, the
        // separator, the reserved suffixes and their pieces, binary bytes.
        let tokens: [&[u8]; 10] = [
            b"a", b"{", b"}", b":", b":cache", b":audit", b"cache", b"\0", b"\xff", b"{a}",
        ];
        let mut names: Vec<Vec<u8>> = vec![Vec::new()];
        let mut frontier: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..5 {
            let mut next = Vec::new();
            for prefix in &frontier {
                for t in tokens {
                    let mut n = prefix.clone();
                    n.extend_from_slice(t);
                    next.push(n);
                }
            }
            names.extend(next.iter().cloned());
            frontier = next;
        }
        names.sort();
        names.dedup();
        let accepted = check_all(&names);
        assert!(accepted > 10_000, "{accepted} of {}", names.len());
    }

    #[test]
    fn injective_and_reserved_over_random_long_names() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"ab{}:\0\r\n\xffcache";
        let mut names = Vec::new();
        for _ in 0..20_000 {
            let len = (next() % 600) as usize;
            let name: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            // Pair each name with its wrapped and tagged variants, the likeliest collisions.
            let mut wrapped = b"{".to_vec();
            wrapped.extend_from_slice(&name);
            wrapped.push(b'}');
            names.push(name);
            names.push(wrapped);
        }
        check_all(&names);
    }

    #[test]
    fn slots_are_redis_clusters() {
        // From the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(super::slot(b"123456789"), 0x31C3);
        assert_eq!(super::slot(b"foo"), 12182);
        assert_eq!(super::slot(b"jwks:{foo}"), 12182);
        assert_eq!(super::slot(b"{}foo"), super::slot(b"{}foo"));
    }
}
