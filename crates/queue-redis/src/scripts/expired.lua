-- Read only. ARGV: 3 limit. Returns the ids whose lease expired, earliest first.
return redis.call('ZRANGEBYSCORE', KEY.active, '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[3]))
