-- A worker stops. KEYS after the statics: the worker's key. ARGV: 3 worker.
redis.call('ZREM', K.workers, ARGV[3])
redis.call('HDEL', K.claims, ARGV[3])
redis.call('DEL', KEYS[NS + 1])
return 1
