//! Counter names in each key set's `…:metrics` hash. The first two are the operations
//! spec's Prometheus names, kept byte-for-byte so the exporter script can pass them through.

pub const INVALIDATIONS: &str = "jwt_jwks_cache_invalidations_total";
pub const INVALIDATION_ERRORS: &str = "jwt_jwks_cache_invalidation_errors_total";
pub const ROTATIONS: &str = "jwt_jwks_rotations_total";
pub const CACHE_FILLS: &str = "jwt_jwks_cache_fills_total";
/// Key sets replaced by a value of another type (`SET K x`): in the key set's hash and a
/// node counter.
pub const KEYSETS_LOST: &str = "jwt_jwks_keysets_lost_total";
/// JWKS.STATS only (a node counter): lifecycle changes the schedule applied.
pub const SCHEDULED_CHANGES: &str = "jwt_jwks_scheduled_changes_total";
/// JWKS.STATS only (a node counter): acks taken (`JWKS.ACK`).
pub const VERIFIER_ACKS: &str = "jwt_jwks_verifier_acks_total";
/// JWKS.STATS only (a node counter, and per key set): `JWKS.KEY` lookups of a kid the key
/// set does not publish (forged tokens, or an issuer signing with an unpublished key).
pub const UNKNOWN_KID_LOOKUPS: &str = "jwt_jwks_unknown_kid_lookups_total";

/// Every counter of a key set's hash, in the order `JWKS.INFO` and the exporter list them.
pub const ALL: [&str; 4] = [INVALIDATIONS, INVALIDATION_ERRORS, ROTATIONS, CACHE_FILLS];
/// Every node counter JWKS.STATS reports.
pub const NODE: [&str; 8] = [
    INVALIDATIONS,
    INVALIDATION_ERRORS,
    ROTATIONS,
    CACHE_FILLS,
    SCHEDULED_CHANGES,
    KEYSETS_LOST,
    VERIFIER_ACKS,
    UNKNOWN_KID_LOOKUPS,
];

/// JWKS.STATS only: how many key sets this node holds (in all, and `:<db>` per db).
pub const KEY_SETS: &str = "jwt_jwks_key_sets";
/// JWKS.STATS only, per key set (`:<db>:<name>`): invalidation errors this process saw.
pub const KEYSET_ERRORS: &str = "jwt_jwks_keyset_cache_invalidation_errors_total";
/// JWKS.STATS only, per key set with a policy: seconds since the current key was promoted.
pub const KEYSET_CURRENT_AGE: &str = "jwt_jwks_keyset_current_key_age_seconds";
/// ... 1 if a `next` key is published.
pub const KEYSET_NEXT_PUBLISHED: &str = "jwt_jwks_keyset_next_key_published";
/// ... PROMOTE-AFTER in seconds.
pub const KEYSET_PROMOTE_AFTER: &str = "jwt_jwks_keyset_promote_after_seconds";
/// JWKS.STATS only, per key set (from 0 for every key set held): unknown-kid lookups.
pub const KEYSET_UNKNOWN_KID_LOOKUPS: &str = "jwt_jwks_keyset_unknown_kid_lookups_total";
/// JWKS.STATS only, per key set that has had an ack: live verifiers.
pub const KEYSET_VERIFIERS: &str = "jwt_jwks_keyset_verifiers";
/// ... live verifiers on an older generation for longer than `jwks.verifier-behind-ms`.
pub const KEYSET_VERIFIERS_BEHIND: &str = "jwt_jwks_keyset_verifiers_behind";
