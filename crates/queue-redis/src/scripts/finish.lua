-- Ends an attempt. KEYS after the statics: the job's key. ARGV: 3 id, 4 token, 5 outcome
-- (completed|partial|retry|failed|cancelled|released|corrupt), 6 error, 7 result JSON
-- ('' = none), 8 retry delay ms (already capped), 9 claim next ('1'/'0'), 10 worker,
-- 11 claim id, 12 token base, 13 lease_ms.
-- Returns {'lost'} or {status, claimed (as claim)}. Sent again after it was applied (the
-- reply was lost), it answers the status it produced (and the same next lease).
local id, token, kind = ARGV[3], ARGV[4], ARGV[5]
local key = KEYS[NS + 1]
local function next_lease()
  if ARGV[9] == '1' then
    return claim(K, ARGV[10], ARGV[11], ARGV[12], tonumber(ARGV[13]), 1, false)
  end
  return {}
end
local lease = read_lease(K, id)
if not holds(lease, token) then
  local ended = redis.pcall('HGET', key, 'ended')
  if type(ended) == 'string' and token ~= '' and string.sub(ended, 1, #token + 1) == token .. '|' then
    return { string.sub(ended, #token + 2), next_lease() }
  end
  return { 'lost' }
end
local rec = facts(key)
if not rec then
  fail_garbage(K, id, key, key_type(key))
  return { 'failed', next_lease() }
elseif not rec.exists then
  -- The record is gone: drop what points at it.
  ended_lease(K, id)
  for s, _ in pairs(VALID) do
    if s ~= 'processing' then redis.call('ZREM', status_key(K, s), id) end
  end
  redis.call('ZREM', K.jobs, id)
  return { 'failed', next_lease() }
end
if kind == 'corrupt' then
  sanitize(id, key)
  kind = 'failed'
  rec = facts(key)
end
local settle = SETTLE[kind]
if not settle then return redis.error_reply('unknown outcome ' .. tostring(kind)) end
local event = settle[lease.cancel][rec.retries < rec.max_retries]
local ctx = { ended = token }
if kind == 'completed' or kind == 'partial' then
  if ARGV[7] ~= '' then ctx.result = ARGV[7] end
end
if kind == 'partial' or kind == 'retry' or kind == 'failed' then ctx.error_message = ARGV[6] end
if event == 'retry' then ctx.run_at = NOW + tonumber(ARGV[8]) end
local to = end_attempt(K, id, key, lease, rec, event, ctx)
return { to, next_lease() }
