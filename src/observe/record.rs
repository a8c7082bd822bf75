//! Writes audit entries and counters (replicated with the command). A failure here must
//! not undo the rotation it describes, so it is logged and reported, never raised.

use super::{audit::Fields, log};
use crate::config;
use crate::effects::Key;

pub fn append(audit: &Key, fields: &Fields) -> bool {
    match audit.xadd(fields, config::audit_maxlen()) {
        Ok(()) => true,
        Err(e) => {
            log::write_failed(audit.name(), &e);
            false
        }
    }
}

pub fn count(metrics: &Key, counter: &'static str) -> bool {
    match metrics.hincr(counter) {
        Ok(_) => true,
        Err(e) => {
            log::write_failed(metrics.name(), &e);
            false
        }
    }
}
