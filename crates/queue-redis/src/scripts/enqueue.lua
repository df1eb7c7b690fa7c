-- ARGV: 3 count, then per job: id, task, payload, unique_key, band, delay_ms, max_retries,
-- timeout_ms, metadata. Returns {now, {code, id}...} with code ok | exists | dup.
local count = tonumber(ARGV[3])
local out = {}
local created = false
for i = 0, count - 1 do
  local b = 4 + i * 9
  local id, task, payload, uk = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local band, delay = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])
  local key = jk(id)
  local holder = nil
  if uk ~= '' then holder = redis.call('HGET', k('dedup'), uk) end
  if redis.call('EXISTS', key) == 1 then
    out[#out + 1] = { 'exists', id }
  elseif uk ~= '' and is_active(holder) then
    out[#out + 1] = { 'dup', holder }
  else
    local fields = { 'job_id', id, 'task', task, 'payload', payload, 'status', 'queued',
      'priority', PNAME[band], 'progress', 0, 'retry_count', 0, 'max_retries', ARGV[b + 6],
      'created_at', NOW }
    if uk ~= '' then fields[#fields + 1] = 'unique_key'; fields[#fields + 1] = uk end
    if ARGV[b + 7] ~= '' then fields[#fields + 1] = 'timeout_ms'; fields[#fields + 1] = ARGV[b + 7] end
    if ARGV[b + 8] ~= '' then fields[#fields + 1] = 'metadata'; fields[#fields + 1] = ARGV[b + 8] end
    if delay > 0 then
      redis.call('ZADD', k('delayed'), NOW + delay, id)
      fields[#fields + 1] = 'run_at'; fields[#fields + 1] = NOW + delay
    else
      local score = band * 1e12 + redis.call('INCR', k('seq'))
      redis.call('ZADD', k('ready'), score, id)
      fields[#fields + 1] = 'score'; fields[#fields + 1] = score
    end
    redis.call('HSET', key, unpack(fields))
    redis.call('ZADD', k('st:queued'), NOW, id)
    redis.call('ZADD', k('jobs'), NOW, id)
    if uk ~= '' then
      redis.call('ZADD', k('uk:' .. uk), NOW, id)
      redis.call('HSET', k('dedup'), uk, id)
    end
    emit_transition(id, nil, 'queued')
    created = true
    out[#out + 1] = { 'ok', id }
  end
end
if created then
  redis.call('HINCRBY', k('stats'), 'enqueued', #out)
  wake()
end
return { NOW, out }
