-- Pauses (ARGV[3] = '1') or resumes (ARGV[3] = '0') the queue: claims take nothing while
-- `meta.paused` is set. Resuming wakes the blocked fetchers. Returns 1.
if ARGV[3] == '1' then
  redis.call('HSET', KEY.meta, 'paused', '1')
elseif redis.call('HDEL', KEY.meta, 'paused') == 1 then
  wake()
end
return 1
