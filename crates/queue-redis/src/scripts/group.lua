-- Changes one group's settings (queue_core::backend group rules). ARGV: 3 group, 4 what
-- ('pause', 'resume', 'limit', 'weight' or 'rate'), 5 the concurrency limit or the rate limit's max
-- ('' removes it), 6 the rate window in ms. Resuming a group, or removing its rate limit,
-- also lifts a handler's hold on it (`held:<g>`). The group's lanes follow at once; a lane
-- the change opens wakes the blocked fetchers. Returns 1.
local group, what = ARGV[3], ARGV[4]
if what == 'pause' then
  redis.call('HSET', KEY.groups, 'pause:' .. group, '1')
elseif what == 'resume' then
  redis.call('HDEL', KEY.groups, 'pause:' .. group, 'held:' .. group)
elseif what == 'rate' and ARGV[5] == '' then
  redis.call('HDEL', KEY.groups, 'rmax:' .. group, 'rper:' .. group, 'rx:' .. group, 'held:' .. group)
  redis.call('DEL', group_rate_key(group))
elseif what == 'weight' and ARGV[5] == '' then
  redis.call('HDEL', KEY.groups, 'w:' .. group, 'turn:' .. group)
elseif what == 'weight' then
  redis.call('HSET', KEY.groups, 'w:' .. group, ARGV[5])
elseif what == 'rate' then
  redis.call('HSET', KEY.groups, 'rmax:' .. group, ARGV[5], 'rper:' .. group, ARGV[6])
elseif ARGV[5] == '' then
  redis.call('HDEL', KEY.groups, 'max:' .. group)
else
  redis.call('HSET', KEY.groups, 'max:' .. group, ARGV[5])
end
refresh_group(KEY, group)
return 1
