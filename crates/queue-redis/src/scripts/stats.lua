-- Read only. Returns {now, queued, processing, completed, failed, partial, cancelled, total,
-- scheduled, ready per band (3), live workers, lifetime counters (HGETALL)}.
local function card(key) return redis.call('ZCARD', key) end
local scheduled = card(K.delayed0) + card(K.delayed1) + card(K.delayed2)
return { NOW, card(K.st_queued), card(K.active), card(K.st_completed), card(K.st_failed),
  card(K.st_partial), card(K.st_cancelled), card(K.jobs), scheduled, card(K.ready0),
  card(K.ready1), card(K.ready2), redis.call('ZCOUNT', K.workers, NOW, '+inf'),
  redis.call('HGETALL', K.stats) }
