-- Read only. ARGV: 3 group. Returns {ready, running, paused (0/1), concurrency limit or
-- false, rate max or false, rate window ms or false, held until ms or false}.
local group = ARGV[3]
local ready = 0
for band = 0, 2 do ready = ready + redis.call('ZCARD', group_ready_key(band, group)) end
local v = redis.call('HMGET', KEY.groups, 'run:' .. group, 'pause:' .. group, 'max:' .. group,
  'rmax:' .. group, 'rper:' .. group, 'held:' .. group)
local paused = 0
if v[2] then paused = 1 end
local held = v[6]
if held and tonumber(held) <= NOW then held = false end
return { ready, num(v[1], 0), paused, v[3], v[4], v[5], held }
