//! The change event published on a key set's events channel (`K:events`, sharded pub/sub)
//! after every committed change: a small JSON object a verifier reloads on. Pure.
//!
//! The message is ASCII (every other character as a JSON `\uXXXX` escape: no U+2028,
//! bidi override or invisible character reaches a subscriber's log or page raw) and decodes
//! to the exact name, kid and reason. A name that is not UTF-8 cannot be a JSON string:
//! `key` then holds its escaped text form (`crate::escape::text`) and `key_b64` its exact
//! bytes, standard base64.

use base64::Engine as _;
use serde::Serialize;

use crate::escape;

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
    #[serde(skip_serializing_if = "Option::is_none")]
    key_b64: Option<String>,
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
    let (text, key_b64) = match std::str::from_utf8(key) {
        Ok(text) => (std::borrow::Cow::Borrowed(text), None),
        Err(_) => (
            std::borrow::Cow::Owned(escape::text(key)),
            Some(base64::engine::general_purpose::STANDARD.encode(key)),
        ),
    };
    let m = Message {
        event: kind,
        key: &text,
        key_b64,
        generation: set.map(|(s, _)| s.generation()),
        etag: set.map(|(_, etag)| etag),
        current: set.and_then(|(s, _)| s.current_kid()),
        reason,
    };
    // Plain strings and numbers: serializing cannot fail.
    escape::ascii_json(serde_json::to_string(&m).unwrap_or_default())
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

    #[test]
    fn names_come_back_exactly_and_messages_are_ascii() {
        let decode = |m: &str| serde_json::from_str::<serde_json::Value>(m).unwrap();
        let name = "a\u{2028}b\u{202e}c\r\n\u{e9}";
        let m = message(Kind::Deleted, name.as_bytes(), None, Some("r\u{2029}"));
        assert!(m.is_ascii(), "{m}");
        assert!(m.contains(r#""key":"a\u2028b\u202ec\r\n\u00e9""#), "{m}");
        let v = decode(&m);
        assert_eq!(v["key"], name);
        assert_eq!(v["reason"], "r\u{2029}");
        assert!(v.get("key_b64").is_none());
        let m = message(Kind::Deleted, b"\x00\r\n\xff", None, None);
        assert_eq!(
            m,
            r#"{"event":"deleted","key":"\\u{0}\\r\\n\\xff","key_b64":"AA0K/w==","generation":null,"etag":null,"current":null,"reason":null}"#
        );
    }
}
