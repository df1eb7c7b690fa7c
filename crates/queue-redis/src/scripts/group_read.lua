-- Read only. ARGV: 3 group. Returns {ready, running, paused (0/1), concurrency limit or false}.
local group = ARGV[3]
local ready = 0
for band = 0, 2 do ready = ready + redis.call('ZCARD', group_ready_key(band, group)) end
local v = redis.call('HMGET', KEY.groups, 'run:' .. group, 'pause:' .. group, 'max:' .. group)
local paused = 0
if v[2] then paused = 1 end
return { ready, num(v[1], 0), paused, v[3] }
