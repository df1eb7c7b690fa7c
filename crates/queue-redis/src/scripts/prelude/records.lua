-- Writes `set` (field -> value) to a job hash; an empty value removes its field (a record
-- keeps no empty fields). `present` (from facts) names the fields the hash may hold: only
-- those are removed, so a first attempt's ending costs no HDEL. Without it every emptied
-- field is removed.
local function hset(key, set, present)
  local args, gone = {}, {}
  for f, v in pairs(set) do
    if v ~= '' then
      args[#args + 1] = f
      args[#args + 1] = v
    elseif not present or present[f] then
      gone[#gone + 1] = f
    end
  end
  if #args > 0 then call_chunked('HSET', key, args, 2) end
  if #gone > 0 then call_chunked('HDEL', key, gone) end
end

-- The fields an effect may empty (generated rules: a `clear`, or an `input` with no value),
-- worked out on first use (a function library cannot call `pairs` while it loads).
local CLEARABLE

local function clearable()
  if CLEARABLE then return CLEARABLE end
  local list, seen = {}, {}
  local function add(effects)
    for _, fc in ipairs(effects) do
      if (fc[2] == 'clear' or fc[2] == 'input') and not seen[fc[1]] then
        seen[fc[1]] = true
        list[#list + 1] = fc[1]
      end
    end
  end
  for _, effects in pairs(EFFECT) do add(effects) end
  add(START_DEFERRED)
  table.sort(list)
  CLEARABLE = list
  return list
end

-- The `attempts` field with the attempt that ends appended (Change::Append; listed first
-- in an effect, so `set` still holds the attempt's start and worker from
-- materialize_start): a JSON list of {a = attempt (from 1), s = started ms, e = ended ms,
-- w = worker, x = error}, the last MAX_ATTEMPTS_KEPT kept. A damaged list starts again.
local function appended_attempt(set, ctx)
  local list = nil
  local prior = redis.call('HGET', ctx.key, 'attempts')
  if type(prior) == 'string' and prior ~= '' then
    local ok, decoded = pcall(cjson.decode, prior)
    if ok and type(decoded) == 'table' then list = decoded end
  end
  list = list or {}
  local last = list[#list]
  local n = 1
  if type(last) == 'table' and tonumber(last.a) then n = tonumber(last.a) + 1 end
  local worker, err = set.worker_id, ctx.error_message
  if worker == '' then worker = nil end
  if err == '' then err = nil end
  list[#list + 1] = { a = n, s = tonumber(set.started_at), e = ctx.now, w = worker, x = err }
  while #list > MAX_ATTEMPTS_KEPT do table.remove(list, 1) end
  return cjson.encode(list)
end

-- Effects (generated from queue_core::rules::effect): fill `set` (field -> value; '' clears).
local function apply_effect(event, set, ctx)
  for _, fc in ipairs(EFFECT[event]) do
    local f, c = fc[1], fc[2]
    if c == 'clear' then set[f] = ''
    elseif c == 'now' then set[f] = ctx.now
    elseif c == 'zero' then set[f] = 0
    elseif c == 'full' then set[f] = 100
    elseif c == 'incr' then set[f] = ctx.retry_count + 1
    elseif c == 'input' then set[f] = ctx[f] or ''
    elseif c == 'append' then set[f] = appended_attempt(set, ctx)
    end
  end
end

-- What `start` wrote, written when the attempt ends (its other fields need no writing: every
-- way into `queued` already leaves them as `start` would).
local function materialize_start(set, lease)
  for _, fc in ipairs(START_DEFERRED) do
    local f, c = fc[1], fc[2]
    if c == 'now' then set[f] = lease.started
    elseif c == 'input' then set[f] = lease.worker
    else set[f] = '' end
  end
end

local function job_key(id) return PREFIX .. 'job:' .. id end

-- The fields of a record that decide its transitions, read with pcall: nil when the key
-- is not a job hash; `exists` false when there is no such key.
-- `present`: which of the clearable() fields the hash holds.
local function facts(key)
  local fields = clearable()
  local v = redis.pcall('HMGET', key, 'retry_count', 'max_retries', 'created_at', 'unique_key',
    'priority', 'status', 'group', 'parent', 'policy', 'kids_waiting', 'started_at', 'task',
    'after', 'sequence', unpack(fields))
  if failed(v) then return nil end
  local uk = v[4]
  if uk == '' then uk = nil end
  local group = v[7]
  if group == '' then group = nil end
  local parent = v[8]
  if parent == '' then parent = nil end
  local present = {}
  for i, f in ipairs(fields) do
    if v[14 + i] then present[f] = true end
  end
  return { exists = (v[1] or v[2] or v[3] or v[4] or v[5] or v[6]) and true or false,
    retries = num(v[1], 0), max_retries = num(v[2], 0), created = num(v[3], NOW),
    unique_key = uk, band = band_of(v[5]), status = v[6], group = group, present = present,
    parent = parent, policy = CHILD_POLICY[v[9] or ''] or 'fail_parent', waiting = num(v[10], 0),
    started = (v[11] or '') ~= '', task = v[12] or '', after = v[13] or nil,
    sequence = v[14] or nil }
end

-- A key that is not a hash where a job should be: replace it by a failed record saying so.
-- `lease`: its lease, when it was running (its group's slot comes back).
local function fail_garbage(KEY, id, key, kind, lease)
  local group = lease and lease.group
  release_group_slot(KEY, group)
  if group then later_group_load(group, UNFINISHED_CHANGE.fail) end
  redis.call('DEL', key)
  hset(key, { task = 'unknown', payload = 'null', priority = 'normal', progress = 0,
    retry_count = 0, max_retries = 0, created_at = NOW, completed_at = NOW, status = 'failed',
    error_message = 'corrupt job record: stored as a ' .. kind .. ', not a hash' })
  for s, _ in pairs(VALID) do
    if s ~= 'processing' then redis.call('ZREM', status_key(KEY, s), id) end
  end
  ended_lease(KEY, id, lease)
  redis.call('ZADD', KEY.st_failed, NOW, id)
  bump('failed')
  emit_transition(KEY, id, nil, 'failed')
end

-- Rewrites unreadable fields of a corrupt job hash with safe values (the originals of
-- JSON fields are kept under `corrupt_<field>`), so the failed record can be read.
local function sanitize(id, key)
  local set = {}
  local function get(f) return redis.call('HGET', key, f) end
  set.progress = math.min(math.max(math.floor(num(get('progress'), 0)), 0), 100)
  for _, f in ipairs({ 'retry_count', 'max_retries' }) do
    set[f] = math.max(math.floor(num(get(f), 0)), 0)
  end
  set.created_at = math.floor(num(get('created_at'), NOW))
  for _, f in ipairs({ 'started_at', 'completed_at', 'run_at', 'timeout_ms' }) do
    local v = get(f)
    if v and v ~= '' and not tonumber(v) then set[f] = '' end
  end
  if not get('task') then set.task = 'unknown' end
  if not BAND[get('priority')] then set.priority = 'normal' end
  for _, f in ipairs({ 'payload', 'metadata', 'result' }) do
    local v = get(f)
    local ok, decoded = false, nil
    if v and v ~= '' then ok, decoded = pcall(cjson.decode, v) end
    if v and v ~= '' and (not ok or (f == 'metadata' and type(decoded) ~= 'table')) then
      set['corrupt_' .. f] = v
      set[f] = ''
    end
  end
  local payload = get('payload')
  if not payload or payload == '' or set.payload == '' then set.payload = 'null' end
  hset(key, set)
end
