-- Unique keys and their modes: what an enqueue does when another job holds its key
-- (queue_core::backend::on_key_held, generated as KEY_ACTION).

-- What the job holding a key is doing (queue_core::backend::Holder): 'pending' (queued, not
-- leased, not waiting on children), 'started', or nil when its record is gone.
local function holder_state(KEY, id)
  local v = redis.pcall('HMGET', job_key(id), 'status', 'kids_waiting')
  if failed(v) or not v[1] then return nil end
  if v[1] ~= 'queued' or num(v[2], 0) > 0 or redis.call('HEXISTS', KEY.leases, id) == 1 then
    return 'started'
  end
  return 'pending'
end

-- The key mode's answer for new job `id` of unique key `uk` (`history`: the key's history
-- set), as check_new returns it: nil (create it) | {'dup', holder} (refused, or the
-- holder is gone: the caller heals the key) | {'held', holder} | {'replace', holder} |
-- {'badkey', id} (the history key holds something else) | {'chain', holder} (created
-- waiting for the running holder to end) | {'supersede', holder} (the holder is cancelled,
-- then the job created).
-- `mode`: '' (refuse), 'debounce', 'throttle:<window ms>', 'keep_latest' or
-- 'replace_running'. The holder's case is read
-- only when the answer depends on it: a plain refusal reads no more than before.
local function key_decision(KEY, id, uk, mode, history)
  local window = nil
  if mode == '' then mode = 'refuse' end
  if string.sub(mode, 1, 9) == 'throttle:' then mode, window = 'throttle', tonumber(string.sub(mode, 10)) end
  local actions = KEY_ACTION[mode]
  local holder = redis.call('HGET', KEY.dedup, uk)
  local state = nil
  if holder then
    if actions.pending == 'refuse' and actions.started == 'refuse' then
      -- A refusal whatever the holder does (a gone holder is healed by the caller too).
      return { 'dup', holder }
    else
      state = holder_state(KEY, holder)
      -- Gone behind the queue's back: the caller heals the key (`heal`) and tries again.
      if not state then return { 'dup', holder } end
    end
  elseif window then
    local t = key_type(history)
    if t ~= 'none' and t ~= 'zset' then return { 'badkey', id } end
    -- The newest job of the key, by creation then id (as every backend).
    local newest = redis.call('ZREVRANGE', history, 0, 0, 'WITHSCORES')
    if newest[1] and NOW - tonumber(newest[2]) < window then holder, state = newest[1], 'recent' end
  end
  if not state then return nil end
  local action = actions[state]
  if action == 'refuse' then return { 'dup', holder } end
  if action == 'answer' then return { 'held', holder } end
  if action == 'replace' then return { 'replace', holder } end
  if action == 'chain' then return { 'chain', holder } end
  if action == 'supersede' then return { 'supersede', holder } end
  return nil
end

-- A replacement (queue_core::backend::KeyAction::Replace): the pending job `id` takes
-- `payload`; a debounce (`delay` ms, nil for keep-latest, which keeps its place) moves its
-- start to `delay` from now, wherever it waited before (one waiting for another job to end
-- keeps waiting: queue_core::KeyMode::restart_delay).
local function replace_payload(KEY, id, payload, delay)
  local key = job_key(id)
  redis.call('HSET', key, 'payload', payload)
  redis.call('HINCRBY', key, 'replaced', 1)
  if not delay then return end
  redis.call('HSET', key, 'run_at', NOW + delay)
  local rec = facts(key)
  if rec.after then return end
  unqueue(KEY, id, rec)
  schedule(KEY, rec.band, NOW + delay, id, rec.group)
  wake()
end
