//! The change event published on a key set's events channel (`K:events`, sharded pub/sub)
//! after every committed change: a small JSON object a verifier reloads on. Pure.

use serde::Serialize;

use crate::keyset::KeySet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Keys added, promoted, retired or updated (by a command or the schedule).
    Rotated,
    /// The cached document was dropped (JWKS.INVALIDATE).
    Invalidated,
    /// The lifecycle policy changed.
    Policy,
    /// Another key set now sits at the name (RENAME, RESTORE, COPY, MOVE onto it).
    Replaced,
    /// No key set at the name any more.
    Deleted,
}

#[derive(Serialize)]
struct Message<'a> {
    event: Kind,
    key: &'a str,
    generation: Option<u64>,
    etag: Option<&'a str>,
    current: Option<&'a str>,
    reason: Option<&'a str>,
}

/// The message for the key set now at `key` (`None` when there is none), with the ETag of
/// its document.
pub fn message(
    kind: Kind,
    key: &[u8],
    set: Option<(&KeySet, &str)>,
    reason: Option<&str>,
) -> String {
    let key = String::from_utf8_lossy(key);
    let m = Message {
        event: kind,
        key: &key,
        generation: set.map(|(s, _)| s.generation()),
        etag: set.map(|(_, etag)| etag),
        current: set.and_then(|(s, _)| s.current_kid()),
        reason,
    };
    // Plain strings and numbers: serializing cannot fail.
    serde_json::to_string(&m).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_small_json() {
        let set = KeySet::default();
        assert_eq!(
            message(
                Kind::Rotated,
                b"jwks:{a}",
                Some((&set, "\"e\"")),
                Some("policy")
            ),
            r#"{"event":"rotated","key":"jwks:{a}","generation":0,"etag":"\"e\"","current":null,"reason":"policy"}"#
        );
        assert_eq!(
            message(Kind::Deleted, b"k", None, None),
            r#"{"event":"deleted","key":"k","generation":null,"etag":null,"current":null,"reason":null}"#
        );
    }
}
