-- ARGV: 3 retention_ms, 4 limit. Deletes finished jobs older than the retention from every
-- index; returns how many.
local ids = redis.call('ZRANGEBYSCORE', k('finished'), '-inf', NOW - tonumber(ARGV[3]), 'LIMIT', 0,
  tonumber(ARGV[4]))
for _, id in ipairs(ids) do
  local key = jk(id)
  local uk = false
  if is_hash(key) then uk = redis.call('HGET', key, 'unique_key') end
  redis.call('DEL', key)
  redis.call('ZREM', k('finished'), id)
  redis.call('ZREM', k('jobs'), id)
  for s, _ in pairs(VALID) do redis.call('ZREM', k('st:' .. s), id) end
  if uk then
    redis.call('ZREM', k('uk:' .. uk), id)
    if redis.call('HGET', k('dedup'), uk) == id then redis.call('HDEL', k('dedup'), uk) end
  end
end
return #ids
