-- Read only. Returns {now, ids of workers seen within their liveness window, leases
-- (HGETALL)}.
return { NOW, redis.call('ZRANGEBYSCORE', KEY.workers, NOW, '+inf'), redis.call('HGETALL', KEY.leases) }
