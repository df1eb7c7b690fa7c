-- ARGV: 3 id, 4 token, 5 outcome (completed|partial|retry|failed|cancelled|released|corrupt),
-- 6 error, 7 result JSON ('' = none), 8 delay_ms, 9 retention_ms, 10 claim next ('1'/'0'),
-- 11 worker, 12 token base, 13 lease_ms.
-- Returns {'lost'} or {status, claimed (see claim)}.
local id, kind, err, result = ARGV[3], ARGV[5], ARGV[6], ARGV[7]
local retention = tonumber(ARGV[9])
local h = held(id, ARGV[4])
if not h then return { 'lost' } end
local key = jk(id)
if kind == 'corrupt' then
  sanitize(id)
  kind = 'failed'
end
redis.call('ZREM', k('active'), id)
if h.cancel and (kind == 'retry' or kind == 'failed' or kind == 'released') then kind = 'cancelled' end
if kind == 'retry' and h.retries >= h.max_retries then kind = 'failed' end
local event
local set = {}
if kind == 'completed' then
  set = { 'progress', 100, 'error_message', '' }
  if result ~= '' then set[5] = 'result'; set[6] = result end
  event = 'complete'
elseif kind == 'partial' then
  set = { 'progress', 100, 'error_message', err }
  if result ~= '' then set[5] = 'result'; set[6] = result end
  event = 'complete_partial'
elseif kind == 'failed' then
  set = { 'error_message', err }
  event = 'fail'
elseif kind == 'cancelled' then
  event = 'cancel'
elseif kind == 'retry' then
  local due = NOW + tonumber(ARGV[8])
  redis.call('HSET', key, 'status', 'queued', 'error_message', err, 'retry_count', h.retries + 1,
    'progress', 0, 'run_at', due, 'current_step', '', 'token', '', 'worker_id', '', 'lease_expires', '')
  redis.call('ZADD', k('delayed'), due, id)
  redis.call('HINCRBY', k('stats'), 'retried', 1)
  wake()
  event = 'retry'
elseif kind == 'released' then
  redis.call('HSET', key, 'status', 'queued', 'progress', 0, 'current_step', '', 'token', '',
    'worker_id', '', 'lease_expires', '')
  redis.call('ZADD', k('ready'), num(h.score, 1e12 + redis.call('INCR', k('seq'))), id)
  wake()
  event = 'release'
else
  return redis.error_reply('unknown outcome ' .. tostring(kind))
end
local to = NEXT['processing'][event]
if TERMINAL[to] then terminal(id, to, h.unique_key, retention, set) end
move_status(id, 'processing', to, h.created)
if ARGV[10] == '1' then
  return { to, claim(ARGV[11], ARGV[12], tonumber(ARGV[13]), 1, retention, false) }
end
return { to, {} }
