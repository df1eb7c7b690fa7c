-- Creates, replaces or deletes a webhook: its stored form (`webhooks`) and the filter the
-- transitions read (`hooks`). ARGV: 3 name, 4 stored form ('' = delete), 5 filter.
-- Returns 1 when a webhook of that name existed, 0 when not, -1 when a new one would pass
-- MAX_WEBHOOKS (nothing written). A deleted webhook's deliveries are dropped by the
-- caller, a bounded step at a time (`delivery.lua` drop).
local existed = redis.call('HEXISTS', KEY.webhooks, ARGV[3])
if ARGV[4] == '' then
  redis.call('HDEL', KEY.webhooks, ARGV[3])
  redis.call('HDEL', KEY.hooks, ARGV[3])
else
  if existed == 0 and redis.call('HLEN', KEY.webhooks) >= MAX_WEBHOOKS then return -1 end
  redis.call('HSET', KEY.webhooks, ARGV[3], ARGV[4])
  redis.call('HSET', KEY.hooks, ARGV[3], ARGV[5])
end
return existed
