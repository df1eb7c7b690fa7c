-- Ends attempts, each as queue_core::rules::settle decides, then maybe claims more.
-- KEYS after the statics: each ending's job key. ARGV: 3 count, 4 claim next ('0': no,
-- '1': when an ending here is accepted, '2': yes, an earlier step of the call was),
-- 5 worker, 6 claim id, 7 token base, 8 lease_ms, 9 max, then per ending 6 values: id,
-- token, outcome (completed|partial|retry|failed|cancelled|released|snoozed|rate_limited|
-- corrupt), error,
-- result JSON ('' = none), retry or snooze delay ms (already capped).
-- Returns {{status | 'lost' | '!<why>'...}, claimed (as claim), now}: the next jobs are
-- claimed only when at least one ending was accepted. Sent again after it was applied (the reply
-- was lost), each ending answers the status it produced (and the claim the same leases).
local count = tonumber(ARGV[3])
local statuses = {}
-- Ends within this call (their lease removal is deferred to the flush).
local ended_here = {}

local function finish_one(id, token, kind, error_message, result, delay_ms, key)
  local lease = nil
  if not ended_here[id] then lease = read_lease(KEY, id) end
  if not holds(lease, token) then
    local ended = redis.pcall('HGET', key, 'ended')
    if type(ended) == 'string' and token ~= '' and string.sub(ended, 1, #token + 1) == token .. '|' then
      return string.sub(ended, #token + 2)
    end
    return 'lost'
  end
  local settle = SETTLE[kind]
  if kind == 'corrupt' then settle = SETTLE['failed'] end
  if not settle then return '!unknown outcome ' .. tostring(kind) end
  ended_here[id] = true
  local rec = facts(key)
  if not rec then
    fail_garbage(KEY, id, key, key_type(key), lease)
    return 'failed'
  elseif not rec.exists then
    -- The record is gone: drop what points at it.
    release_group_slot(KEY, lease.group)
    ended_lease(KEY, id, lease)
    for s, _ in pairs(VALID) do
      if s ~= 'processing' then redis.call('ZREM', status_key(KEY, s), id) end
    end
    return 'failed'
  end
  if kind == 'corrupt' then
    sanitize(id, key)
    kind = 'failed'
    rec = facts(key)
  end
  local event = settle[lease.cancel][rec.retries < rec.max_retries]
  -- A limit outside the queue was hit: no job starts before the delay has passed, whatever
  -- this job became (queue_core::rules::holds_queue).
  if HOLDS_QUEUE[kind] then
    -- For a job in a group, only its group is held (the end of the attempt below then
    -- closes the group's lanes and notes when to look again).
    local until_ms = NOW + (tonumber(delay_ms) or 0)
    local hash, field = KEY.meta, 'held_until'
    if rec.group then hash, field = KEY.groups, 'held:' .. rec.group end
    local held = tonumber(redis.call('HGET', hash, field) or '0') or 0
    if until_ms > held then redis.call('HSET', hash, field, until_ms) end
  end
  local ctx = { ended = token }
  if kind == 'completed' or kind == 'partial' then
    if result ~= '' then ctx.result = result end
  end
  if kind == 'partial' or kind == 'retry' or kind == 'failed' then ctx.error_message = error_message end
  -- The due time of the events whose effect takes one (a retry, a snooze); the others
  -- ignore it.
  ctx.run_at = NOW + (tonumber(delay_ms) or 0)
  return end_attempt(KEY, id, key, lease, rec, event, ctx)
end

local accepted = false
for i = 0, count - 1 do
  local b = 10 + i * 6
  local status = finish_one(ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4],
    ARGV[b + 5], KEYS[NSTATIC + 1 + i])
  if status ~= 'lost' and string.sub(status, 1, 1) ~= '!' then accepted = true end
  statuses[#statuses + 1] = status
end
local claimed = {}
if (accepted and ARGV[4] == '1') or ARGV[4] == '2' then
  -- What the endings requeued is in place before anything is claimed.
  flush(KEY)
  claimed = claim(KEY, ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9]), false)
end
return { statuses, claimed, NOW }
