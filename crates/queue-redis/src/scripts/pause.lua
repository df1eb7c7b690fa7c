-- Pauses (ARGV[3] = '1') or resumes (ARGV[3] = '0') the queue: claims take nothing while
-- `meta.paused` is set. Resuming also lifts a handler's hold (`meta.held_until`, from a
-- `rate_limited` outcome) and wakes the blocked fetchers. Returns 1.
if ARGV[3] == '1' then
  redis.call('HSET', KEY.meta, 'paused', '1')
elseif redis.call('HDEL', KEY.meta, 'paused', 'held_until') > 0 then
  wake()
end
return 1
