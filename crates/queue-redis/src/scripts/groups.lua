-- Read only. ARGV: 3 how many groups to show in full. Returns {unfinished jobs of all
-- groups, groups with unfinished jobs, {group, stats (`group_stats`)}...}: the busiest
-- first (`gload` is scored by minus the count, so ties come by name).
local limit = tonumber(ARGV[3])
local out = { num(redis.call('HGET', KEY.groups, 'unfinished'), 0), redis.call('ZCARD', KEY.gload) }
if limit > 0 then
  for _, group in ipairs(redis.call('ZRANGE', KEY.gload, 0, limit - 1)) do
    out[#out + 1] = { group, group_stats(KEY, group) }
  end
end
return out
