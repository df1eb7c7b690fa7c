-- Events go out only while someone listens: subscribers keep the `subs` key alive.
local function events_on(KEY)
  if PENDING.events == nil then PENDING.events = redis.call('EXISTS', KEY.subs) == 1 end
  return PENDING.events
end

-- An event (JSON, `{` first) goes into the log (the stream `log`, its last EVENT_LOG_LEN
-- entries kept), then out to subscribers with its log id, so a subscriber that reconnects
-- resumes after the last id it saw. Sent by flush, in order, with the call's other writes.
local function send_event(KEY, msg)
  local q = PENDING.log
  if not q then
    q = {}
    PENDING.log = q
  end
  q[#q + 1] = msg
end

-- The events of this call into the log and out to subscribers. The log is trimmed exactly
-- to EVENT_LOG_LEN, and `log_gone` keeps the id of the newest event trimmed, so a
-- subscriber resuming from before it is told it missed some (queue_core EventKind::Missed).
flush_events = function(KEY)
  local q = PENDING.log
  if not q then return end
  PENDING.log = nil
  local len = redis.call('XLEN', KEY.log)
  -- Entries of the log this call pushes out, then this call's own that later ones push out.
  local old = math.min(math.max(len + #q - EVENT_LOG_LEN, 0), len)
  local own = math.max(#q - EVENT_LOG_LEN, 0)
  if old > 0 then
    local gone = redis.call('XRANGE', KEY.log, '-', '+', 'COUNT', old)
    if #gone > 0 then redis.call('SET', KEY.log_gone, gone[#gone][1]) end
  end
  for i, msg in ipairs(q) do
    local sid = redis.call('XADD', KEY.log, 'MAXLEN', EVENT_LOG_LEN, '*', 'e', msg)
    if i == own then redis.call('SET', KEY.log_gone, sid) end
    redis.call('PUBLISH', PREFIX .. 'events', '{"id":"' .. sid .. '",' .. string.sub(msg, 2))
  end
end

-- Events: ids and statuses need no escaping, so transitions are built by hand.
local function emit_transition(KEY, id, from, to)
  if not events_on(KEY) then return end
  local msg = '{"job_id":"' .. id .. '","at":' .. NOW .. ',"type":"transition","to":"' .. to .. '"'
  if from then msg = msg .. ',"from":"' .. from .. '"' end
  send_event(KEY, msg .. '}')
end

local function emit(KEY, id, kind, fields)
  if not events_on(KEY) then return end
  fields.job_id = id
  fields.at = NOW
  fields.type = kind
  send_event(KEY, cjson.encode(fields))
end
