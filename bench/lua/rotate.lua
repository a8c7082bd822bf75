-- What a user would write instead of JWKS.ROTATE: the key set as JSON in a string, the same
-- states and rules, the cache deleted in the same script, audit entries and counters.
-- It checks what is cheap in Lua (duplicate kids, private members, unknown kids, the current
-- key); it cannot check curve points or RSA sizes, which the module does on every ADD.
-- KEYS: set, cache, audit, metrics.
-- ARGV: maxlen, timestamp, reason, then op pairs: ADD <jwk> | PROMOTE <kid> | RETIRE <kid>.
local raw = redis.call('GET', KEYS[1])
local set = raw and cjson.decode(raw) or {generation = 0, keys = {}}
local private = {d = 1, p = 1, q = 1, dp = 1, dq = 1, qi = 1, oth = 1, k = 1}
local changes = {}

local function find(kid)
  for i, e in ipairs(set.keys) do
    if e.jwk.kid == kid then return i, e end
  end
  return nil
end

local had_current = false
for _, e in ipairs(set.keys) do
  if e.state == 'current' then had_current = true end
end

for i = 4, #ARGV, 2 do
  local op, arg = ARGV[i], ARGV[i + 1]
  if op == 'ADD' then
    local jwk = cjson.decode(arg)
    for m in pairs(jwk) do
      if private[m] then return redis.error_reply('ERR private member ' .. m) end
    end
    if type(jwk.kid) ~= 'string' then return redis.error_reply('ERR missing kid') end
    if find(jwk.kid) then return redis.error_reply('ERR duplicate kid') end
    table.insert(set.keys, {jwk = jwk, state = 'next', added = ARGV[2]})
    table.insert(changes, {'JWKS_KEY_ADDED', jwk.kid})
  elseif op == 'PROMOTE' then
    local _, e = find(arg)
    if not e then return redis.error_reply('ERR unknown kid') end
    if e.state == 'current' then return redis.error_reply('ERR already current') end
    for _, o in ipairs(set.keys) do
      if o.state == 'current' then o.state = 'previous' end
    end
    e.state = 'current'
    table.insert(changes, {'JWKS_KEY_PROMOTED', arg})
  elseif op == 'RETIRE' then
    local at = find(arg)
    if not at then return redis.error_reply('ERR unknown kid') end
    table.remove(set.keys, at)
    table.insert(changes, {'JWKS_KEY_RETIRED', arg})
  else
    return redis.error_reply('ERR unknown op')
  end
end

local has_current = false
for _, e in ipairs(set.keys) do
  if e.state == 'current' then has_current = true end
end
if had_current and not has_current then
  return redis.error_reply('ERR cannot retire the current key')
end

set.generation = set.generation + 1
redis.call('SET', KEYS[1], cjson.encode(set))
for _, c in ipairs(changes) do
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 'timestamp', ARGV[2],
    'action', c[1], 'reason', ARGV[3], 'generation', set.generation, 'kid', c[2])
end
local deleted = redis.call('DEL', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 'timestamp', ARGV[2],
  'action', 'JWKS_CACHE_INVALIDATED', 'reason', ARGV[3], 'generation', set.generation,
  'deleted', tostring(deleted))
redis.call('HINCRBY', KEYS[4], 'jwt_jwks_rotations_total', 1)
redis.call('HINCRBY', KEYS[4], 'jwt_jwks_cache_invalidations_total', 1)
return set.generation
