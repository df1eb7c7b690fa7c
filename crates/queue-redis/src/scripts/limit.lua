-- Sets the rate limit (ARGV[3] = max starts, ARGV[4] = window ms) or removes it (ARGV[3] =
-- ''; the start log and a handler's hold go with it). Wakes the blocked fetchers: a looser limit may let them
-- start jobs now. Returns 1.
if ARGV[3] == '' then
  redis.call('HDEL', KEY.meta, 'rate_max', 'rate_per_ms', 'rate_extra', 'held_until')
  redis.call('DEL', KEY.rate)
else
  redis.call('HSET', KEY.meta, 'rate_max', ARGV[3], 'rate_per_ms', ARGV[4])
end
wake()
return 1
