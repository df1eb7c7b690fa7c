-- Read only. Returns {now, ids and liveness deadlines (WITHSCORES) of workers alive or lost
-- within LOST_WORKER_KEPT_MS, leases (HGETALL)}.
return { NOW, redis.call('ZRANGEBYSCORE', KEY.workers, NOW - LOST_WORKER_KEPT_MS, '+inf', 'WITHSCORES'),
  redis.call('HGETALL', KEY.leases) }
