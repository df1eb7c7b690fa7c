-- Deletes finished jobs older than the retention from every index. KEYS after the
-- statics: per job its key and its unique key's history key (when it has one).
-- ARGV: 3 retention_ms, 4 count, then per job: id, job key index, unique key ('' = none),
-- history key index. A finished job's retention clock is its score in its status set
-- (when it finished). Only a record that is
-- finished and due is deleted; a job that is live again keeps its record and indexes. A
-- record whose unique key is not the one declared is skipped (read again next time).
-- Returns how many were deleted.
local cutoff = retention_cutoff(NOW, tonumber(ARGV[3]))
local removed = 0
for i = 0, tonumber(ARGV[4]) - 1 do
  local b = 5 + i * 4
  local id, key, uk = ARGV[b], KEYS[tonumber(ARGV[b + 1])], ARGV[b + 2]
  local t = key_type(key)
  local status, stored_uk, parent, created = nil, nil, nil, nil
  if t == 'hash' then
    local v = redis.call('HMGET', key, 'status', 'unique_key', 'parent', 'created_at')
    status, stored_uk, parent, created = v[1], v[2], v[3], num(v[4], 0)
    if stored_uk == '' then stored_uk = false end
    if parent == '' then parent = nil end
  end
  local live = redis.call('HEXISTS', KEY.leases, id) == 1 or (status and not TERMINAL[status])
  local at = nil
  if not live then
    if status then at = tonumber(redis.call('ZSCORE', status_key(KEY, status), id) or '') end
    -- A record its status set lost track of (or a deleted job's remains) goes at once.
    at = at or cutoff
  end
  local kept, deleted = false, false
  if at and at <= cutoff then
    -- A child of an unfinished parent is kept (its parent will read its result), its
    -- retention started again (queue_core::backend::retention_keeps_child).
    if parent then
      local p = facts(job_key(parent))
      if p and p.exists and is_parent_of(p.created, created) then
        kept = KEEPS_CHILD[current_status(KEY, parent, p) or ''] or false
      end
    end
    if kept then
      redis.call('ZADD', status_key(KEY, status), NOW, id)
    elseif (stored_uk or '') == uk then
      local history = nil
      if uk ~= '' then history = KEYS[tonumber(ARGV[b + 3])] end
      delete_job(KEY, id, key, parent, uk, history)
      removed = removed + 1
      deleted = true
    else
      at = nil -- skipped: its unique key changed; read again next time
    end
  end
  if at and not deleted then
    -- Kept, or not due: listed by its retention clock, and no stray entry (in another
    -- status set) names it again. A live job is listed in `st_queued` only.
    if not kept and status then redis.call('ZADD', status_key(KEY, status), at, id) end
    for s, _ in pairs(TERMINAL) do
      if s ~= status then redis.call('ZREM', status_key(KEY, s), id) end
    end
  elseif live then
    for s, _ in pairs(TERMINAL) do redis.call('ZREM', status_key(KEY, s), id) end
  end
end
return removed
