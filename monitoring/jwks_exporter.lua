-- redis_exporter -script for redis-jwks. redis_exporter runs it as `EVAL <script> 0` and
-- turns each name/value pair into redis_script_values{key="<name>"}.
--
-- It reads the module's numbers from `INFO jwks` (lines `jwks_<name>:<value>`, a count or
-- seconds with a fraction; see
-- docs/monitoring.md for the names), so the exporter's ACL user needs no module command and
-- exists, and scrapes, on a server without the module: there the section is empty and the
-- script answers jwt_jwks_module_up 0. It must never error (an error fails the whole
-- scrape: redis_up 0).
local info = redis.pcall('INFO', 'jwks')
if type(info) ~= 'string' or not string.find(info, '# jwks', 1, true) then
  return {'jwt_jwks_module_up', '0'}
end
local out = {}
for line in string.gmatch(info, '[^\r\n]+') do
  -- The value is the last field: key set names may themselves contain ':'.
  local name, value = string.match(line, '^jwks_(.+):(%-?[%d%.]+)$')
  if name then
    table.insert(out, name)
    table.insert(out, value)
  end
end
table.insert(out, 'jwt_jwks_module_up')
table.insert(out, '1')
return out
