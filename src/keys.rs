//! Names of the keys derived from a key-set key `K`. All of them hash to K's cluster slot,
//! so one command can touch them all on a cluster node (and MIGRATE moves them together).

use smallvec::SmallVec;

use crate::error::{Error, Result, Shown};

/// A key name, on the stack when short (as nearly all are): names are built on every
/// command, JWKS.GET's cache hit included.
pub type Name = SmallVec<[u8; 64]>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedKeys {
    pub cache: Name,
    pub audit: Name,
    pub metrics: Name,
}

/// The hash tag Redis Cluster would use for `key`, if any: the bytes between the first `{`
/// and the first `}` after it, when that is non-empty.
pub fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let after = key.get(open + 1..)?;
    let close = after.iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &after[..close])
}

pub const CACHE: &[u8] = b":cache";
pub const AUDIT: &[u8] = b":audit";
pub const METRICS: &[u8] = b":metrics";

/// `K<suffix>` if K has a hash tag, else `{K}<suffix>`. A K without a tag but with a `}`
/// cannot be wrapped, since the tag of `{K}` would then not be K: refused.
pub fn derived_name(key: &[u8], suffix: &[u8]) -> Result<Name> {
    if key.is_empty() {
        return Err(Error::KeyName(Shown::new(""), "must not be empty"));
    }
    let mut name = Name::with_capacity(key.len() + 2 + suffix.len());
    if hash_tag(key).is_some() {
        name.extend_from_slice(key);
    } else if key.contains(&b'}') {
        return Err(Error::KeyName(
            Shown::bytes(key),
            "contains '}' without a valid {hash tag}; derived keys would land in another slot",
        ));
    } else {
        name.push(b'{');
        name.extend_from_slice(key);
        name.push(b'}');
    }
    name.extend_from_slice(suffix);
    Ok(name)
}

impl DerivedKeys {
    pub fn for_key(key: &[u8]) -> Result<DerivedKeys> {
        Ok(DerivedKeys {
            cache: derived_name(key, CACHE)?,
            audit: derived_name(key, AUDIT)?,
            metrics: derived_name(key, METRICS)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(key: &str) -> String {
        String::from_utf8(DerivedKeys::for_key(key.as_bytes()).unwrap().cache.to_vec()).unwrap()
    }

    #[test]
    fn naming() {
        assert_eq!(cache("jwks:{auth}"), "jwks:{auth}:cache");
        assert_eq!(cache("jwks"), "{jwks}:cache");
        assert_eq!(cache("a{b"), "{a{b}:cache");
        assert!(DerivedKeys::for_key(b"{}x").is_err());
        assert!(DerivedKeys::for_key(b"x{}y{z}").is_err());
        assert!(DerivedKeys::for_key(b"").is_err());
        assert!(DerivedKeys::for_key(b"a}b").is_err());
    }

    #[test]
    fn derived_keys_share_the_hash_tag() {
        for key in ["jwks", "jwks:{auth}", "a{b", "x{}y{z}", "{k}", "plain:name"] {
            let tag = hash_tag(key.as_bytes()).unwrap_or(key.as_bytes());
            let d = DerivedKeys::for_key(key.as_bytes());
            let Ok(d) = d else { continue };
            for derived in [&d.cache, &d.audit, &d.metrics] {
                assert_eq!(hash_tag(derived), Some(tag), "{key}");
            }
        }
    }
}
