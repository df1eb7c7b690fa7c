-- Creates, replaces or deletes a webhook: its stored form (`webhooks`) and the filter the
-- transitions read (`hooks`). ARGV: 3 name, 4 stored form ('' = delete), 5 filter.
-- Returns 1 when a webhook of that name existed.
local existed = redis.call('HEXISTS', KEY.webhooks, ARGV[3])
if ARGV[4] == '' then
  redis.call('HDEL', KEY.webhooks, ARGV[3])
  redis.call('HDEL', KEY.hooks, ARGV[3])
else
  redis.call('HSET', KEY.webhooks, ARGV[3], ARGV[4])
  redis.call('HSET', KEY.hooks, ARGV[3], ARGV[5])
end
return existed
