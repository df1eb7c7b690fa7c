-- Read only. Returns {now, queued, processing, completed, failed, partial, cancelled, total,
-- scheduled, ready per band (3), live workers, lifetime counters (HGETALL)}.
local function card(key) return redis.call('ZCARD', key) end
local scheduled = card(K.delayed0) + card(K.delayed1) + card(K.delayed2)
-- `st_queued` holds every job not finished: the running ones (a lease each) are not queued.
local live = card(K.st_queued)
local done = { card(K.st_completed), card(K.st_failed), card(K.st_partial), card(K.st_cancelled) }
local total = live + done[1] + done[2] + done[3] + done[4]
local queued = math.max(live - redis.call('HLEN', K.leases), 0)
return { NOW, queued, card(K.active), done[1], done[2], done[3], done[4], total, scheduled,
  card(K.ready0),
  card(K.ready1), card(K.ready2), redis.call('ZCOUNT', K.workers, NOW, '+inf'),
  redis.call('HGETALL', K.stats) }
