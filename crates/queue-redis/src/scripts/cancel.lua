-- ARGV: 3 id, 4 retention_ms. Returns {'cancelled'} | {'requested'} | {'missing'} |
-- {'invalid', status}.
local id = ARGV[3]
local key = jk(id)
if not is_hash(key) then return { 'missing' } end
local v = redis.call('HMGET', key, 'status', 'unique_key', 'created_at')
local status = v[1]
if status == 'queued' then
  redis.call('ZREM', k('ready'), id)
  redis.call('ZREM', k('delayed'), id)
  terminal(id, 'cancelled', v[2], tonumber(ARGV[4]), {})
  move_status(id, 'queued', 'cancelled', num(v[3], NOW))
  return { 'cancelled' }
elseif status == 'processing' then
  redis.call('HSET', key, 'cancel_requested', '1')
  redis.call('PUBLISH', k('cancel'), id)
  emit(id, 'cancel_requested', {})
  return { 'requested' }
end
return { 'invalid', status or '' }
