-- Read only. Returns {now, ids of workers seen within their liveness window, leases
-- (HGETALL)}.
return { NOW, redis.call('ZRANGEBYSCORE', K.workers, NOW, '+inf'), redis.call('HGETALL', K.leases) }
