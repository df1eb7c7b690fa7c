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

-- queue_core::backend::ungrouped_goes_first: the lane of jobs without a group (last
-- started at ticket `ungrouped`) serves the next start before the group lane of ticket
-- `group`: the lower ticket first, the jobs without a group on a tie.
local function ungrouped_goes_first(ungrouped, group) return ungrouped <= group end

-- queue_core::backend::group_rate_admits, its hold: a group held by a handler's rate-limit
-- report until `held` (nil: none) starts nothing before then.
local function held_back(held, now) return held ~= nil and now < held end

-- queue_core::backend::group_admits: not paused, and fewer running than its concurrency
-- limit (nil: none).
local function group_slot_admits(paused, running, max)
  return not paused and (not max or running < max)
end

-- queue_core::backend::weighted_turn: the turn after one more start of a group of `weight`
-- (nil: 1), and whether its lane takes a new ticket now (the turn is over).
local function turn_after(turn, weight)
  local next = turn + 1
  if next >= (weight or 1) then return 0, true end
  return next, false
end

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
  local ok = group_slot_admits(v[3] ~= nil and v[3] ~= false, running, max)
  local limited, again = false, nil
  local held = tonumber(v[6])
  if held_back(held, NOW) then
    ok, again = false, held
  elseif v[6] then
    -- A hold that has passed is forgotten.
    redis.call('HDEL', KEY.groups, 'held:' .. group)
  end
  local rmax, rper = tonumber(v[4]), tonumber(v[5])
  if rmax and rper then
    limited = true
    local floor = window_floor(NOW, rper)
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
  local turn, fresh = turn_after(num(redis.call('HGET', KEY.groups, 'turn:' .. group), 0), weight)
  if fresh then
    redis.call('HDEL', KEY.groups, 'turn:' .. group)
  else
    redis.call('HSET', KEY.groups, 'turn:' .. group, turn)
  end
  return fresh
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
