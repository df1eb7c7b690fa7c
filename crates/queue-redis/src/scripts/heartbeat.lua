-- Renews leases and registers the worker. KEYS after the statics: the worker's key.
-- ARGV: 3 worker, 4 lease_ms, 5 alive_ms, 6 host, 7 pid, 8 concurrency, 9 started_at,
-- 10 version, 11 tasks (JSON list), 12 schemas (JSON object, '' for none), 13 count, then
-- id, token pairs. Returns {positions of lost leases, positions of leases
-- whose cancel was requested} (1-based, in the order sent).
local worker, lease_ms, alive_ms = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local count = tonumber(ARGV[13])
local wkey = KEYS[NSTATIC + 1]
local wtype = key_type(wkey)
if wtype ~= 'hash' and wtype ~= 'none' then redis.call('DEL', wkey) end
local lost, cancel = {}, {}
for i = 1, count do
  local id, token = ARGV[12 + i * 2], ARGV[13 + i * 2]
  local l = read_lease(KEY, id)
  if holds(l, token) then
    extend(KEY, id, l, NOW + lease_ms)
    if l.cancel then cancel[#cancel + 1] = i end
  else
    lost[#lost + 1] = i
  end
end
-- Workers silent for their liveness window are lost: their claim history goes; they stay
-- listed as lost for LOST_WORKER_KEPT_MS, then are forgotten (queue_core::backend::
-- worker_listing). Only those lost since the last heartbeat looked (`meta.lost_seen`, at
-- most 100 per beat) are read: a beat does not walk every worker lost in the last hour.
local seen = num(redis.call('HGET', KEY.meta, 'lost_seen'), 0)
local dead = redis.call('ZRANGEBYSCORE', KEY.workers, '(' .. seen, '(' .. NOW, 'WITHSCORES', 'LIMIT', 0, 100)
for i = 1, #dead, 2 do redis.call('HDEL', KEY.claims, dead[i]) end
if #dead == 200 then seen = dead[#dead] else seen = NOW - 1 end
redis.call('HSET', KEY.meta, 'lost_seen', seen)
redis.call('ZREMRANGEBYSCORE', KEY.workers, '-inf', '(' .. workers_listed_from(NOW))
redis.call('ZADD', KEY.workers, NOW + alive_ms, worker)
redis.call('HSET', wkey, 'worker_id', worker, 'host', ARGV[6], 'pid', ARGV[7],
  'concurrency', ARGV[8], 'started_at', ARGV[9], 'last_seen', NOW, 'version', ARGV[10],
  'tasks', ARGV[11], 'schemas', ARGV[12])
redis.call('PEXPIRE', wkey, alive_ms + LOST_WORKER_KEPT_MS + 60000)
sample_depth(KEY)
return { lost, cancel }
