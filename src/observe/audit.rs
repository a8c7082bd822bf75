//! Audit trail entries (one Redis stream entry each). The field names and actions are the
//! documented interface that operators `XRANGE`, so they live here and nowhere else.

use crate::keyset::Change;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    CacheInvalidated,
    CacheInvalidationFailed,
    KeyAdded,
    KeyPromoted,
    KeyRetired,
    KeyUpdated,
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
    /// The ACL user that ran the command.
    pub user: String,
}

pub type Fields = Vec<(&'static str, String)>;

fn base(action: Action, ctx: &Context) -> Fields {
    vec![
        ("timestamp", ctx.timestamp.clone()),
        ("action", action.name().to_owned()),
        ("reason", ctx.reason.clone()),
        ("generation", ctx.generation.to_string()),
        ("user", ctx.user.clone()),
    ]
}

pub fn key_change(change: &Change, ctx: &Context) -> Fields {
    match change {
        Change::Added { kid } => {
            let mut f = base(Action::KeyAdded, ctx);
            f.push(("kid", kid.clone()));
            f.push(("state", "next".into()));
            f
        }
        Change::Promoted { kid, demoted } => {
            let mut f = base(Action::KeyPromoted, ctx);
            f.push(("kid", kid.clone()));
            if let Some(old) = demoted {
                f.push(("demoted", old.clone()));
            }
            f
        }
        Change::Retired { kid, was } => {
            let mut f = base(Action::KeyRetired, ctx);
            f.push(("kid", kid.clone()));
            f.push(("was", was.name().to_owned()));
            f
        }
        Change::Updated { kid } => {
            let mut f = base(Action::KeyUpdated, ctx);
            f.push(("kid", kid.clone()));
            f
        }
    }
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

pub fn invalidated(ctx: &Context, kids: &[&str], deleted: bool) -> Fields {
    let mut f = base(Action::CacheInvalidated, ctx);
    f.push(("kids", kids.join(",")));
    f.push(("deleted", u8::from(deleted).to_string()));
    f
}

pub fn invalidation_failed(ctx: &Context, kids: &[&str], error: &str) -> Fields {
    let mut f = base(Action::CacheInvalidationFailed, ctx);
    f.push(("kids", kids.join(",")));
    f.push(("error", error.to_owned()));
    f
}

/// RFC 3339 UTC timestamp for a Unix time in milliseconds.
pub fn timestamp(unix_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_ms.div_euclid(1000))
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
        };
        let f = invalidation_failed(&ctx, &["a", "b"], "boom");
        let get = |k: &str| f.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("action"), Some("JWKS_CACHE_INVALIDATION_FAILED"));
        assert_eq!(get("kids"), Some("a,b"));
        assert_eq!(get("error"), Some("boom"));
        assert_eq!(get("generation"), Some("3"));
        let p = key_change(
            &Change::Promoted {
                kid: "b".into(),
                demoted: Some("a".into()),
            },
            &ctx,
        );
        assert!(p.contains(&("action", "JWKS_KEY_PROMOTED".into())));
        assert!(p.contains(&("demoted", "a".into())));
    }
}
