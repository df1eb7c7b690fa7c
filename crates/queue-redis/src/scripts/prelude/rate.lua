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

-- queue_core::RateLimit::window_floor: the starts after this time count in a window of
-- `per` ms ending `now`.
local function window_floor(now, per) return now - per end

-- queue_core::RateLimit::admits: a job of `cost` fits what is left of the window, or the
-- window is empty.
local function rate_admits(max, used, cost) return used == 0 or used + cost <= max end
