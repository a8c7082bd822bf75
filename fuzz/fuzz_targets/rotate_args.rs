//! JWKS.ROTATE arguments: the input is split on 0xFF into arguments, parsed, and applied
//! to a small key set with a lifecycle policy (so the guards and FORCE are exercised), then
//! the policy's due changes are applied. Nothing may panic; a failed apply leaves the set
//! unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;
use redis_jwks_core::args::parse_rotate;
use redis_jwks_core::jwk::{Jwk, Policy};
use redis_jwks_core::keyset::{KeySet, Lifecycle, Op};

fuzz_target!(|data: &[u8]| {
    let args: Vec<&[u8]> = data.split(|b| *b == 0xFF).collect();
    let policy = Policy { min_rsa_bits: 2048 };
    let Ok(req) = parse_rotate(&args, &policy) else { return };
    let base_key = Jwk::from_value(redis_jwks_core::testkeys::ec("a", 1), &policy).expect("fixture");
    let (base, _) = KeySet::default()
        .apply(&[Op::Add(base_key), Op::Promote("a".into())], 0, false)
        .expect("fixture");
    let base = base.with_lifecycle(Lifecycle { promote_after_ms: 10, retire_after_ms: 20, ..Lifecycle::default() });
    let before = base.clone();
    match base.apply(&req.ops, 1, req.force) {
        Ok((next, changes)) => {
            assert!(next.entries().iter().filter(|e| e.state.name() == "current").count() <= 1);
            assert_eq!(next.generation() > base.generation(), !changes.is_empty());
            let mut set = next;
            let mut steps = 0;
            while let Some((after, _, due)) = set.apply_due(1_000) {
                assert!(due.at_ms <= 1_000);
                assert_eq!(after.generation(), set.generation() + 1);
                set = after;
                steps += 1;
                assert!(steps <= 300, "the schedule does not converge");
            }
            assert!(set.next_change().is_none_or(|d| d.at_ms > 1_000));
        }
        Err(_) => assert_eq!(base, before),
    }
});
