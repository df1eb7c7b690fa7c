-- Shared by every script. The tables generated from queue-core come first (scripts.rs):
-- NEXT (the state machine), VALID, TERMINAL, BAND, PNAME, EFFECT, START_DEFERRED,
-- MAX_ATTEMPTS_KEPT, LOST_WORKER_KEPT_MS, SETTLE, HOLDS_QUEUE, EXPIRE, CANCEL, PLACE, SERIES,
-- LATENCY_BOUNDS, COUNTER, LEASE_MSG. Each entry point then gets `KEY` (its declared
-- static keys by name) and `NSTATIC` (how many there are: its other keys follow in KEYS).
-- Every key a script touches is declared; none is built here but channel names, the
-- records a claim returns (with_records) and the charts' buckets (flush), all under the
-- queue's hash tag.
--
-- Every entry point starts with begin(ARGV): ARGV[1] = the queue's prefix (for channel
-- names), ARGV[2] = now in ms ('' = server TIME). Calls run one at a time, so PREFIX, NOW and PENDING
-- are safe. Each script reads and checks everything first and writes last, and its only
-- writes that could fail (lifetime counters) go through pcall: a script never stops half
-- way through a transition.
--
-- Writes that the jobs of one call share (index entries, lease removals, counters, unique
-- key releases) are collected in PENDING and sent by flush(KEY) as one command per key when the
-- entry point returns (scripts.rs wraps every body so), which is what makes a batch of
-- jobs cost little more than one.
local PREFIX, NOW, PENDING
-- When the rate limit (or a hold) next allows a start, after a claim it held back (else nil).
local RATE_NEXT
-- The lane ticket counter (`meta.tick`, queue_core::backend group rules), read once per call
-- and written back by the claim that raises it.
local TICK

-- Every entry point's `KEY` has this metatable: a key it did not declare is an error.
local UNDECLARED = { __index = function(_, name) error('script uses the undeclared key ' .. name) end }

local function begin(argv)
  RATE_NEXT = nil
  TICK = nil
  PREFIX = argv[1]
  PENDING = { zadd = {}, zrem = {}, hdel = {}, counters = {}, release = {}, wake = false,
    events = nil, log = nil, gready = {}, gload = {}, series = {}, sampled = nil }
  if argv[2] ~= '' then
    NOW = tonumber(argv[2])
  else
    local t = redis.call('TIME')
    NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
end

-- Lua's unpack (and a call's arguments) stop near 8,000 values, so a list of any length
-- goes out in calls of at most UNPACK_STEP values (a whole number of `width`-value
-- entries): no script fails half way through its writes however many jobs it handles.
local UNPACK_STEP = 4000
local function call_chunked(cmd, key, list, width)
  local n = #list
  local step = UNPACK_STEP - UNPACK_STEP % (width or 1)
  for i = 1, n, step do
    redis.call(cmd, key, unpack(list, i, math.min(i + step - 1, n)))
  end
end

local function num(v, default)
  local n = tonumber(v)
  if n == nil then return default end
  return n
end

-- redis.pcall answers a wrong-type key with an error table instead of raising.
local function failed(reply) return type(reply) == 'table' and reply.err ~= nil end

local function key_type(key) return redis.call('TYPE', key).ok end

local function wake() PENDING.wake = true end

-- Deferred writes (see PENDING above). Written out per kind: these run for every job.
local function later_zadd(key, score, member)
  local list = PENDING.zadd[key]
  if not list then
    list = {}
    PENDING.zadd[key] = list
  end
  local n = #list
  list[n + 1] = score
  list[n + 2] = member
end
-- Appends one value to the list of `key` in the deferred table `t`.
local function later_one(t, key, value)
  local list = t[key]
  if not list then
    list = {}
    t[key] = list
  end
  list[#list + 1] = value
end
local function later_zrem(key, member) later_one(PENDING.zrem, key, member) end
local function later_hdel(key, field) later_one(PENDING.hdel, key, field) end
-- The charts' buckets (queue_core::series): fields added in this call, sent by flush.
local function series_add(field, by) PENDING.series[field] = (PENDING.series[field] or 0) + (by or 1) end
-- queue_core::series::latency_bin: the first bound at or above `ms` (the last bin beyond).
local function latency_bin(ms)
  for i, b in ipairs(LATENCY_BOUNDS) do
    if ms <= b then return i - 1 end
  end
  return #LATENCY_BOUNDS
end
local function bump(counter, by)
  PENDING.counters[counter] = (PENDING.counters[counter] or 0) + (by or 1)
  series_add(counter, by)
end
-- Moves the count of grouped ready jobs of `band` (the `groups` hash, `ready:<band>`).
local function later_group_ready(band, by) PENDING.gready[band] = (PENDING.gready[band] or 0) + by end
-- Moves `group`'s count of unfinished jobs (queue_core::backend::unfinished_change; `gload`).
local function later_group_load(group, by) PENDING.gload[group] = (PENDING.gload[group] or 0) + by end
-- Releases `unique_key` if `id` still holds it.
local function later_release(unique_key, id) PENDING.release[#PENDING.release + 1] = { unique_key, id } end

-- Defined with the events below; flush sends them last.
local flush_events

local function flush(KEY)
  for key, members in pairs(PENDING.zrem) do call_chunked('ZREM', key, members) end
  for key, fields in pairs(PENDING.hdel) do call_chunked('HDEL', key, fields) end
  for key, pairs_ in pairs(PENDING.zadd) do call_chunked('ZADD', key, pairs_, 2) end
  if #PENDING.release > 0 then
    local gone = {}
    local release = PENDING.release
    for i = 1, #release, UNPACK_STEP do
      local keys = {}
      for j = i, math.min(i + UNPACK_STEP - 1, #release) do keys[#keys + 1] = release[j][1] end
      local holders = redis.call('HMGET', KEY.dedup, unpack(keys))
      for j, k in ipairs(keys) do
        if holders[j] == release[i + j - 1][2] then gone[#gone + 1] = k end
      end
    end
    if #gone > 0 then call_chunked('HDEL', KEY.dedup, gone) end
  end
  for counter, by in pairs(PENDING.counters) do
    -- A counter at its limit (or a stats key of the wrong type) must not stop a transition.
    redis.pcall('HINCRBY', KEY.stats, counter, by)
  end
  for band, by in pairs(PENDING.gready) do
    if by ~= 0 then redis.call('HINCRBY', KEY.groups, 'ready:' .. band, by) end
  end
  local load = 0
  for group, by in pairs(PENDING.gload) do
    if by ~= 0 then
      load = load + by
      if tonumber(redis.call('ZINCRBY', KEY.gload, -by, group)) >= 0 then
        redis.call('ZREM', KEY.gload, group)
      end
    end
  end
  if load ~= 0 then
    if redis.call('HINCRBY', KEY.groups, 'unfinished', load) <= 0 then
      redis.call('HDEL', KEY.groups, 'unfinished')
    end
  end
  if next(PENDING.series) or PENDING.sampled then
    -- One bucket per span (keys.rs `series`, same hash tag: built here, as with_records
    -- builds job keys), dropped SeriesSpan::expires_at after its interval.
    local args = {}
    for field, by in pairs(PENDING.series) do args[#args + 1] = { field, by } end
    for _, span in ipairs(SERIES) do
      local index = math.floor(NOW / span[2])
      local key = PREFIX .. 'series:' .. span[1] .. ':' .. index
      -- The expiry is set when a field is new (so always when the key is): most calls
      -- only add to fields the bucket has.
      local fresh = false
      for _, fb in ipairs(args) do
        if redis.pcall('HINCRBY', key, fb[1], fb[2]) == fb[2] then fresh = true end
      end
      if PENDING.sampled and redis.pcall('HSET', key, unpack(PENDING.sampled)) ~= 0 then fresh = true end
      if fresh then redis.pcall('PEXPIREAT', key, (index + 1) * span[2] + span[3]) end
    end
  end
  flush_events(KEY)
  if PENDING.wake then redis.call('ZADD', KEY.marker, 0, '0') end
  PENDING.zadd, PENDING.zrem, PENDING.hdel, PENDING.counters, PENDING.release, PENDING.wake = {}, {}, {}, {}, {}, false
  PENDING.gready, PENDING.gload, PENDING.series, PENDING.sampled = {}, {}, {}, nil
end

-- Events go out only while someone listens: subscribers keep the `subs` key alive.
local function events_on(KEY)
  if PENDING.events == nil then PENDING.events = redis.call('EXISTS', KEY.subs) == 1 end
  return PENDING.events
end

-- An event (JSON, `{` first) goes into the log (the stream `log`, its last EVENT_LOG_LEN
-- entries kept), then out to subscribers with its log id, so a subscriber that reconnects
-- resumes after the last id it saw. Sent by flush, in order, with the call's other writes.
local function send_event(KEY, msg)
  local q = PENDING.log
  if not q then
    q = {}
    PENDING.log = q
  end
  q[#q + 1] = msg
end

-- The events of this call into the log and out to subscribers. The log is trimmed exactly
-- to EVENT_LOG_LEN, and `log_gone` keeps the id of the newest event trimmed, so a
-- subscriber resuming from before it is told it missed some (queue_core EventKind::Missed).
flush_events = function(KEY)
  local q = PENDING.log
  if not q then return end
  PENDING.log = nil
  local len = redis.call('XLEN', KEY.log)
  -- Entries of the log this call pushes out, then this call's own that later ones push out.
  local old = math.min(math.max(len + #q - EVENT_LOG_LEN, 0), len)
  local own = math.max(#q - EVENT_LOG_LEN, 0)
  if old > 0 then
    local gone = redis.call('XRANGE', KEY.log, '-', '+', 'COUNT', old)
    if #gone > 0 then redis.call('SET', KEY.log_gone, gone[#gone][1]) end
  end
  for i, msg in ipairs(q) do
    local sid = redis.call('XADD', KEY.log, 'MAXLEN', EVENT_LOG_LEN, '*', 'e', msg)
    if i == own then redis.call('SET', KEY.log_gone, sid) end
    redis.call('PUBLISH', PREFIX .. 'events', '{"id":"' .. sid .. '",' .. string.sub(msg, 2))
  end
end

-- Events: ids and statuses need no escaping, so transitions are built by hand.
local function emit_transition(KEY, id, from, to)
  if not events_on(KEY) then return end
  local msg = '{"job_id":"' .. id .. '","at":' .. NOW .. ',"type":"transition","to":"' .. to .. '"'
  if from then msg = msg .. ',"from":"' .. from .. '"' end
  send_event(KEY, msg .. '}')
end

local function emit(KEY, id, kind, fields)
  if not events_on(KEY) then return end
  fields.job_id = id
  fields.at = NOW
  fields.type = kind
  send_event(KEY, cjson.encode(fields))
end

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

-- Leases live in the `leases` hash, one entry per running job:
-- token|expires|lease_ms|started|seq|cancel|claim|worker (the worker id last: it may hold
-- anything). `cancel` is '0' or '1', followed by the job's group when it has one (a group
-- holds no '|'), so the group's slot is given back however the attempt ends, even when
-- the record is damaged. A job is processing exactly when it has an entry; its hash keeps
-- the fields that outlive the attempt, and the attempt's own fields are written when it
-- ends.
local LEASE = '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$'

local function decode_lease(v)
  if not v then return nil end
  local token, expires, lease_ms, started, seq, cancel, claim, worker = string.match(v, LEASE)
  if not token then return nil end
  local group = string.sub(cancel, 2)
  if group == '' then group = nil end
  return { token = token, expires = tonumber(expires), lease_ms = tonumber(lease_ms),
    started = tonumber(started), seq = seq, cancel = string.sub(cancel, 1, 1) == '1',
    claim = claim, worker = worker, group = group }
end

local function read_lease(KEY, id) return decode_lease(redis.call('HGET', KEY.leases, id)) end

local encode_lease
local function write_lease(KEY, id, l) redis.call('HSET', KEY.leases, id, encode_lease(l)) end

local function holds(l, token) return l ~= nil and token ~= '' and l.token == token and l.expires > NOW end

local function lease_string(token, expires, lease_ms, started, seq, cancel, group, claim, worker)
  local c = '0'
  if cancel then c = '1' end
  return token .. '|' .. expires .. '|' .. lease_ms .. '|' .. started .. '|' .. seq .. '|' .. c
    .. (group or '') .. '|' .. claim .. '|' .. worker
end

encode_lease = function(l)
  return lease_string(l.token, l.expires, l.lease_ms, l.started, l.seq, l.cancel, l.group,
    l.claim, l.worker)
end

local function extend(KEY, id, l, expires)
  l.expires = expires
  write_lease(KEY, id, l)
  redis.call('ZADD', KEY.active, expires, id)
end

-- The prefix of the members of `claimed` for `worker`'s claim `claim` (keys.rs `Claimed`):
-- the worker's length first, so no worker id (which may hold anything) is a prefix of
-- another's members.
local function claimed_prefix(worker, claim) return #worker .. ':' .. worker .. '|' .. claim .. '|' end

-- A lease ended: its entries go (`l`, the lease read, names its claim's member).
local function ended_lease(KEY, id, l)
  later_hdel(KEY.leases, id)
  later_zrem(KEY.active, id)
  if l then later_zrem(KEY.claimed, claimed_prefix(l.worker, l.claim) .. id) end
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

local function band_of(priority) return BAND[priority] or 1 end

local READY_NAME = { [0] = 'ready0', [1] = 'ready1', [2] = 'ready2' }
local DELAYED_NAME = { [0] = 'delayed0', [1] = 'delayed1', [2] = 'delayed2' }
local LANES_NAME = { [0] = 'lanes0', [1] = 'lanes1', [2] = 'lanes2' }
local function ready_key(KEY, band) return KEY[READY_NAME[band] or ('ready' .. band)] end
local function delayed_key(KEY, band) return KEY[DELAYED_NAME[band] or ('delayed' .. band)] end
local function lanes_key(KEY, band) return KEY[LANES_NAME[band] or ('lanes' .. band)] end

-- Groups (queue_core::backend group rules). A group's ready jobs of a band wait in their
-- own sorted set (scored by place, like `ready<band>`); `lanes<band>` holds, by ticket,
-- the groups that have ready jobs there and admit a start; the `groups` hash keeps per
-- group `run:<g>` (running), `max:<g>` (concurrency limit), `pause:<g>`, and per band
-- `ready:<band>` (grouped ready jobs, for stats). A group's ready set is the other key a
-- script builds besides job records (keys.rs `group_ready`): it carries the queue's hash
-- tag, so it lives in the same Cluster slot as every declared key.
local function group_ready_key(band, group) return PREFIX .. 'gq:' .. band .. ':' .. group end

local function current_tick(KEY)
  if not TICK then TICK = tonumber(redis.call('HGET', KEY.meta, 'tick') or '0') or 0 end
  return TICK
end

local function group_rate_key(group) return PREFIX .. 'grate:' .. group end

-- A job's cost against the rate limits (queue_core NewJob::cost; absent: 1). A claim reads
-- it only while a rate limit applies.
local function job_cost(id)
  local c = redis.pcall('HGET', PREFIX .. 'job:' .. id, 'cost')
  return (not failed(c) and tonumber(c)) or 1
end

-- Start logs of rate limits (zsets: start ms by lease token). A start costing c > 1 is the
-- member `token#c`, and `c - 1` is added to the log's `extra` (a field of hash `h`), so
-- the costs in the window are a count plus extra: no scan of the window. Starts leave
-- the log only at a start (`log_prune`), as in the memory backend and the model: a wider
-- limit set later counts them again while they are in its window.
-- The extra cost of the starts at or before `floor` (those still logged).
local function log_expired_extra(log, floor, extra)
  local gone = 0
  if extra > 0 then
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', log, '-inf', floor)) do
      local c = tonumber(string.match(m, '#(%d+)$'))
      if c then gone = gone + c - 1 end
    end
  end
  return gone
end

-- The costs of the starts after `floor`.
local function log_used(log, floor, h, field)
  local extra = tonumber(redis.call('HGET', h, field) or '0') or 0
  return redis.call('ZCOUNT', log, '(' .. floor, '+inf') + extra - log_expired_extra(log, floor, extra)
end

-- Forgets the starts at or before `floor`; returns the costs left in the window.
local function log_prune(log, floor, h, field)
  local extra = tonumber(redis.call('HGET', h, field) or '0') or 0
  if extra > 0 then
    extra = extra - log_expired_extra(log, floor, extra)
    if extra > 0 then redis.call('HSET', h, field, extra) else redis.call('HDEL', h, field) end
  end
  redis.call('ZREMRANGEBYSCORE', log, '-inf', floor)
  return redis.call('ZCARD', log) + math.max(extra, 0)
end

-- Adds starts {token, cost}... at NOW to a start log.
local function log_add(log, starts, h, field)
  local args, extra = {}, 0
  for _, s in ipairs(starts) do
    args[#args + 1] = NOW
    if s[2] > 1 then
      args[#args + 1] = s[1] .. '#' .. s[2]
      extra = extra + s[2] - 1
    else
      args[#args + 1] = s[1]
    end
  end
  if #args > 0 then call_chunked('ZADD', log, args, 2) end
  if extra > 0 then redis.call('HINCRBY', h, field, extra) end
end

-- queue_core::RateLimit::admits: a job of `cost` fits what is left of the window, or the
-- window is empty.
local function rate_admits(max, used, cost) return used == 0 or used + cost <= max end

-- The first job of a group's highest priority with ready jobs (what it starts next).
local function group_head(group)
  for band = 0, 2 do
    local head = redis.call('ZRANGE', group_ready_key(band, group), 0, 0)
    if head[1] then return head[1] end
  end
  return nil
end

-- queue_core::backend::{group_admits, group_rate_admits}: not paused, fewer running than
-- its concurrency limit, not held, and its next job's cost fits its rate window. Returns
-- admits, running, the concurrency limit, whether a rate limit applies, when time alone
-- may let it start again (nil if not held back by time), and its weight (nil: 1).
local function group_admits(KEY, group)
  local v = redis.call('HMGET', KEY.groups, 'run:' .. group, 'max:' .. group, 'pause:' .. group,
    'rmax:' .. group, 'rper:' .. group, 'held:' .. group, 'w:' .. group)
  local running, max = num(v[1], 0), tonumber(v[2])
  local ok = not v[3] and (not max or running < max)
  local limited, again = false, nil
  local held = tonumber(v[6])
  if held and NOW < held then
    ok, again = false, held
  elseif v[6] then
    -- A hold that has passed is forgotten.
    redis.call('HDEL', KEY.groups, 'held:' .. group)
  end
  local rmax, rper = tonumber(v[4]), tonumber(v[5])
  if rmax and rper then
    limited = true
    local floor = NOW - rper
    local log = group_rate_key(group)
    local used = log_used(log, floor, KEY.groups, 'rx:' .. group)
    local head = used > 0 and group_head(group)
    if head and not rate_admits(rmax, used, job_cost(head)) then
      ok = false
      -- Its earliest start in the window leaving it may make room (looked at again then).
      local first = redis.call('ZRANGEBYSCORE', log, '(' .. floor, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
      if first[2] then again = math.max(again or 0, tonumber(first[2]) + rper) end
    end
  end
  return ok, running, max, limited, again, tonumber(v[7])
end

-- queue_core::backend::weighted_turn: a start of `group` (of weight `weight`) counts in its
-- turn; true when its lane takes a new ticket now (the turn is over).
local function weighted_turn(KEY, group, weight)
  if not weight then return true end
  local turn = num(redis.call('HGET', KEY.groups, 'turn:' .. group), 0) + 1
  if turn >= weight then
    redis.call('HDEL', KEY.groups, 'turn:' .. group)
    return true
  end
  redis.call('HSET', KEY.groups, 'turn:' .. group, turn)
  return false
end

-- One group's counts and settings, for operators: {ready, running, paused (0/1),
-- concurrency limit or false, rate max or false, rate window ms or false, held until ms or
-- false, unfinished}.
local function group_stats(KEY, group)
  local ready = 0
  for band = 0, 2 do ready = ready + redis.call('ZCARD', group_ready_key(band, group)) end
  local v = redis.call('HMGET', KEY.groups, 'run:' .. group, 'pause:' .. group, 'max:' .. group,
    'rmax:' .. group, 'rper:' .. group, 'held:' .. group, 'w:' .. group)
  local paused = 0
  if v[2] then paused = 1 end
  local held = v[6]
  if held and tonumber(held) <= NOW then held = false end
  local unfinished = -num(redis.call('ZSCORE', KEY.gload, group), 0)
  return { ready, num(v[1], 0), paused, v[3], v[4], v[5], held, unfinished, v[7] }
end

-- A group held back by time (a rate window, a hold) with jobs waiting: the claims from
-- `again` on look at it again (`gheld`).
local function note_timed(KEY, group, again)
  if again then redis.call('ZADD', KEY.gheld, again, group) end
end

-- Gives `group` a lane (at the current ticket) in each band where it has ready jobs and
-- admits a start, and takes away the others; a new lane wakes the blocked fetchers.
local function refresh_group(KEY, group)
  local admits, _, _, _, again = group_admits(KEY, group)
  local waiting = false
  for band = 0, 2 do
    local lanes = lanes_key(KEY, band)
    local has = redis.call('EXISTS', group_ready_key(band, group)) == 1
    waiting = waiting or has
    if admits and has then
      if redis.call('ZADD', lanes, 'NX', current_tick(KEY), group) == 1 then wake() end
    else
      redis.call('ZREM', lanes, group)
    end
  end
  if not admits and waiting then note_timed(KEY, group, again) end
end

-- Groups held back by time whose time has come get their lanes (at a claim).
local function wake_timed_groups(KEY)
  local due = redis.call('ZRANGEBYSCORE', KEY.gheld, '-inf', NOW)
  if #due == 0 then return end
  redis.call('ZREMRANGEBYSCORE', KEY.gheld, '-inf', NOW)
  for _, group in ipairs(due) do refresh_group(KEY, group) end
end

-- Puts a ready job of `group` at `seq` in its band, opening the group's lane there if it
-- admits a start.
local function push_group_ready(KEY, band, group, seq, id)
  redis.call('ZADD', group_ready_key(band, group), seq, id)
  later_group_ready(band, 1)
  local admits, _, _, limited, again = group_admits(KEY, group)
  if limited then
    -- Its next job may have changed, and with it whether its cost fits: every band follows.
    refresh_group(KEY, group)
  elseif admits then
    if redis.call('ZADD', lanes_key(KEY, band), 'NX', current_tick(KEY), group) == 1 then wake() end
  else
    note_timed(KEY, group, again)
  end
end

-- Takes a queued job of `group` out of its band's ready set (a cancel); closes the lane
-- when it was the last. Returns true when it was there.
local function remove_group_ready(KEY, band, group, id)
  local q = group_ready_key(band, group)
  if redis.call('ZREM', q, id) == 0 then return false end
  later_group_ready(band, -1)
  if redis.call('HEXISTS', KEY.groups, 'rmax:' .. group) == 1 then
    -- Its next job may have changed, and with it whether its cost fits.
    refresh_group(KEY, group)
  elseif redis.call('EXISTS', q) == 0 then
    redis.call('ZREM', lanes_key(KEY, band), group)
  end
  return true
end

-- A running job of `group` stopped: its slot is free again. Its lanes change only when
-- this slot takes it back under its limit (else it admitted starts before, or is paused).
local function release_group_slot(KEY, group)
  if not group then return end
  local field = 'run:' .. group
  local admitted = group_admits(KEY, group)
  if redis.call('HINCRBY', KEY.groups, field, -1) <= 0 then redis.call('HDEL', KEY.groups, field) end
  if not admitted then refresh_group(KEY, group) end
end

-- Status indexes, together listing every retained job: one per finished status, scored by
-- when the job finished (its retention clock: the sweep reads these), and `st_queued`,
-- scored by creation, for every job not finished, queued or running (a running job is told
-- apart by its lease: `leases`, and `active` by lease expiry), so a claim moves no index
-- entry. Names are kept, not built per job.
local STATUS_NAME = {}
local function status_key(KEY, status)
  local name = STATUS_NAME[status]
  if not name then
    name = 'st_' .. status
    STATUS_NAME[status] = name
  end
  return KEY[name]
end

-- Whether some status index lists `id` (entries of a deleted job may remain).
local function listed(KEY, id)
  if redis.call('ZSCORE', KEY.st_queued, id) then return true end
  for s, _ in pairs(TERMINAL) do
    if redis.call('ZSCORE', status_key(KEY, s), id) then return true end
  end
  return false
end

-- Puts a job among the delayed ones (those of a group in `gdelayed`) and lowers the due
-- hint if it is now the earliest.
local function schedule(KEY, band, due, id, group)
  if group then
    redis.call('ZADD', KEY.gdelayed, due, id)
  else
    redis.call('ZADD', delayed_key(KEY, band), due, id)
  end
  local hint = tonumber(redis.call('GET', KEY.due))
  if not hint or due < hint then redis.call('SET', KEY.due, due) end
end

local function job_key(id) return PREFIX .. 'job:' .. id end

-- How many jobs wait: scheduled (delayed, with the delayed jobs of groups) and a function
-- of the band for the ready ones (ready jobs of groups wait in their groups' sets, counted
-- per band in `groups`).
local function depth(KEY)
  local function card(key) return redis.call('ZCARD', key) end
  local scheduled = card(KEY.delayed0) + card(KEY.delayed1) + card(KEY.delayed2) + card(KEY.gdelayed)
  local grouped = redis.call('HMGET', KEY.groups, 'ready:0', 'ready:1', 'ready:2')
  return scheduled, function(band) return card(ready_key(KEY, band)) + num(grouped[band + 1], 0) end
end

-- A heartbeat samples the depth into the charts' current buckets (queue_core::series
-- GAUGES), written by flush.
local function sample_depth(KEY)
  local scheduled, ready = depth(KEY)
  local s = { 'g_scheduled', scheduled, 'g_running', redis.call('ZCARD', KEY.active) }
  for band = 0, 2 do
    s[#s + 1] = 'g_' .. PNAME[band]
    s[#s + 1] = ready(band)
  end
  PENDING.sampled = s
end
-- A parent's children by creation (keys.rs `kids`).
local function kids_key(id) return PREFIX .. 'kids:' .. id end
-- Defined below (they place the parent, which may be a child too).
local child_ended, child_reopened

-- Webhooks: `hooks` holds per webhook its filter `<statuses>|<task>|<group>` (see
-- queue_core::Webhook::filter), read once per call and only when a job finishes.
local function hook_filters(KEY)
  if PENDING.hooks == nil then
    PENDING.hooks = {}
    local all = redis.call('HGETALL', KEY.hooks)
    for i = 1, #all, 2 do
      local events, task, group = string.match(all[i + 1], '^([^|]*)|([^|]*)|(.*)$')
      if events then
        PENDING.hooks[#PENDING.hooks + 1] = { name = all[i], events = ',' .. events .. ',',
          task = task, group = group }
      end
    end
  end
  return PENDING.hooks
end

-- The webhook a delivery id names: `<job>.<status>.<ms>.<webhook>`
-- (queue_core::Delivery::id_of; a job id, a status and a time hold no dot).
local function delivery_hook(did) return string.match(did, '^[^.]*%.[^.]*%.[^.]*%.(.*)$') or '' end

-- Removes a delivery from the outbox and every index naming it.
local function forget_delivery(KEY, did)
  redis.call('HDEL', KEY.dlv, did)
  redis.call('ZREM', KEY.dq, did)
  redis.call('ZREM', KEY.parked, did)
  redis.call('ZREM', KEY.dlvw, delivery_hook(did) .. '|' .. did)
end

-- The outbox entries of job `id` finishing `to`: one per webhook that wants it, in the
-- same step as the transition (Webhook::wants, the same three comparisons).
local function leave_deliveries(KEY, id, to, rec)
  for _, h in ipairs(hook_filters(KEY)) do
    if string.find(h.events, ',' .. to .. ',', 1, true)
      and (h.task == '' or h.task == rec.task)
      and (h.group == '' or h.group == rec.group) then
      local did = id .. '.' .. to .. '.' .. NOW .. '.' .. h.name
      local d = { id = did, webhook = h.name, job_id = id, event = to, at = NOW, task = rec.task,
        attempts = 0, parked = false }
      if rec.group then d.group = rec.group end
      if rec.unique_key then d.unique_key = rec.unique_key end
      redis.call('HSET', KEY.dlv, did, cjson.encode(d))
      redis.call('ZADD', KEY.dq, NOW, did)
      redis.call('ZADD', KEY.dlvw, 0, h.name .. '|' .. did)
    end
  end
end

-- A job's place after `event` (queue_core::rules::placement) and its counters, then what
-- that does to its parent (a flow) and which webhook deliveries it leaves. `rec` = facts();
-- `ctx.run_at` = the due time of a retry. A queued parent with unfinished children waits in
-- `waiting` instead of being ready.
local function place(KEY, id, event, to, rec, ctx, seq)
  local where = PLACE[event]
  if where ~= 'finished' and where ~= 'leased' and rec.waiting > 0 then
    later_zadd(KEY.waiting, rec.created, id)
    later_zadd(KEY.st_queued, rec.created, id)
  elseif where == 'finished' then
    leave_deliveries(KEY, id, to, rec)
    later_zrem(KEY.st_queued, id)
    -- A finished job is listed by when it finished, which is also its retention clock
    -- (queue_core::backend::listed_at): the sweep reads these sets, no other index.
    later_zadd(status_key(KEY, to), NOW, id)
    if rec.unique_key then later_release(rec.unique_key, id) end
  elseif where == 'delayed' then
    schedule(KEY, rec.band, ctx.run_at, id, rec.group)
    later_zadd(KEY.st_queued, rec.created, id)
    wake()
  elseif where == 'ready_in_place' or where == 'ready_at_back' then
    if where == 'ready_at_back' then seq = redis.call('INCR', KEY.seq) end
    if rec.group then
      push_group_ready(KEY, rec.band, rec.group, seq, id)
    else
      later_zadd(ready_key(KEY, rec.band), seq, id)
    end
    later_zadd(KEY.st_queued, rec.created, id)
    wake()
  end
  if COUNTER[event] then bump(COUNTER[event]) end
  if rec.group and UNFINISHED_CHANGE[event] then later_group_load(rec.group, UNFINISHED_CHANGE[event]) end
  if rec.parent then
    if where == 'finished' then
      child_ended(KEY, rec.parent, id, to, rec.policy, rec.created)
    elseif event == 'manual_retry' then
      child_reopened(KEY, rec.parent, rec.status, rec.created)
    end
  end
end

-- The fields of a record that decide its transitions, read with pcall: nil when the key
-- is not a job hash; `exists` false when there is no such key.
-- `present`: which of the clearable() fields the hash holds.
local function facts(key)
  local fields = clearable()
  local v = redis.pcall('HMGET', key, 'retry_count', 'max_retries', 'created_at', 'unique_key',
    'priority', 'status', 'group', 'parent', 'policy', 'kids_waiting', 'started_at', 'task',
    unpack(fields))
  if failed(v) then return nil end
  local uk = v[4]
  if uk == '' then uk = nil end
  local group = v[7]
  if group == '' then group = nil end
  local parent = v[8]
  if parent == '' then parent = nil end
  local present = {}
  for i, f in ipairs(fields) do
    if v[12 + i] then present[f] = true end
  end
  return { exists = (v[1] or v[2] or v[3] or v[4] or v[5] or v[6]) and true or false,
    retries = num(v[1], 0), max_retries = num(v[2], 0), created = num(v[3], NOW),
    unique_key = uk, band = band_of(v[5]), status = v[6], group = group, present = present,
    parent = parent, policy = CHILD_POLICY[v[9] or ''] or 'fail_parent', waiting = num(v[10], 0),
    started = (v[11] or '') ~= '', task = v[12] or '' }
end

-- Ends a running job's attempt with `event`: the record (what `start` wrote, then what the
-- event writes), its place, the lease gone, the event published.
local function end_attempt(KEY, id, key, lease, rec, event, ctx)
  local to = NEXT['processing'][event]
  local set = {}
  materialize_start(set, lease)
  ctx.now = NOW
  ctx.retry_count = rec.retries
  ctx.key = key
  series_add('r' .. latency_bin(NOW - lease.started))
  apply_effect(event, set, ctx)
  set.status = to
  if lease.cancel then set.cancel_requested = '1' end
  if ctx.ended then set.ended = ctx.ended .. '|' .. to end
  release_group_slot(KEY, lease.group)
  place(KEY, id, event, to, rec, ctx, lease.seq)
  ended_lease(KEY, id, lease)
  hset(key, set, rec.present)
  emit_transition(KEY, id, 'processing', to)
  return to
end

-- A manual retry of `id` (its record `key`, `rec` = facts, `status` its finished status):
-- `{'ok'}` | `{'dup', holder}` (another job holds its unique key). `band` changes the
-- priority (nil keeps it). Checked by the caller: the state machine allows it.
local function manual_retry(KEY, id, key, rec, status, band)
  if rec.unique_key then
    local holder = redis.call('HGET', KEY.dedup, rec.unique_key)
    if holder and holder ~= id then return { 'dup', holder } end
  end
  local set = {}
  if band then
    rec.band = band
    set.priority = PNAME[band]
  end
  apply_effect('manual_retry', set, { now = NOW, retry_count = rec.retries })
  set.status = 'queued'
  redis.call('ZREM', status_key(KEY, status), id)
  place(KEY, id, 'manual_retry', 'queued', rec, {}, nil)
  if rec.unique_key then redis.call('HSET', KEY.dedup, rec.unique_key, id) end
  hset(key, set, rec.present)
  emit_transition(KEY, id, status, 'queued')
  return { 'ok' }
end

-- Takes a queued job out of the ready, delayed and waiting sets.
local function unqueue(KEY, id, rec)
  if rec.group then
    remove_group_ready(KEY, rec.band, rec.group, id)
    redis.call('ZREM', KEY.gdelayed, id)
  else
    redis.call('ZREM', ready_key(KEY, rec.band), id)
    redis.call('ZREM', delayed_key(KEY, rec.band), id)
  end
  if rec.waiting > 0 then redis.call('ZREM', KEY.waiting, id) end
end

-- The status a job is in: its record's, or processing while it holds a lease.
local function current_status(KEY, id, rec)
  if redis.call('HEXISTS', KEY.leases, id) == 1 then return 'processing' end
  return rec.status
end

-- `parent` gets `n` more unfinished children: a queued parent that waited on none leaves
-- the ready (or delayed) jobs and waits.
local function hold(KEY, parent, pkey, prec, n)
  local waiting = redis.call('HINCRBY', pkey, 'kids_waiting', n)
  if waiting == n and current_status(KEY, parent, prec) == 'queued' then
    prec.waiting = 0
    unqueue(KEY, parent, prec)
    redis.call('ZADD', KEY.waiting, prec.created, parent)
  end
end

-- Child `child` of `parent` ended `to` under `policy`: the parent's counts, then what
-- queue_core::backend::on_child_ended decides (table CHILD_ENDED): release it to the back of
-- its priority (or its due time), or fail it (`child_failed`, placed like any ending).
child_ended = function(KEY, parent, child, to, policy, child_created)
  local pkey = job_key(parent)
  local prec = facts(pkey)
  -- Gone (retention removed it) or not a job hash: nothing to count.
  if not prec or not prec.exists then return end
  -- A job created later under the parent's id is not the parent (queue_core is_parent_of).
  if prec.created > child_created then return end
  local waiting = redis.call('HINCRBY', pkey, 'kids_waiting', -1)
  if waiting < 0 then
    waiting = 0
    redis.call('HSET', pkey, 'kids_waiting', 0)
  end
  redis.call('HINCRBY', pkey, 'kids_' .. to, 1)
  local action = CHILD_ENDED[policy][to][current_status(KEY, parent, prec) or ''][waiting == 0]
  if action == 'release' then
    redis.call('ZREM', KEY.waiting, parent)
    local due = tonumber(redis.call('HGET', pkey, 'run_at') or '')
    if due and due > NOW then
      schedule(KEY, prec.band, due, parent, prec.group)
    else
      local seq = redis.call('INCR', KEY.seq)
      if prec.group then
        push_group_ready(KEY, prec.band, prec.group, seq, parent)
      else
        later_zadd(ready_key(KEY, prec.band), seq, parent)
      end
    end
    wake()
  elseif action == 'fail' then
    redis.call('ZREM', KEY.waiting, parent)
    prec.waiting = 0
    local set = {}
    apply_effect('child_failed', set, { now = NOW, retry_count = prec.retries,
      error_message = CHILD_MSG[1] .. child .. CHILD_MSG[2] .. to })
    set.status = 'failed'
    place(KEY, parent, 'child_failed', 'failed', prec, {}, nil)
    hset(pkey, set, prec.present)
    emit_transition(KEY, parent, 'queued', 'failed')
  end
end

-- A child of `parent` that had ended `was` is queued again (a manual retry): the parent's
-- counts, then what queue_core::backend::on_child_reopened decides (table REOPEN): it waits
-- again (leaving the ready jobs), or, failed by a child without running, it is retried.
child_reopened = function(KEY, parent, was, child_created)
  local pkey = job_key(parent)
  local prec = facts(pkey)
  if not prec or not prec.exists or prec.created > child_created then return end
  if redis.call('HINCRBY', pkey, 'kids_' .. was, -1) < 0 then redis.call('HSET', pkey, 'kids_' .. was, 0) end
  local status = current_status(KEY, parent, prec) or ''
  local action = REOPEN[status] and REOPEN[status][prec.started] or 'count'
  if action == 'hold' then
    hold(KEY, parent, pkey, prec, 1)
  else
    local waiting = redis.call('HINCRBY', pkey, 'kids_waiting', 1)
    if action == 'requeue' then
      prec.waiting = waiting
      manual_retry(KEY, parent, pkey, prec, status, nil)
    end
  end
end

-- One job of an enqueue (`enqueue.lua`, `flow.lua`): ARGV from `b` holds id, task, payload,
-- unique_key, band, delay_ms, max_retries, timeout_ms, metadata, job key index, history key
-- index, '1' when the caller chose the id, group ('' without), cost ('' for 1).
-- Returns nil when it may be created, else its answer: {'exists', id} (the id is taken:
-- that record is kept) | {'stale', id} (entries of a deleted job with this id remain) |
-- {'dup', holder} (the unique key's holder) | {'badkey', id} (the unique key's history key
-- holds something else).
local function check_new(KEY, KEYS, ARGV, b)
  local id, uk = ARGV[b], ARGV[b + 3]
  local key = KEYS[tonumber(ARGV[b + 9])]
  if redis.call('EXISTS', key) == 1 then return { 'exists', id } end
  if ARGV[b + 11] == '1' and (listed(KEY, id) or redis.call('HEXISTS', KEY.leases, id) == 1) then
    return { 'stale', id }
  end
  if uk ~= '' then
    local holder = redis.call('HGET', KEY.dedup, uk)
    if holder then return { 'dup', holder } end
    local t = key_type(KEYS[tonumber(ARGV[b + 10])])
    if t ~= 'none' and t ~= 'zset' then return { 'badkey', id } end
  end
  return nil
end

-- Creates the job of ARGV from `b` (checked by check_new). `parent`: its parent's id (nil
-- without), `policy`: what its failure does to the parent ('' = fail_parent), `kids`: how
-- many children it waits on (it waits in `waiting`, not ready). Returns {band, id, group}
-- when it is ready now (the caller gives the ready jobs their places), else nil.
local function create_new(KEY, KEYS, ARGV, b, parent, policy, kids)
  local id, task, payload, uk = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local band, delay = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])
  local key = KEYS[tonumber(ARGV[b + 9])]
  local group = ARGV[b + 12]
  if group == '' then group = nil end
  -- The HSET arguments are built directly (this runs for every job). `progress` and
  -- `retry_count` start absent: an absent one reads as 0 (codec.rs, facts()).
  local fields = { 'task', task, 'payload', payload, 'status', 'queued', 'priority', PNAME[band],
    'max_retries', ARGV[b + 6], 'created_at', NOW }
  local n = 12
  if uk ~= '' then fields[n + 1], fields[n + 2], n = 'unique_key', uk, n + 2 end
  if ARGV[b + 7] ~= '' then fields[n + 1], fields[n + 2], n = 'timeout_ms', ARGV[b + 7], n + 2 end
  if ARGV[b + 8] ~= '' then fields[n + 1], fields[n + 2], n = 'metadata', ARGV[b + 8], n + 2 end
  if ARGV[b + 13] ~= '' then fields[n + 1], fields[n + 2], n = 'cost', ARGV[b + 13], n + 2 end
  if group then
    fields[n + 1], fields[n + 2], n = 'group', group, n + 2
    later_group_load(group, UNFINISHED_CHANGE.new)
  end
  if parent then
    fields[n + 1], fields[n + 2], n = 'parent', parent, n + 2
    if policy ~= '' then fields[n + 1], fields[n + 2], n = 'policy', policy, n + 2 end
    redis.call('ZADD', kids_key(parent), NOW, id)
  end
  local ready = nil
  if delay > 0 then fields[n + 1], fields[n + 2], n = 'run_at', NOW + delay, n + 2 end
  if kids and kids > 0 then
    fields[n + 1], fields[n + 2], n = 'kids_waiting', kids, n + 2
    later_zadd(KEY.waiting, NOW, id)
  elseif delay > 0 then
    schedule(KEY, band, NOW + delay, id, group)
  else
    ready = { band, id, group }
  end
  redis.call('HSET', key, unpack(fields))
  later_zadd(KEY.st_queued, NOW, id)
  if uk ~= '' then
    redis.call('ZADD', KEYS[tonumber(ARGV[b + 10])], NOW, id)
    redis.call('HSET', KEY.dedup, uk, id)
  end
  emit_transition(KEY, id, nil, 'queued')
  return ready
end

-- Gives the ready jobs of one enqueue their places (one INCRBY, in order) and counts them.
local function place_new(KEY, ready, created)
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
end

-- Creates `count` jobs each on its own (a refused one does not stop the others), their
-- 14 values of check_new from ARGV[first]; the ready ones take their places in order.
-- Returns {code, id} per job: ok, or the answer of check_new.
local function create_each(KEY, KEYS, ARGV, first, count)
  local out = {}
  local ready = {}
  local created = 0
  for i = 0, count - 1 do
    local b = first + i * 14
    local refused = check_new(KEY, KEYS, ARGV, b)
    if refused then
      out[#out + 1] = refused
    else
      ready[#ready + 1] = create_new(KEY, KEYS, ARGV, b, nil, '', 0)
      created = created + 1
      out[#out + 1] = { 'ok', ARGV[b] }
    end
  end
  place_new(KEY, ready, created)
  return out
end

-- Deletes a finished job's record and every index entry naming it (retention, and
-- queue_core::JobStore::delete). `history` is its unique key's history key (nil: none).
local function delete_job(KEY, id, key, parent, uk, history)
  redis.call('DEL', key)
  -- A flow's index entries: its own children's list (of any size: freed in the
  -- background), its place in its parent's.
  redis.call('UNLINK', kids_key(id))
  if parent and parent ~= '' then redis.call('ZREM', kids_key(parent), id) end
  -- `jobs` is written no more (before 0.2 it listed every job): emptied as jobs go.
  redis.call('ZREM', KEY.jobs, id)
  for s, _ in pairs(VALID) do
    if s ~= 'processing' then redis.call('ZREM', status_key(KEY, s), id) end
  end
  if uk ~= '' then
    if history and key_type(history) == 'zset' then redis.call('ZREM', history, id) end
    if redis.call('HGET', KEY.dedup, uk) == id then redis.call('HDEL', KEY.dedup, uk) end
  end
end

-- Cancels job `id` (record `key`) as queue_core::rules::on_cancel decides: {'cancelled'} |
-- {'requested'} | {'missing'} | {'invalid', status}. A cancelled parent joins `cascade`:
-- its unfinished children are cancelled in the steps that follow (theirs as well; running
-- ones are asked to stop).
local function cancel_job(KEY, id, key)
  if key_type(key) ~= 'hash' then return { 'missing' } end
  local rec = facts(key)
  local l = read_lease(KEY, id)
  local status = rec.status
  if l then status = 'processing' end
  local action = CANCEL[status or ''] and CANCEL[status][l ~= nil and l.cancel]
  if action == 'cancel' then
    unqueue(KEY, id, rec)
    redis.call('ZREM', KEY.st_queued, id)
    rec.waiting = 0
    local set = {}
    apply_effect('cancel', set, { now = NOW, retry_count = rec.retries })
    set.status = 'cancelled'
    place(KEY, id, 'cancel', 'cancelled', rec, {}, nil)
    hset(key, set, rec.present)
    emit_transition(KEY, id, 'queued', 'cancelled')
    -- Its unfinished descendants are cancelled by the cascade's steps (cascade_step).
    if redis.call('EXISTS', kids_key(id)) == 1 then redis.call('ZADD', KEY.cascade, 'NX', NOW, id) end
    return { 'cancelled' }
  elseif action == 'request' then
    l.cancel = true
    write_lease(KEY, id, l)
    redis.call('PUBLISH', PREFIX .. 'cancel', id)
    emit(KEY, id, 'cancel_requested', {})
    return { 'requested' }
  elseif action == 'already_requested' then
    return { 'requested' }
  end
  return { 'invalid', status or '' }
end

-- The rank of the first member of the zset `key` after (`ms`, `id`) in its order (score,
-- then member): a binary search of O(log n) single-member reads, so a walk through a
-- family of any size resumes from its cursor at bounded cost, even when the member at the
-- cursor is gone.
local function rank_after(key, ms, id)
  local lo, hi = 0, redis.call('ZCARD', key)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local e = redis.call('ZRANGE', key, mid, mid, 'WITHSCORES')
    local score = tonumber(e[2])
    if score < ms or (score == ms and e[1] <= id) then lo = mid + 1 else hi = mid end
  end
  return lo
end

-- One step of the cancels' cascades (queue_core::backend::CANCEL_STEP): visits up to
-- CANCEL_STEP children of the jobs in `cascade`, oldest first, each from where its walk
-- stands (`cascade_at`): queued ones are cancelled (their own descendants join the
-- cascade), running ones asked to stop. Returns 1 while a cascade is left, else 0.
local function cascade_step(KEY)
  local budget = CANCEL_STEP
  while budget > 0 do
    local head = redis.call('ZRANGE', KEY.cascade, 0, 0)[1]
    if not head then break end
    local kids = kids_key(head)
    local start = 0
    local at = redis.call('HGET', KEY.cascade_at, head)
    if at then
      local ms, last = string.match(at, '^([^|]*)|(.*)$')
      start = rank_after(kids, tonumber(ms) or 0, last or '')
    end
    local want = budget
    local batch = redis.call('ZRANGE', kids, start, start + want - 1, 'WITHSCORES')
    local n = #batch / 2
    budget = budget - n
    for i = 1, #batch, 2 do cancel_job(KEY, batch[i], job_key(batch[i])) end
    if n < want then
      redis.call('ZREM', KEY.cascade, head)
      redis.call('HDEL', KEY.cascade_at, head)
    else
      redis.call('HSET', KEY.cascade_at, head, batch[#batch] .. '|' .. batch[#batch - 1])
    end
  end
  return redis.call('EXISTS', KEY.cascade)
end

-- Whether a cascade is under way for an ancestor of `id` (a parent that is still its
-- parent, queue_core::backend::is_parent_of, up to MAX_FLOW_DEPTH levels).
local function doomed(KEY, id)
  local child = id
  for _ = 1, MAX_FLOW_DEPTH do
    local v = redis.pcall('HMGET', job_key(child), 'parent', 'created_at')
    if failed(v) or not v[1] or v[1] == '' then return false end
    local parent = v[1]
    local created = redis.pcall('HGET', job_key(parent), 'created_at')
    if failed(created) or not created or num(created, 0) > num(v[2], 0) then return false end
    if redis.call('ZSCORE', KEY.cascade, parent) then return true end
    child = parent
  end
  return false
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

-- Due delayed jobs join the back of their priority, in order of due time, then id. `due`
-- holds a lower bound of the earliest due time ('none': no delayed job), so a claim looks
-- at the delayed sets only when one may be due; a missing hint is rebuilt.
local function promote(KEY)
  local hint = redis.call('GET', KEY.due)
  if hint == 'none' or (tonumber(hint) and tonumber(hint) > NOW) then return end
  local first = nil
  for band = 0, 2 do
    local due = redis.call('ZRANGEBYSCORE', delayed_key(KEY, band), '-inf', NOW, 'LIMIT', 0, 1000)
    for _, id in ipairs(due) do
      redis.call('ZREM', delayed_key(KEY, band), id)
      redis.call('ZADD', ready_key(KEY, band), redis.call('INCR', KEY.seq), id)
    end
    local head = redis.call('ZRANGE', delayed_key(KEY, band), 0, 0, 'WITHSCORES')
    if #head > 0 and (not first or tonumber(head[2]) < first) then first = tonumber(head[2]) end
  end
  -- Jobs of groups, in the same order, each to its group's ready set.
  local due = redis.call('ZRANGEBYSCORE', KEY.gdelayed, '-inf', NOW, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', KEY.gdelayed, id)
    local v = redis.pcall('HMGET', PREFIX .. 'job:' .. id, 'group', 'priority')
    if not failed(v) and v[1] then
      push_group_ready(KEY, band_of(v[2]), v[1], redis.call('INCR', KEY.seq), id)
    else
      -- Damaged or gone: among the ready jobs without a group, where the claim fails it.
      redis.call('ZADD', ready_key(KEY, 1), redis.call('INCR', KEY.seq), id)
    end
  end
  local head = redis.call('ZRANGE', KEY.gdelayed, 0, 0, 'WITHSCORES')
  if #head > 0 and (not first or tonumber(head[2]) < first) then first = tonumber(head[2]) end
  redis.call('SET', KEY.due, first or 'none')
end

local function next_due(KEY)
  local hint = redis.call('GET', KEY.due)
  if hint == 'none' or not hint then return '' end
  return hint
end

-- The record of each claimed job goes back with its lease (the worker needs it to run the
-- job: no second round trip). Claimed ids are known only here, so this is the one place a
-- script builds a key: `PREFIX .. 'job:' .. id` (keys.rs `job`), the queue's hash tag and so the
-- same Cluster slot as every declared key. A key that is not a hash answers 'wrongtype'.
-- A fresh claim (not a replay) adds each job's wait since it was due (its creation or its
-- run_at, the later: queue_core::series::latency_field) to the charts.
local function with_records(claimed, fresh)
  for _, c in ipairs(claimed) do
    local fields = redis.pcall('HGETALL', PREFIX .. 'job:' .. c[1])
    if failed(fields) then
      fields = 'wrongtype'
    elseif fresh then
      local created, run_at = 0, 0
      for i = 1, #fields, 2 do
        if fields[i] == 'created_at' then created = tonumber(fields[i + 1]) or 0
        elseif fields[i] == 'run_at' then run_at = tonumber(fields[i + 1]) or 0 end
      end
      series_add('w' .. latency_bin(NOW - math.max(created, run_at)))
    end
    c[6] = fields
  end
  return claimed
end

-- Leases up to `max` ready jobs for `worker`: a list of {id, token, started, expires, cancel,
-- record fields}.
-- Claim ids of one worker increase; one at or below the last seen is a request sent again,
-- answered with the leases it took that are still held, oldest first, at most `max`
-- (none: it claims as new).
-- `chain` re-arms the wake-up marker when work is left.
local function claim(KEY, worker, claim_id, token_base, lease_ms, max, chain)
  local id_num = tonumber(claim_id)
  local last = tonumber(redis.call('HGET', KEY.claims, worker) or '0') or 0
  local prefix = claimed_prefix(worker, claim_id)
  if id_num <= last then
    -- A replay reads only its own claim's leases (at most MAX_CLAIM members).
    local again = {}
    local mine = redis.call('ZRANGEBYLEX', KEY.claimed, '[' .. prefix, '(' .. prefix .. '\255')
    for _, m in ipairs(mine) do
      local id = string.sub(m, #prefix + 1)
      local l = read_lease(KEY, id)
      if l and l.claim == claim_id and l.worker == worker and l.expires > NOW then
        local cancel = 0
        if l.cancel then cancel = 1 end
        again[#again + 1] = { id, l.token, l.started, l.expires, cancel }
      end
    end
    if #again > 0 then
      -- Oldest first (start, then id), at most what the request asks for.
      table.sort(again, function(a, b)
        if a[3] ~= b[3] then return a[3] < b[3] end
        return a[1] < b[1]
      end)
      while #again > max do table.remove(again) end
      return with_records(again)
    end
  else
    redis.call('HSET', KEY.claims, worker, claim_id)
  end
  promote(KEY)
  wake_timed_groups(KEY)
  -- A paused queue starts nothing (a replay above still answers what was taken before).
  local meta = redis.call('HMGET', KEY.meta, 'paused', 'rate_max', 'rate_per_ms', 'held_until')
  if meta[1] then return with_records({}) end
  -- Held after a handler hit a limit outside the queue: nothing starts until then.
  local held = tonumber(meta[4])
  if held and NOW < held then
    RATE_NEXT = held
    return with_records({})
  end
  -- Rate limited: each start's cost must fit what is left of the window that ends now
  -- (starts at or before NOW - window no longer count; queue_core::RateLimit::admits).
  local want = max
  local rate_max, rate_per = tonumber(meta[2]), tonumber(meta[3])
  local limited = rate_max and rate_per
  local used = 0
  local function stop_at_limit()
    local oldest = redis.call('ZRANGE', KEY.rate, 0, 0, 'WITHSCORES')
    if oldest[2] then RATE_NEXT = tonumber(oldest[2]) + rate_per end
  end
  if limited then
    used = log_prune(KEY.rate, NOW - rate_per, KEY.meta, 'rate_extra')
    local room = rate_max - used
    if room < max then max = math.max(room, 0) end
    if max == 0 then
      stop_at_limit()
      return with_records({})
    end
  end
  -- Whether the queue's limit lets job `id` start now (its cost counted if so).
  local blocked = false
  local costs = {}
  local function fits(id)
    if not limited then return true end
    local c = job_cost(id)
    if not rate_admits(rate_max, used, c) then
      blocked = true
      stop_at_limit()
      return false
    end
    used = used + c
    costs[#costs + 1] = c
    return true
  end
  local out, leases, active, claimed = {}, {}, {}, {}
  local expires = NOW + lease_ms
  -- While a cancel's cascade is under way, a job it is about to reach is cancelled here
  -- instead of started (queue_core::backend::CANCEL_STEP).
  local cascading = redis.call('EXISTS', KEY.cascade) == 1
  -- Leases the popped job `id` (false: a cascade's, cancelled instead).
  local function take(id, seq, group)
    if cascading and doomed(KEY, id) then
      release_group_slot(KEY, group)
      cancel_job(KEY, id, job_key(id))
      return false
    end
    local token = token_base .. ':' .. (#out + 1)
    leases[#leases + 1] = id
    leases[#leases + 1] = lease_string(token, expires, lease_ms, NOW, seq, false, group,
      claim_id, worker)
    active[#active + 1] = expires
    active[#active + 1] = id
    claimed[#claimed + 1] = 0
    claimed[#claimed + 1] = prefix .. id
    emit_transition(KEY, id, 'queued', 'processing')
    out[#out + 1] = { id, token, NOW, expires, 0 }
    return true
  end
  -- queue_core::backend group rules: per band, the lane with the lowest ticket starts its
  -- first job and takes the next ticket; the jobs without a group win a tie.
  local tickets = nil
  for band = 0, 2 do
    if #out >= max or blocked then break end
    local ready, lanes = ready_key(KEY, band), lanes_key(KEY, band)
    if redis.call('EXISTS', lanes) == 0 then
      -- No group has a lane here: today's pop, in one call (one by one under a rate
      -- limit: each cost must fit).
      local popped
      if limited then
        popped = {}
        while #out + #popped / 2 < max do
          local head = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
          if #head == 0 or not fits(head[1]) then break end
          redis.call('ZREM', ready, head[1])
          popped[#popped + 1] = head[1]
          popped[#popped + 1] = head[2]
        end
      else
        popped = redis.call('ZPOPMIN', ready, max - #out)
      end
      if #popped > 0 then
        TICK = current_tick(KEY) + #popped / 2
        tickets = tickets or {}
        tickets[#tickets + 1] = 'ut' .. band
        tickets[#tickets + 1] = TICK
        for j = 1, #popped, 2 do take(popped[j], popped[j + 1], nil) end
      end
    else
      local waiting = redis.call('ZCARD', ready)
      local ut = tonumber(redis.call('HGET', KEY.meta, 'ut' .. band) or '0') or 0
      local served_ungrouped = false
      while #out < max and not blocked do
        -- The first two lanes: with one lane alone (and no job without a group waiting),
        -- every start of this claim goes to it, so they are taken in one call.
        local head = redis.call('ZRANGE', lanes, 0, 1, 'WITHSCORES')
        if #head == 0 and waiting == 0 then break end
        current_tick(KEY)
        if waiting > 0 and (#head == 0 or ut <= tonumber(head[2])) then
          local first = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
          if not fits(first[1]) then break end
          redis.call('ZREM', ready, first[1])
          waiting = waiting - 1
          TICK = TICK + 1
          ut = TICK
          served_ungrouped = true
          take(first[1], first[2], nil)
        else
          local group = head[1]
          local q = group_ready_key(band, group)
          local _, running, limit, group_limited, _, weight = group_admits(KEY, group)
          local popped
          if limited or group_limited or weight then
            -- One at a time: each cost must fit, each start counts in a weighted turn.
            local first = redis.call('ZRANGE', q, 0, 0, 'WITHSCORES')
            if first[1] and not fits(first[1]) then break end
            if first[1] then redis.call('ZREM', q, first[1]) end
            popped = first
          else
            local n = 1
            if #head == 2 and waiting == 0 then
              n = max - #out
              if limit then n = math.min(n, limit - running) end
            end
            popped = redis.call('ZPOPMIN', q, math.max(n, 1))
          end
          local took = #popped / 2
          if took == 0 then
            -- A lane left without jobs (it cannot be, but must not stop the claim).
            redis.call('ZREM', lanes, group)
          else
            TICK = TICK + took
            redis.call('HINCRBY', KEY.groups, 'run:' .. group, took)
            later_group_ready(band, -took)
            local leased, spared = 0, false
            for j = 1, #popped, 2 do
              if take(popped[j], popped[j + 1], group) then leased = leased + 1 else spared = true end
            end
            -- Its lane takes the new ticket, or keeps its own within a weighted turn.
            local stamp = weighted_turn(KEY, group, weight)
            if group_limited then
              -- Its rate log, then its lanes as its next job's cost allows.
              local log, rper = group_rate_key(group), tonumber(redis.call('HGET', KEY.groups, 'rper:' .. group))
              log_prune(log, NOW - rper, KEY.groups, 'rx:' .. group)
              if leased > 0 then
                log_add(log, { { out[#out][2], job_cost(popped[1]) } }, KEY.groups, 'rx:' .. group)
              end
              if stamp and redis.call('EXISTS', q) == 1 then redis.call('ZADD', lanes, TICK, group) end
              refresh_group(KEY, group)
            elseif limit and running + took >= limit then
              -- At a limit: no lane anywhere until a slot comes back.
              for b = 0, 2 do redis.call('ZREM', lanes_key(KEY, b), group) end
            elseif redis.call('EXISTS', q) == 0 then
              redis.call('ZREM', lanes, group)
            elseif stamp then
              redis.call('ZADD', lanes, TICK, group)
            end
            -- A job a cascade cancelled gave its slot back: the lanes follow what is left.
            if spared then refresh_group(KEY, group) end
          end
        end
      end
      if served_ungrouped then
        tickets = tickets or {}
        tickets[#tickets + 1] = 'ut' .. band
        tickets[#tickets + 1] = ut
      end
    end
  end
  if #out > 0 then redis.call('HSET', KEY.meta, 'tick', TICK, unpack(tickets or {})) end
  if #out > 0 then
    call_chunked('HSET', KEY.leases, leases, 2)
    call_chunked('ZADD', KEY.active, active, 2)
    call_chunked('ZADD', KEY.claimed, claimed, 2)
    if limited then
      local starts = {}
      for i, c in ipairs(out) do starts[i] = { c[2], costs[i] } end
      log_add(KEY.rate, starts, KEY.meta, 'rate_extra')
    end
  end
  -- All it asked for, and maybe more left: let another fetcher look.
  if chain and #out == want then wake() end
  return with_records(out, true)
end
