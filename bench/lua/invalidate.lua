-- What a user would write instead of JWKS.INVALIDATE: delete the cached JWKS, append the
-- audit entry (capped like the module's), count it. One atomic script.
-- KEYS: cache, audit, metrics.  ARGV: maxlen, timestamp (RFC 3339, from the caller),
-- reason, generation, user.
local deleted = redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*',
  'timestamp', ARGV[2], 'action', 'JWKS_CACHE_INVALIDATED', 'reason', ARGV[3],
  'generation', ARGV[4], 'user', ARGV[5], 'kids', '', 'deleted', tostring(deleted))
redis.call('HINCRBY', KEYS[3], 'jwt_jwks_cache_invalidations_total', 1)
return deleted
