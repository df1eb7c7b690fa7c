-- ARGV: 3 limit, 4 retention_ms. Recovers jobs whose lease expired; returns their ids.
local ids = redis.call('ZRANGEBYSCORE', k('active'), '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[3]))
local requeued = false
for _, id in ipairs(ids) do
  redis.call('ZREM', k('active'), id)
  local key = jk(id)
  local v = redis.pcall('HMGET', key, 'worker_id', 'retry_count', 'max_retries',
    'cancel_requested', 'score', 'unique_key', 'created_at')
  if not failed(v) and v[7] then
    local worker, retries = v[1] or 'unknown', num(v[2], 0)
    if worker == '' then worker = 'unknown' end
    local event
    local set = {}
    if v[4] == '1' then
      event = 'cancel'
    elseif retries < num(v[3], 0) then
      redis.call('HSET', key, 'status', 'queued', 'retry_count', retries + 1, 'progress', 0,
        'current_step', '', 'token', '', 'worker_id', '', 'lease_expires', '',
        'error_message', 'lease expired: worker ' .. worker .. ' stopped renewing it')
      redis.call('ZADD', k('ready'), num(v[5], 1e12 + redis.call('INCR', k('seq'))), id)
      requeued = true
      event = 'lease_expired'
    else
      set = { 'error_message', 'lease expired: worker ' .. worker .. ' was lost and no retries are left' }
      event = 'fail'
    end
    redis.call('HINCRBY', k('stats'), 'recovered', 1)
    local to = NEXT['processing'][event]
    if TERMINAL[to] then terminal(id, to, v[6], tonumber(ARGV[4]), set) end
    move_status(id, 'processing', to, num(v[7], NOW))
  elseif failed(v) then
    fail_garbage(id, redis.call('TYPE', key).ok, tonumber(ARGV[4]))
  end
end
if requeued then wake() end
return ids
