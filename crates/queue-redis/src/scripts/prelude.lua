-- Shared by every script. The generated tables NEXT (the state machine of queue-core),
-- VALID, TERMINAL, BAND and PNAME come first (scripts.rs). Loaded once as a Redis Function
-- library, or prepended to each script for EVAL on servers without Functions.
-- Every entry point starts with begin(ARGV): ARGV[1] = key prefix (`<prefix>{<queue>}:`),
-- ARGV[2] = now in ms ('' = server TIME). Calls run one at a time, so P and NOW are safe.
local P, NOW

local function begin(argv)
  P = argv[1]
  if argv[2] ~= '' then
    NOW = tonumber(argv[2])
  else
    local t = redis.call('TIME')
    NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
end

local function k(name) return P .. name end
local function jk(id) return P .. 'job:' .. id end
local function num(v, default)
  local n = tonumber(v)
  if n == nil then return default end
  return n
end
local function is_hash(key) return redis.call('TYPE', key).ok == 'hash' end
local function wake() redis.call('ZADD', k('marker'), 0, '0') end

-- Events: ids and statuses need no escaping, so transitions are built by hand.
local function emit_transition(id, from, to)
  local msg = '{"job_id":"' .. id .. '","at":' .. NOW .. ',"type":"transition","to":"' .. to .. '"'
  if from then msg = msg .. ',"from":"' .. from .. '"' end
  redis.call('PUBLISH', k('events'), msg .. '}')
end

local function emit(id, kind, fields)
  fields.job_id = id
  fields.at = NOW
  fields.type = kind
  redis.call('PUBLISH', k('events'), cjson.encode(fields))
end

-- Status indexes (scored by creation time) exist for every status but `processing`,
-- whose index is `active` itself.
local function move_status(id, from, to, created)
  if from and VALID[from] then
    if from ~= 'processing' then redis.call('ZREM', k('st:' .. from), id) end
  else
    from = nil
  end
  if to ~= 'processing' then redis.call('ZADD', k('st:' .. to), created, id) end
  emit_transition(id, from, to)
end

-- redis.pcall answers a wrong-type key with an error table instead of raising.
local function failed(reply) return type(reply) == 'table' and reply.err ~= nil end

local function is_active(id)
  if not id then return false end
  local s = redis.pcall('HGET', jk(id), 'status')
  return s == 'queued' or s == 'processing'
end

-- The fields a lease holder's write needs, or nil when the caller does not hold the
-- lease (wrong token, expired, not a job hash). `lease_expires` mirrors the job's score in
-- `active`, so the check needs no second command.
local LEASE_FIELDS = { 'token', 'cancel_requested', 'retry_count', 'max_retries', 'created_at',
  'unique_key', 'score', 'lease_ms', 'worker_id', 'lease_expires' }
local function held(id, token)
  local v = redis.pcall('HMGET', jk(id), unpack(LEASE_FIELDS))
  if failed(v) or v[1] ~= token or token == '' then return nil end
  if num(v[10], 0) <= NOW then return nil end
  return {
    cancel = v[2] == '1', retries = num(v[3], 0), max_retries = num(v[4], 0),
    created = num(v[5], NOW), unique_key = v[6], score = v[7], lease_ms = num(v[8], 30000),
    worker = v[9] or 'unknown',
  }
end

-- Renews a lease: the `active` score and its mirror on the job.
local function extend(id, expires)
  redis.call('ZADD', k('active'), 'XX', expires, id)
  redis.call('HSET', jk(id), 'lease_expires', expires)
end

-- Bookkeeping of a terminal status; `set` holds extra fields to write with it. Cleared
-- fields are written empty (read as absent) so one HSET does it all.
local function terminal(id, to, unique_key, retention_ms, set)
  local key = jk(id)
  redis.call('HSET', key, 'status', to, 'completed_at', NOW, 'run_at', '', 'token', '',
    'worker_id', '', 'lease_ms', '', 'lease_expires', '', unpack(set))
  redis.call('ZADD', k('finished'), NOW, id)
  if unique_key and redis.call('HGET', k('dedup'), unique_key) == id then
    redis.call('HDEL', k('dedup'), unique_key)
  end
  redis.call('PEXPIRE', key, retention_ms + 86400000)
  redis.call('HINCRBY', k('stats'), to, 1)
end

-- A key that is not a hash where a job should be: replace it by a failed record saying so.
local function fail_garbage(id, kind, retention_ms)
  local key = jk(id)
  redis.call('DEL', key)
  redis.call('HSET', key, 'job_id', id, 'task', 'unknown', 'payload', 'null', 'priority', 'normal',
    'progress', 0, 'retry_count', 0, 'max_retries', 0, 'created_at', NOW,
    'error_message', 'corrupt job record: stored as a ' .. kind .. ', not a hash')
  for s, _ in pairs(VALID) do redis.call('ZREM', k('st:' .. s), id) end
  redis.call('ZREM', k('active'), id)
  redis.call('ZADD', k('jobs'), NOW, id)
  terminal(id, 'failed', nil, retention_ms, {})
  move_status(id, nil, 'failed', NOW)
end

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

-- Promotes due delayed jobs, then leases up to `max` ready jobs: a list of
-- {id, token, now, fields as read before the claim}.
-- `chain` re-arms the wake-up marker when work is left (not needed when a finishing
-- worker claims its next job: it will come back by itself).
local function claim(worker, token_base, lease_ms, max, retention_ms, chain)
  local due = redis.call('ZRANGEBYSCORE', k('delayed'), '-inf', NOW, 'LIMIT', 0, 100)
  for _, id in ipairs(due) do
    redis.call('ZREM', k('delayed'), id)
    local key = jk(id)
    local prio = redis.pcall('HGET', key, 'priority')
    if failed(prio) then
      fail_garbage(id, redis.call('TYPE', key).ok, retention_ms)
    elseif prio then
      local score = (BAND[prio] or 1) * 1e12 + redis.call('INCR', k('seq'))
      redis.call('ZADD', k('ready'), score, id)
      redis.call('HSET', key, 'score', score, 'run_at', '')
    end
  end
  local out = {}
  while #out < max do
    local popped = redis.call('ZPOPMIN', k('ready'))
    if #popped == 0 then break end
    local id = popped[1]
    local key = jk(id)
    local fields = redis.pcall('HGETALL', key)
    if failed(fields) then
      fail_garbage(id, redis.call('TYPE', key).ok, retention_ms)
    elseif #fields > 0 then
      local status, created
      for i = 1, #fields, 2 do
        if fields[i] == 'status' then status = fields[i + 1] elseif fields[i] == 'created_at' then created = fields[i + 1] end
      end
      -- An unreadable status is claimed too, so the worker fails the job with a clear
      -- error; a valid status other than queued is a stale index entry and is dropped.
      if status == 'queued' or not VALID[status] then
        local token = token_base .. ':' .. (#out + 1)
        local expires = NOW + lease_ms
        redis.call('HSET', key, 'status', 'processing', 'started_at', NOW, 'progress', 0,
          'worker_id', worker, 'token', token, 'lease_ms', lease_ms, 'lease_expires', expires,
          'current_step', '')
        redis.call('ZADD', k('active'), expires, id)
        move_status(id, status, 'processing', num(created, NOW))
        -- The fields as read; the client applies the changes above (it knows them all).
        out[#out + 1] = { id, token, NOW, fields }
      end
    end
  end
  if chain and redis.call('ZCARD', k('ready')) > 0 then wake() end
  return out
end

local function next_due()
  local first = redis.call('ZRANGE', k('delayed'), 0, 0, 'WITHSCORES')
  if #first == 0 then return '' end
  return first[2]
end
