-- Read only. ARGV: 3 limit. Returns {the ids whose lease expired, earliest first; 1 when a
-- cancel's cascade is left unfinished (its caller stopped: the maintenance finishes it)}.
return { redis.call('ZRANGEBYSCORE', KEY.active, '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[3])),
  redis.call('EXISTS', KEY.cascade) }
