-- Shared by every script. The generated tables NEXT (the state machine of queue-core),
-- VALID, TERMINAL, BAND and PNAME are prepended by scripts.rs.
-- ARGV[1] = key prefix (`<prefix>{<queue>}:`), ARGV[2] = now in ms ('' = server TIME).
local P = ARGV[1]
local NOW
if ARGV[2] ~= '' then
  NOW = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function k(name) return P .. name end
local function jk(id) return P .. 'job:' .. id end
local function num(v, default)
  local n = tonumber(v)
  if n == nil then return default end
  return n
end
local function is_hash(key) return redis.call('TYPE', key).ok == 'hash' end

local function emit(id, kind, fields)
  fields.job_id = id
  fields.at = NOW
  fields.type = kind
  redis.call('PUBLISH', k('events'), cjson.encode(fields))
end

-- Moves `id` between status indexes (scored by creation time) and announces it.
local function move_status(id, from, to, created)
  if from and VALID[from] then
    redis.call('ZREM', k('st:' .. from), id)
  else
    from = nil
  end
  redis.call('ZADD', k('st:' .. to), created, id)
  redis.call('HSET', jk(id), 'status', to)
  emit(id, 'transition', { from = from, to = to })
end

local function is_active(id)
  if not id then return false end
  local key = jk(id)
  if not is_hash(key) then return false end
  local s = redis.call('HGET', key, 'status')
  return s == 'queued' or s == 'processing'
end

-- The caller holds the lease: right token and unexpired.
local function held(id, token)
  local key = jk(id)
  if not is_hash(key) then return false end
  if redis.call('HGET', key, 'token') ~= token then return false end
  local expires = redis.call('ZSCORE', k('active'), id)
  return expires ~= false and tonumber(expires) > NOW
end

-- Bookkeeping of a terminal status: finished index, unique key released, safety expiry.
local function terminal(id, to, retention_ms)
  local key = jk(id)
  redis.call('HSET', key, 'completed_at', NOW)
  redis.call('HDEL', key, 'run_at', 'token', 'worker_id', 'lease_ms')
  redis.call('ZADD', k('finished'), NOW, id)
  local uk = redis.call('HGET', key, 'unique_key')
  if uk and redis.call('HGET', k('dedup'), uk) == id then
    redis.call('HDEL', k('dedup'), uk)
  end
  redis.call('PEXPIRE', key, retention_ms + 86400000)
  redis.call('HINCRBY', k('stats'), to, 1)
end

local function wake() redis.call('ZADD', k('marker'), 0, '0') end

-- Rewrites unreadable fields of a corrupt job hash with safe values (the originals of
-- JSON fields are kept under `corrupt_<field>`), so the failed record can be read.
local function sanitize(id)
  local key = jk(id)
  redis.call('HSET', key, 'job_id', id)
  local p = math.floor(num(redis.call('HGET', key, 'progress'), 0))
  redis.call('HSET', key, 'progress', math.min(math.max(p, 0), 100))
  for _, f in ipairs({ 'retry_count', 'max_retries' }) do
    redis.call('HSET', key, f, math.max(math.floor(num(redis.call('HGET', key, f), 0)), 0))
  end
  redis.call('HSET', key, 'created_at', math.floor(num(redis.call('HGET', key, 'created_at'), NOW)))
  for _, f in ipairs({ 'started_at', 'completed_at', 'run_at', 'timeout_ms' }) do
    local v = redis.call('HGET', key, f)
    if v and not tonumber(v) then redis.call('HDEL', key, f) end
  end
  if not redis.call('HGET', key, 'task') then redis.call('HSET', key, 'task', 'unknown') end
  if not BAND[redis.call('HGET', key, 'priority')] then redis.call('HSET', key, 'priority', 'normal') end
  for _, f in ipairs({ 'payload', 'metadata', 'result' }) do
    local v = redis.call('HGET', key, f)
    local ok, decoded = false, nil
    if v then ok, decoded = pcall(cjson.decode, v) end
    if v and (not ok or (f == 'metadata' and type(decoded) ~= 'table')) then
      redis.call('HSET', key, 'corrupt_' .. f, v)
      redis.call('HDEL', key, f)
    end
  end
  if not redis.call('HGET', key, 'payload') then redis.call('HSET', key, 'payload', 'null') end
end

-- A key that is not a hash where a job should be: replace it by a failed record saying so.
local function fail_garbage(id, kind, retention_ms)
  local key = jk(id)
  redis.call('DEL', key)
  redis.call('HSET', key, 'job_id', id, 'task', 'unknown', 'payload', 'null', 'status', 'failed',
    'priority', 'normal', 'progress', 0, 'retry_count', 0, 'max_retries', 0, 'created_at', NOW,
    'error_message', 'corrupt job record: stored as a ' .. kind .. ', not a hash')
  for s, _ in pairs(VALID) do redis.call('ZREM', k('st:' .. s), id) end
  redis.call('ZADD', k('jobs'), NOW, id)
  terminal(id, 'failed', retention_ms)
  redis.call('ZADD', k('st:failed'), NOW, id)
  emit(id, 'transition', { to = 'failed' })
end

-- Promotes due delayed jobs, then leases up to `max` ready jobs.
local function claim(worker, token_base, lease_ms, max, retention_ms)
  local due = redis.call('ZRANGEBYSCORE', k('delayed'), '-inf', NOW, 'LIMIT', 0, 100)
  for _, id in ipairs(due) do
    redis.call('ZREM', k('delayed'), id)
    local key = jk(id)
    if is_hash(key) then
      local band = BAND[redis.call('HGET', key, 'priority')] or 1
      local score = band * 1e12 + redis.call('INCR', k('seq'))
      redis.call('ZADD', k('ready'), score, id)
      redis.call('HSET', key, 'score', score)
      redis.call('HDEL', key, 'run_at')
    elseif redis.call('EXISTS', key) == 1 then
      fail_garbage(id, redis.call('TYPE', key).ok, retention_ms)
    end
  end
  local out = {}
  while #out < max do
    local popped = redis.call('ZPOPMIN', k('ready'))
    if #popped == 0 then break end
    local id = popped[1]
    local key = jk(id)
    local kind = redis.call('TYPE', key).ok
    if kind == 'hash' then
      local status = redis.call('HGET', key, 'status')
      -- A valid status other than queued is a stale index entry: drop it. An unreadable
      -- one is claimed, so the worker fails the job with a clear error.
      if status == 'queued' or not VALID[status] then
        local token = token_base .. ':' .. (#out + 1)
        redis.call('HSET', key, 'started_at', NOW, 'progress', 0, 'worker_id', worker,
          'token', token, 'lease_ms', lease_ms)
        redis.call('HDEL', key, 'current_step')
        redis.call('ZADD', k('active'), NOW + lease_ms, id)
        move_status(id, status, 'processing', num(redis.call('HGET', key, 'created_at'), NOW))
        out[#out + 1] = { id, redis.call('HGETALL', key) }
      end
    elseif kind ~= 'none' then
      fail_garbage(id, kind, retention_ms)
    end
  end
  if redis.call('ZCARD', k('ready')) > 0 then wake() end
  return out
end

local function next_due()
  local first = redis.call('ZRANGE', k('delayed'), 0, 0, 'WITHSCORES')
  if #first == 0 then return '' end
  return first[2]
end
