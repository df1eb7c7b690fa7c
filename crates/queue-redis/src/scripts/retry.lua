-- ARGV: 3 id, 4 band ('' keeps the priority). Returns {'ok', fields} | {'missing'} |
-- {'invalid', status} | {'dup', holder}.
local id = ARGV[3]
local key = jk(id)
if not is_hash(key) then return { 'missing' } end
local status = redis.call('HGET', key, 'status')
if not (NEXT[status] and NEXT[status]['manual_retry']) then return { 'invalid', status or '' } end
local uk = redis.call('HGET', key, 'unique_key')
if uk then
  local holder = redis.call('HGET', k('dedup'), uk)
  if holder and holder ~= id and is_active(holder) then return { 'dup', holder } end
end
if ARGV[4] ~= '' then redis.call('HSET', key, 'priority', PNAME[tonumber(ARGV[4])]) end
local band = BAND[redis.call('HGET', key, 'priority')] or 1
local score = band * 1e12 + redis.call('INCR', k('seq'))
redis.call('HSET', key, 'status', 'queued', 'retry_count', 0, 'progress', 0, 'score', score)
redis.call('HDEL', key, 'current_step', 'error_message', 'result', 'started_at', 'completed_at',
  'run_at', 'cancel_requested', 'token', 'worker_id', 'lease_ms', 'lease_expires')
redis.call('PERSIST', key)
redis.call('ZREM', k('finished'), id)
redis.call('ZADD', k('ready'), score, id)
if uk then redis.call('HSET', k('dedup'), uk, id) end
move_status(id, status, 'queued', num(redis.call('HGET', key, 'created_at'), NOW))
wake()
return { 'ok', redis.call('HGETALL', key) }
