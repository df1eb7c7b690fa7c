-- Creates jobs. KEYS after the statics: each job's key, and its unique key's history key
-- when it has one. ARGV: 3 count, then per job 14 values: id, task, payload, unique_key,
-- band, delay_ms, max_retries, timeout_ms, metadata, job key index, history key index,
-- '1' when the caller chose the id (only such an id can meet leftovers of an old job),
-- group ('' without), cost ('' for 1).
-- Returns {now, {code, id}...}: ok | exists (the id is taken: that record is kept) |
-- stale (entries of a deleted job with this id remain: queued, running or finished) | dup (the unique key's holder) |
-- badkey (the unique key's history key holds something else).
local count = tonumber(ARGV[3])
local out = {}
local created = 0
-- Ready jobs get their places in one INCRBY once all are known (in order).
local ready = {}
for i = 0, count - 1 do
  local b = 4 + i * 14
  local id, task, payload, uk = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local band, delay = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])
  local key = KEYS[tonumber(ARGV[b + 9])]
  local group = ARGV[b + 12]
  if group == '' then group = nil end
  local holder = false
  local history_ok = true
  if uk ~= '' then
    holder = redis.call('HGET', KEY.dedup, uk)
    local t = key_type(KEYS[tonumber(ARGV[b + 10])])
    history_ok = t == 'none' or t == 'zset'
  end
  if redis.call('EXISTS', key) == 1 then
    out[#out + 1] = { 'exists', id }
  elseif ARGV[b + 11] == '1' and (redis.call('ZSCORE', KEY.st_queued, id)
      or redis.call('ZSCORE', KEY.finished, id) or redis.call('HEXISTS', KEY.leases, id) == 1) then
    out[#out + 1] = { 'stale', id }
  elseif holder then
    out[#out + 1] = { 'dup', holder }
  elseif not history_ok then
    out[#out + 1] = { 'badkey', id }
  else
    -- The HSET arguments are built directly (this runs for every job).
    local fields = { 'task', task, 'payload', payload, 'status', 'queued', 'priority', PNAME[band],
      'progress', 0, 'retry_count', 0, 'max_retries', ARGV[b + 6], 'created_at', NOW }
    local n = 16
    if uk ~= '' then fields[n + 1], fields[n + 2], n = 'unique_key', uk, n + 2 end
    if ARGV[b + 7] ~= '' then fields[n + 1], fields[n + 2], n = 'timeout_ms', ARGV[b + 7], n + 2 end
    if ARGV[b + 8] ~= '' then fields[n + 1], fields[n + 2], n = 'metadata', ARGV[b + 8], n + 2 end
    if ARGV[b + 13] ~= '' then fields[n + 1], fields[n + 2], n = 'cost', ARGV[b + 13], n + 2 end
    if group then
      fields[n + 1], fields[n + 2], n = 'group', group, n + 2
      later_group_load(group, UNFINISHED_CHANGE.new)
    end
    if delay > 0 then
      schedule(KEY, band, NOW + delay, id, group)
      fields[n + 1], fields[n + 2], n = 'run_at', NOW + delay, n + 2
    else
      ready[#ready + 1] = { band, id, group }
    end
    redis.call('HSET', key, unpack(fields))
    later_zadd(KEY.st_queued, NOW, id)
    if uk ~= '' then
      redis.call('ZADD', KEYS[tonumber(ARGV[b + 10])], NOW, id)
      redis.call('HSET', KEY.dedup, uk, id)
    end
    emit_transition(KEY, id, nil, 'queued')
    created = created + 1
    out[#out + 1] = { 'ok', id }
  end
end
if #ready > 0 then
  local first = redis.call('INCRBY', KEY.seq, #ready) - #ready
  for i, r in ipairs(ready) do
    if r[3] then
      push_group_ready(KEY, r[1], r[3], first + i, r[2])
    else
      later_zadd(ready_key(KEY, r[1]), first + i, r[2])
    end
  end
end
if created > 0 then
  bump('enqueued', created)
  wake()
end
return { NOW, out }
