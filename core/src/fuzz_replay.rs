//! Replays the fuzz seeds (and any crash saved under fuzz/regressions/<target>/) through
//! the same checks as the fuzz targets, so every crash the fuzzer ever finds stays fixed.

#[cfg(test)] // a test-only module (declared under #[cfg(test)] by its parent)
use std::path::Path;

use crate::args::parse_rotate;
use crate::jwk::{parse_document, Jwk, Policy};
use crate::keyset::{KeySet, Op, RSA_FLOOR_BITS};

fn inputs(target: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut out = Vec::new();
    for dir in ["seeds", "regressions"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) {
            for e in entries.flatten() {
                out.push(std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

#[test]
fn jwk_inputs() {
    let all = inputs("jwk");
    assert!(all.len() >= 5);
    let accepted = all
        .iter()
        .filter_map(|d| std::str::from_utf8(d).ok())
        .filter(|t| Jwk::parse(t, &Policy { min_rsa_bits: 2048 }).is_ok())
        .count();
    // The RFC keys are accepted; the private and oct ones are not.
    assert!(accepted >= 3 && accepted < all.len());
}

#[test]
fn document_inputs() {
    for data in inputs("document") {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        let policy = Policy {
            min_rsa_bits: RSA_FLOOR_BITS,
        };
        if let Ok(jwks) = parse_document(text, &policy) {
            if let Ok((set, _)) = KeySet::default().apply(&[Op::Replace(jwks)], 0, false) {
                assert!(parse_document(&set.render(), &policy).is_ok());
                assert_eq!(KeySet::from_stored(&set.to_stored()).ok(), Some(set));
            }
        }
    }
}

#[test]
fn rotate_args_inputs() {
    for data in inputs("rotate_args") {
        let args: Vec<&[u8]> = data.split(|b| *b == 0xFF).collect();
        let _ = parse_rotate(&args, &Policy { min_rsa_bits: 2048 });
    }
}

#[test]
fn stored_state_inputs() {
    for data in inputs("stored_state") {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        if let Ok(set) = KeySet::from_stored(text) {
            assert_eq!(KeySet::from_stored(&set.to_stored()).unwrap(), set);
        }
    }
}
