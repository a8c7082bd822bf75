//! Audit trail entries (one Redis stream entry each). The field names and actions are the
//! documented interface that operators `XRANGE`, so they live here and nowhere else.
//!
//! Stream values are binary-safe: reasons, kids, users and errors are written exactly as
//! they are (UTF-8), never escaped or made lossy. The one value that joins several, `kids`,
//! writes each kid with `\` as `\\` and `,` as `\,`, so the list splits back exactly.

use std::borrow::Cow;

use parking_lot::Mutex;

use crate::keyset::Change;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    CacheInvalidated,
    CacheInvalidationFailed,
    KeyAdded,
    KeyPromoted,
    KeyRetired,
    KeyUpdated,
    PolicySet,
    KeySetLost,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::CacheInvalidated => "JWKS_CACHE_INVALIDATED",
            Action::CacheInvalidationFailed => "JWKS_CACHE_INVALIDATION_FAILED",
            Action::KeyAdded => "JWKS_KEY_ADDED",
            Action::KeyPromoted => "JWKS_KEY_PROMOTED",
            Action::KeyRetired => "JWKS_KEY_RETIRED",
            Action::KeyUpdated => "JWKS_KEY_UPDATED",
            Action::PolicySet => "JWKS_POLICY_SET",
            Action::KeySetLost => "JWKS_KEYSET_LOST",
        }
    }
}

/// What every entry of one command shares.
#[derive(Debug, Clone)]
pub struct Context {
    /// UTC, RFC 3339, second precision (`2026-06-22T12:34:56Z`).
    pub timestamp: String,
    pub reason: String,
    /// Generation after the command (unchanged for a plain invalidation).
    pub generation: u64,
    /// The ACL user that ran the command (`(schedule)` for a lifecycle change).
    pub user: String,
    /// FORCE overrode the lifecycle policy's guards.
    pub forced: bool,
}

/// A field value. Fixed texts (actions, flags) are told apart so the Redis side can create
/// them once instead of on every append, which is on the hot path of every invalidation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Fixed(&'static str),
    Text(Cow<'a, str>),
}

impl Value<'_> {
    pub fn as_str(&self) -> &str {
        match self {
            Value::Fixed(s) => s,
            Value::Text(s) => s,
        }
    }
}

fn text(s: &str) -> Value<'_> {
    Value::Text(Cow::Borrowed(s))
}

/// Field name and value pairs, borrowing from the command's context where they can.
pub type Fields<'a> = Vec<(&'static str, Value<'a>)>;

fn base(action: Action, ctx: &Context) -> Fields<'_> {
    let mut fields = Vec::with_capacity(8);
    fields.extend([
        ("timestamp", text(&ctx.timestamp)),
        ("action", Value::Fixed(action.name())),
        ("reason", text(&ctx.reason)),
        (
            "generation",
            Value::Text(Cow::Owned(ctx.generation.to_string())),
        ),
        ("user", text(&ctx.user)),
    ]);
    if ctx.forced {
        fields.push(("forced", Value::Fixed("1")));
    }
    fields
}

/// Another command replaced the key set with a value of another type (`SET K x`): who did
/// it is not known to the module (the command's own log and ACL LOG may tell).
pub fn lost(at_ms: i64) -> Fields<'static> {
    vec![
        ("timestamp", Value::Text(Cow::Owned(timestamp(at_ms)))),
        ("action", Value::Fixed(Action::KeySetLost.name())),
        (
            "reason",
            Value::Fixed("overwritten by a command other than redis-jwks's"),
        ),
        ("user", Value::Fixed("(unknown)")),
    ]
}

pub fn key_change<'a>(change: &'a Change, ctx: &'a Context) -> Fields<'a> {
    match change {
        Change::Added { kid } => {
            let mut f = base(Action::KeyAdded, ctx);
            f.push(("kid", text(kid)));
            f.push(("state", Value::Fixed("next")));
            f
        }
        Change::Promoted { kid, demoted } => {
            let mut f = base(Action::KeyPromoted, ctx);
            f.push(("kid", text(kid)));
            if let Some(old) = demoted {
                f.push(("demoted", text(old)));
            }
            f
        }
        Change::Retired { kid, was } => {
            let mut f = base(Action::KeyRetired, ctx);
            f.push(("kid", text(kid)));
            f.push(("was", Value::Fixed(was.name())));
            f
        }
        Change::Updated { kid } => {
            let mut f = base(Action::KeyUpdated, ctx);
            f.push(("kid", text(kid)));
            f
        }
    }
}

/// The lifecycle policy was set.
pub fn policy_set(ctx: &Context, policy: crate::keyset::Lifecycle) -> Fields<'_> {
    let mut f = base(Action::PolicySet, ctx);
    f.push((
        "promote_after_ms",
        Value::Text(Cow::Owned(policy.promote_after_ms.to_string())),
    ));
    f.push((
        "retire_after_ms",
        Value::Text(Cow::Owned(policy.retire_after_ms.to_string())),
    ));
    // Only with CONFIRM, so entries of other policies read as before.
    if policy.confirms() {
        f.push((
            "confirm_pct",
            Value::Text(Cow::Owned(policy.confirm_pct.to_string())),
        ));
        f.push((
            "min_wait_ms",
            Value::Text(Cow::Owned(policy.min_wait_ms.to_string())),
        ));
    }
    f
}

/// The kids a change touched, for the invalidation entry's context.
pub fn kid_of(change: &Change) -> &str {
    match change {
        Change::Added { kid }
        | Change::Promoted { kid, .. }
        | Change::Retired { kid, .. }
        | Change::Updated { kid } => kid,
    }
}

pub fn invalidated<'a>(ctx: &'a Context, kids: &[&'a str], deleted: bool) -> Fields<'a> {
    let mut f = base(Action::CacheInvalidated, ctx);
    f.push(("kids", kids_value(kids)));
    f.push(("deleted", Value::Fixed(if deleted { "1" } else { "0" })));
    f
}

pub fn invalidation_failed<'a>(ctx: &'a Context, kids: &[&'a str], error: &'a str) -> Fields<'a> {
    let mut f = base(Action::CacheInvalidationFailed, ctx);
    f.push(("kids", kids_value(kids)));
    f.push(("error", text(error)));
    f
}

fn kids_value<'a>(kids: &[&'a str]) -> Value<'a> {
    let plain = |kid: &&str| !kid.contains([',', '\\']);
    match kids {
        [] => Value::Fixed(""),
        [one] if plain(one) => text(one),
        _ if kids.iter().all(plain) => Value::Text(Cow::Owned(kids.join(","))),
        _ => {
            let mut out = String::with_capacity(kids.iter().map(|k| k.len() + 2).sum());
            for (i, kid) in kids.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                for c in kid.chars() {
                    if c == ',' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
            }
            Value::Text(Cow::Owned(out))
        }
    }
}

/// The user for [`Context::user`] from the ACL user's name as Redis gives it: exactly if it
/// is UTF-8 without a backslash, else its escaped text form (never lossy, never two users
/// alike).
pub fn user_name(name: &[u8]) -> String {
    crate::escape::lossless(name).into_owned()
}

/// RFC 3339 UTC timestamp for a Unix time in milliseconds. The last one is remembered:
/// bursts of commands share a second.
pub fn timestamp(unix_ms: i64) -> String {
    static LAST: Mutex<(i64, String)> = Mutex::new((i64::MIN, String::new()));
    let second = unix_ms.div_euclid(1000);
    let mut last = LAST.lock();
    if last.0 != second {
        *last = (second, format_second(second));
    }
    last.1.clone()
}

fn format_second(second: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(second)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp(1_750_595_696_000), "2025-06-22T12:34:56Z");
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn entries_carry_action_reason_and_context() {
        let ctx = Context {
            timestamp: timestamp(0),
            reason: "key_rotation".into(),
            generation: 3,
            user: "default".into(),
            forced: false,
        };
        let f = invalidation_failed(&ctx, &["a", "b"], "boom");
        let get = |k: &str| f.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("action"), Some("JWKS_CACHE_INVALIDATION_FAILED"));
        assert_eq!(get("kids"), Some("a,b"));
        assert_eq!(get("error"), Some("boom"));
        assert_eq!(get("generation"), Some("3"));
        let change = Change::Promoted {
            kid: "b".into(),
            demoted: Some("a".into()),
        };
        let p = key_change(&change, &ctx);
        assert!(p.contains(&("action", Value::Fixed("JWKS_KEY_PROMOTED"))));
        assert!(p.contains(&("demoted", text("a"))));
    }

    #[test]
    fn kid_lists_split_back_exactly_and_values_stay_exact() {
        let ctx = Context {
            timestamp: timestamp(0),
            reason: "r\u{2028}\u{202e}".into(),
            generation: 1,
            user: user_name(b"u\xff"),
            forced: false,
        };
        let kids = |k: &[&str]| {
            let f = invalidated(&ctx, k, true);
            let v = f
                .iter()
                .find(|(n, _)| *n == "kids")
                .map(|(_, v)| v.as_str().to_owned());
            v.unwrap_or_default()
        };
        assert_eq!(kids(&["a", "b"]), "a,b");
        assert_eq!(kids(&["a,b"]), "a\\,b");
        assert_eq!(kids(&["a", "b\\", "c"]), "a,b\\\\,c");
        assert_ne!(kids(&["a,b"]), kids(&["a", "b"]));
        let f = invalidated(&ctx, &[], false);
        assert!(f.contains(&("reason", text("r\u{2028}\u{202e}"))));
        assert!(f.contains(&("user", text("u\\xff"))));
        assert_eq!(user_name(b"default"), "default");
    }
}
