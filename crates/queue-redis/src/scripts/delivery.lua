-- The outbox of webhook deliveries (`dlv`: id -> stored form; `dq`: pending ids by due ms,
-- a claimed one by the end of its lease; `parked`: parked ids by when). ARGV 3 is the mode:
--   claim, 4 limit, 5 lease ms: the due ids (oldest first) are hidden for the lease;
--     returns {{id, stored form, its webhook's stored form or ''}...}
--   settle, 4 id, 5 the stored form claimed, 6 'remove' | 'retry' | 'park', 7 new stored
--     form, 8 the wait in ms (retry): applies only if the stored form is still the claimed
--     one; 1 or 0
--   resend, 4 id, 5 new stored form: a parked delivery due now; 1 or 0
--   prune, 4 retention ms, 5 limit: parked deliveries parked longer ago than the retention
--     go (at most `limit`); how many
--   drop, 4 webhook, 5 limit: deliveries of a webhook that no longer exists go (at most
--     `limit`); 1 while more are left, else 0
local mode = ARGV[3]
if mode == 'claim' then
  local ids = redis.call('ZRANGEBYSCORE', KEY.dq, '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[4]))
  local out = {}
  for _, id in ipairs(ids) do
    local stored = redis.call('HGET', KEY.dlv, id)
    if stored then
      redis.call('ZADD', KEY.dq, NOW + tonumber(ARGV[5]), id)
      local ok, d = pcall(cjson.decode, stored)
      local hook = ''
      if ok and type(d) == 'table' and type(d.webhook) == 'string' then
        hook = redis.call('HGET', KEY.webhooks, d.webhook) or ''
      end
      out[#out + 1] = { id, stored, hook }
    else
      forget_delivery(KEY, id)
    end
  end
  return out
elseif mode == 'settle' then
  local id = ARGV[4]
  if redis.call('HGET', KEY.dlv, id) ~= ARGV[5] then return 0 end
  local how = ARGV[6]
  if how == 'remove' then
    forget_delivery(KEY, id)
  elseif how == 'retry' then
    redis.call('HSET', KEY.dlv, id, ARGV[7])
    redis.call('ZADD', KEY.dq, NOW + tonumber(ARGV[8]), id)
  else
    redis.call('HSET', KEY.dlv, id, ARGV[7])
    redis.call('ZREM', KEY.dq, id)
    redis.call('ZADD', KEY.parked, NOW, id)
  end
  return 1
elseif mode == 'prune' then
  local old = redis.call('ZRANGEBYSCORE', KEY.parked, '-inf', retention_cutoff(NOW, tonumber(ARGV[4])), 'LIMIT', 0,
    tonumber(ARGV[5]))
  for _, id in ipairs(old) do forget_delivery(KEY, id) end
  return #old
elseif mode == 'drop' then
  if redis.call('HEXISTS', KEY.webhooks, ARGV[4]) == 1 then return 0 end
  local prefix = ARGV[4] .. '|'
  local limit = tonumber(ARGV[5])
  local gone = redis.call('ZRANGEBYLEX', KEY.dlvw, '[' .. prefix, '(' .. prefix .. '\255', 'LIMIT', 0,
    limit + 1)
  for i = 1, math.min(#gone, limit) do forget_delivery(KEY, string.sub(gone[i], #prefix + 1)) end
  if #gone > limit then return 1 end
  return 0
else
  local id = ARGV[4]
  if not redis.call('ZSCORE', KEY.parked, id) then return 0 end
  redis.call('ZREM', KEY.parked, id)
  redis.call('HSET', KEY.dlv, id, ARGV[5])
  redis.call('ZADD', KEY.dq, NOW, id)
  return 1
end
