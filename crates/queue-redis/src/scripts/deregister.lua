-- A worker stops. KEYS after the statics: the worker's key. ARGV: 3 worker.
redis.call('ZREM', KEY.workers, ARGV[3])
redis.call('HDEL', KEY.claims, ARGV[3])
redis.call('DEL', KEYS[NSTATIC + 1])
return 1
