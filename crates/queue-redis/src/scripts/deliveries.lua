-- Reads the outbox: ARGV 3 'pending' | 'parked' | 'webhooks' | 'one', 4 limit or id.
-- Returns stored forms (pending: oldest due first; parked: oldest parked first), every
-- webhook's stored form, or one delivery's {stored form, parked 1/0} ({} when none).
local mode = ARGV[3]
if mode == 'webhooks' then
  return redis.call('HVALS', KEY.webhooks)
elseif mode == 'one' then
  local stored = redis.call('HGET', KEY.dlv, ARGV[4])
  if not stored then return {} end
  local parked = 0
  if redis.call('ZSCORE', KEY.parked, ARGV[4]) then parked = 1 end
  return { stored, parked }
end
local index = KEY.dq
if mode == 'parked' then index = KEY.parked end
local ids = redis.call('ZRANGE', index, 0, tonumber(ARGV[4]) - 1)
local out = {}
for _, id in ipairs(ids) do
  local stored = redis.call('HGET', KEY.dlv, id)
  if stored then out[#out + 1] = stored end
end
return out
