-- Read only. Returns {now, queued, processing, completed, failed, partial, cancelled, total,
-- scheduled, ready per band (3), live workers, lifetime counters (HGETALL), paused (0/1), rate limit max and window ms (or false), held until ms (or false), parents waiting on children}.
local function card(key) return redis.call('ZCARD', key) end
local scheduled, ready = depth(KEY)
-- `st_queued` holds every job not finished: the running ones (a lease each) are not queued.
local live = card(KEY.st_queued)
local done = { card(KEY.st_completed), card(KEY.st_failed), card(KEY.st_partial), card(KEY.st_cancelled) }
local total = live + done[1] + done[2] + done[3] + done[4]
local queued = math.max(live - redis.call('HLEN', KEY.leases), 0)
return { NOW, queued, card(KEY.active), done[1], done[2], done[3], done[4], total, scheduled,
  ready(0), ready(1), ready(2), redis.call('ZCOUNT', KEY.workers, NOW, '+inf'),
  redis.call('HGETALL', KEY.stats), redis.call('HEXISTS', KEY.meta, 'paused'),
  redis.call('HGET', KEY.meta, 'rate_max'), redis.call('HGET', KEY.meta, 'rate_per_ms'),
  redis.call('HGET', KEY.meta, 'held_until'), card(KEY.waiting) }
