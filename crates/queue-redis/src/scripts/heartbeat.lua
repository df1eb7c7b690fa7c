-- ARGV: 3 worker, 4 lease_ms, 5 alive_ms, 6 host, 7 pid, 8 concurrency, 9 started_at,
-- 10 count, then id, token pairs. Returns {lost ids, ids whose cancel was requested}.
local worker, lease_ms, alive_ms = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local count = tonumber(ARGV[10])
local lost, cancel, ids = {}, {}, {}
for i = 0, count - 1 do
  local id, token = ARGV[11 + i * 2], ARGV[12 + i * 2]
  local h = held(id, token)
  if h then
    extend(id, NOW + lease_ms)
    ids[#ids + 1] = id
    if h.cancel then cancel[#cancel + 1] = id end
  else
    lost[#lost + 1] = id
  end
end
redis.call('ZADD', k('workers'), NOW + alive_ms, worker)
redis.call('ZREMRANGEBYSCORE', k('workers'), '-inf', '(' .. NOW)
local wkey = k('worker:' .. worker)
redis.call('HSET', wkey, 'worker_id', worker, 'host', ARGV[6], 'pid', ARGV[7],
  'concurrency', ARGV[8], 'started_at', ARGV[9], 'last_seen', NOW, 'jobs', table.concat(ids, ','))
redis.call('PEXPIRE', wkey, alive_ms + 60000)
return { lost, cancel }
