-- ARGV: 3 id, 4 token, 5 outcome (completed|partial|retry|failed|cancelled|released|corrupt),
-- 6 error, 7 result JSON ('' = none), 8 delay_ms, 9 retention_ms, 10 claim next ('1'/'0'),
-- 11 worker, 12 token base, 13 lease_ms.
-- Returns {'lost'} or {status, next job fields or nothing}.
local id, kind, err, result = ARGV[3], ARGV[5], ARGV[6], ARGV[7]
local retention = tonumber(ARGV[9])
if not held(id, ARGV[4]) then return { 'lost' } end
local key = jk(id)
if kind == 'corrupt' then
  sanitize(id)
  kind = 'failed'
end
redis.call('ZREM', k('active'), id)
local cancel = redis.call('HGET', key, 'cancel_requested') == '1'
local retries = num(redis.call('HGET', key, 'retry_count'), 0)
if cancel and (kind == 'retry' or kind == 'failed' or kind == 'released') then kind = 'cancelled' end
if kind == 'retry' and retries >= num(redis.call('HGET', key, 'max_retries'), 0) then kind = 'failed' end
local event
if kind == 'completed' then
  redis.call('HSET', key, 'progress', 100)
  redis.call('HDEL', key, 'error_message')
  if result ~= '' then redis.call('HSET', key, 'result', result) end
  event = 'complete'
elseif kind == 'partial' then
  redis.call('HSET', key, 'progress', 100, 'error_message', err)
  if result ~= '' then redis.call('HSET', key, 'result', result) end
  event = 'complete_partial'
elseif kind == 'failed' then
  redis.call('HSET', key, 'error_message', err)
  event = 'fail'
elseif kind == 'cancelled' then
  event = 'cancel'
elseif kind == 'retry' then
  local due = NOW + tonumber(ARGV[8])
  redis.call('HSET', key, 'error_message', err, 'retry_count', retries + 1, 'progress', 0, 'run_at', due)
  redis.call('HDEL', key, 'current_step')
  redis.call('ZADD', k('delayed'), due, id)
  redis.call('HINCRBY', k('stats'), 'retried', 1)
  wake()
  event = 'retry'
elseif kind == 'released' then
  redis.call('HSET', key, 'progress', 0)
  redis.call('HDEL', key, 'current_step')
  local score = num(redis.call('HGET', key, 'score'), 1e12 + redis.call('INCR', k('seq')))
  redis.call('ZADD', k('ready'), score, id)
  wake()
  event = 'release'
else
  return redis.error_reply('unknown outcome ' .. tostring(kind))
end
local to = NEXT['processing'][event]
redis.call('HDEL', key, 'token', 'worker_id')
if TERMINAL[to] then terminal(id, to, retention) end
move_status(id, 'processing', to, num(redis.call('HGET', key, 'created_at'), NOW))
if ARGV[10] == '1' then
  local next = claim(ARGV[11], ARGV[12], tonumber(ARGV[13]), 1, retention)
  return { to, next }
end
return { to, {} }
