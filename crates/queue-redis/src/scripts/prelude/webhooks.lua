-- Webhooks: `hooks` holds per webhook its filter `<statuses>|<task>|<group>` (see
-- queue_core::Webhook::filter), read once per call and only when a job finishes.
local function parse_hook_filter(filter)
  local events, task, group = string.match(filter, '^([^|]*)|([^|]*)|(.*)$')
  if not events then return nil end
  return { events = ',' .. events .. ',', task = task, group = group }
end

-- queue_core::Webhook::wants: the webhook `h` (a parsed filter) wants a job of `task` in
-- `group` (nil: none) that finished `to`.
local function hook_wants(h, to, task, group)
  return string.find(h.events, ',' .. to .. ',', 1, true) ~= nil
    and (h.task == '' or h.task == task)
    and (h.group == '' or h.group == group)
end

local function hook_filters(KEY)
  if PENDING.hooks == nil then
    PENDING.hooks = {}
    local all = redis.call('HGETALL', KEY.hooks)
    for i = 1, #all, 2 do
      local h = parse_hook_filter(all[i + 1])
      if h then
        h.name = all[i]
        PENDING.hooks[#PENDING.hooks + 1] = h
      end
    end
  end
  return PENDING.hooks
end

-- The webhook a delivery id names: `<job>.<status>.<ms>.<webhook>`
-- (queue_core::Delivery::id_of; a job id, a status and a time hold no dot).
local function delivery_hook(did) return string.match(did, '^[^.]*%.[^.]*%.[^.]*%.(.*)$') or '' end

-- Removes a delivery from the outbox and every index naming it.
local function forget_delivery(KEY, did)
  redis.call('HDEL', KEY.dlv, did)
  redis.call('ZREM', KEY.dq, did)
  redis.call('ZREM', KEY.parked, did)
  redis.call('ZREM', KEY.dlvw, delivery_hook(did) .. '|' .. did)
end

-- The outbox entries of job `id` finishing `to`: one per webhook that wants it, in the
-- same step as the transition (Webhook::wants, the same three comparisons).
local function leave_deliveries(KEY, id, to, rec)
  for _, h in ipairs(hook_filters(KEY)) do
    if hook_wants(h, to, rec.task, rec.group) then
      local did = id .. '.' .. to .. '.' .. NOW .. '.' .. h.name
      local d = { id = did, webhook = h.name, job_id = id, event = to, at = NOW, task = rec.task,
        attempts = 0, parked = false }
      if rec.group then d.group = rec.group end
      if rec.unique_key then d.unique_key = rec.unique_key end
      redis.call('HSET', KEY.dlv, did, cjson.encode(d))
      redis.call('ZADD', KEY.dq, NOW, did)
      redis.call('ZADD', KEY.dlvw, 0, h.name .. '|' .. did)
    end
  end
end
