-- Recovers jobs whose lease expired, as queue_core::rules::on_lease_expired decides.
-- KEYS after the statics: each job's key. ARGV: 3 count, then the ids (in KEYS order).
-- Returns the ids recovered (a lease renewed or ended meanwhile is left alone).
local out = {}
for i = 1, tonumber(ARGV[3]) do
  local id = ARGV[3 + i]
  local key = KEYS[NSTATIC + i]
  local l = read_lease(KEY, id)
  local score = redis.call('ZSCORE', KEY.active, id)
  if l and l.expires <= NOW then
    local rec = facts(key)
    if rec and rec.exists then
      local retries_left = rec.retries < rec.max_retries
      local event = EXPIRE[l.cancel][retries_left]
      local msg = LEASE_MSG[retries_left]
      bump('recovered')
      end_attempt(KEY, id, key, l, rec, event, { error_message = msg[1] .. l.worker .. msg[2] })
    elseif rec then
      release_group_slot(KEY, l.group)
      ended_lease(KEY, id, l)
    else
      fail_garbage(KEY, id, key, key_type(key), l)
    end
    out[#out + 1] = id
  elseif not l and score then
    -- An index entry without a lease: nothing holds the job.
    redis.call('ZREM', KEY.active, id)
  end
end
return out
