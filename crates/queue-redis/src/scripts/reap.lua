-- ARGV: 3 limit, 4 retention_ms. Recovers jobs whose lease expired; returns their ids.
local ids = redis.call('ZRANGEBYSCORE', k('active'), '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[3]))
local requeued = false
for _, id in ipairs(ids) do
  redis.call('ZREM', k('active'), id)
  local key = jk(id)
  if is_hash(key) then
    local worker = redis.call('HGET', key, 'worker_id') or 'unknown'
    local retries = num(redis.call('HGET', key, 'retry_count'), 0)
    local event
    if redis.call('HGET', key, 'cancel_requested') == '1' then
      event = 'cancel'
    elseif retries < num(redis.call('HGET', key, 'max_retries'), 0) then
      redis.call('HSET', key, 'retry_count', retries + 1, 'progress', 0,
        'error_message', 'lease expired: worker ' .. worker .. ' stopped renewing it')
      redis.call('HDEL', key, 'current_step')
      local score = num(redis.call('HGET', key, 'score'), 1e12 + redis.call('INCR', k('seq')))
      redis.call('ZADD', k('ready'), score, id)
      requeued = true
      event = 'lease_expired'
    else
      redis.call('HSET', key, 'error_message',
        'lease expired: worker ' .. worker .. ' was lost and no retries are left')
      event = 'fail'
    end
    redis.call('HDEL', key, 'token', 'worker_id')
    redis.call('HINCRBY', k('stats'), 'recovered', 1)
    local to = NEXT['processing'][event]
    if TERMINAL[to] then terminal(id, to, tonumber(ARGV[4])) end
    move_status(id, 'processing', to, num(redis.call('HGET', key, 'created_at'), NOW))
  end
end
if requeued then wake() end
return ids
