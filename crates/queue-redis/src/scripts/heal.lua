-- Releases a unique key whose holder is no longer active (its record was deleted or
-- damaged behind the queue's back). KEYS after the statics: the holder's key.
-- ARGV: 3 unique key, 4 holder id. Returns 1 when the key was released.
local uk, holder = ARGV[3], ARGV[4]
if redis.call('HGET', KEY.dedup, uk) ~= holder then return 0 end
if redis.call('HEXISTS', KEY.leases, holder) == 1 then return 0 end
local key = KEYS[NSTATIC + 1]
if key_type(key) == 'hash' then
  local status = redis.call('HGET', key, 'status')
  if status == 'queued' or status == 'processing' then return 0 end
end
redis.call('HDEL', KEY.dedup, uk)
return 1
