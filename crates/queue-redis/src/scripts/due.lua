-- Read only. ARGV: 3 retention_ms, 4 limit. Returns the ids of finished jobs older than
-- the retention, oldest first.
return redis.call('ZRANGEBYSCORE', KEY.finished, '-inf', NOW - tonumber(ARGV[3]), 'LIMIT', 0,
  tonumber(ARGV[4]))
