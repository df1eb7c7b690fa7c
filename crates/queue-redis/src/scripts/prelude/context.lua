-- The per-call context every script shares: the prefix, the clock, the writes pending
-- until the entry point returns, and flush. The tables generated from queue-core come
-- before the prelude (scripts/tables.rs; their list is in ARCHITECTURE.md, "Scripts"), and
-- every other concept has its file beside this one. Each entry point then gets `KEY` (its declared
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
  PENDING = { zadd = {}, zrem = {}, hdel = {}, counters = {}, release = {}, wake = false, ended = {},
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
      local index = bucket_of(NOW, span[2])
      local key = PREFIX .. 'series:' .. span[1] .. ':' .. index
      -- The expiry is set when a field is new (so always when the key is): most calls
      -- only add to fields the bucket has.
      local fresh = false
      for _, fb in ipairs(args) do
        if redis.pcall('HINCRBY', key, fb[1], fb[2]) == fb[2] then fresh = true end
      end
      if PENDING.sampled and redis.pcall('HSET', key, unpack(PENDING.sampled)) ~= 0 then fresh = true end
      if fresh then redis.pcall('PEXPIREAT', key, bucket_expiry(index, span[2], span[3])) end
    end
  end
  flush_events(KEY)
  if PENDING.wake then redis.call('ZADD', KEY.marker, 0, '0') end
  PENDING.zadd, PENDING.zrem, PENDING.hdel, PENDING.counters, PENDING.release, PENDING.wake = {}, {}, {}, {}, {}, false
  PENDING.ended = {}
  PENDING.gready, PENDING.gload, PENDING.series, PENDING.sampled = {}, {}, {}, nil
end
