//! Counter names in each key set's `…:metrics` hash. The first two are the operations
//! spec's Prometheus names, kept byte-for-byte so the exporter script can pass them through.

pub const INVALIDATIONS: &str = "jwt_jwks_cache_invalidations_total";
pub const INVALIDATION_ERRORS: &str = "jwt_jwks_cache_invalidation_errors_total";
pub const ROTATIONS: &str = "jwt_jwks_rotations_total";
pub const CACHE_FILLS: &str = "jwt_jwks_cache_fills_total";

/// Every counter, in the order `JWKS.INFO` and the exporter list them.
pub const ALL: [&str; 4] = [INVALIDATIONS, INVALIDATION_ERRORS, ROTATIONS, CACHE_FILLS];

/// JWKS.STATS only: how many key sets this node holds (in all, and `:<db>` per db).
pub const KEY_SETS: &str = "jwt_jwks_key_sets";
/// JWKS.STATS only, per key set (`:<db>:<name>`): its invalidation errors.
pub const KEYSET_ERRORS: &str = "jwt_jwks_keyset_cache_invalidation_errors_total";
