-- redis_exporter -script for redis-jwks: this node's counters, summed over its key sets,
-- under the operations spec's names. redis_exporter runs it as `EVAL <script> 0` and turns
-- each name/value pair into redis_script_values{key="<name>"}.
--
-- It must never error (a script error fails the whole scrape: redis_up 0), so a server
-- without the module answers jwt_jwks_module_up 0 instead. JWKS.STATS reads one small hash
-- per key set; it never scans the keyspace on a scrape.
local stats = redis.pcall('JWKS.STATS')
if type(stats) ~= 'table' or stats.err then
  return {'jwt_jwks_module_up', '0'}
end
table.insert(stats, 'jwt_jwks_module_up')
table.insert(stats, '1')
return stats
