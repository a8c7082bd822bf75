//! The time as the module stamps changes with it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds (0 before 1970, saturating far after).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
