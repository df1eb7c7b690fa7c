-- Deletes finished jobs older than the retention from every index. KEYS after the
-- statics: per job its key and its unique key's history key (when it has one).
-- ARGV: 3 retention_ms, 4 count, then per job: id, job key index, unique key ('' = none),
-- history key index. Only a record that is finished and due is deleted; an entry whose job
-- is live again (its id was reused) just leaves `finished`. A record whose unique key is
-- not the one declared is skipped (read again next time). Returns how many were deleted.
local cutoff = NOW - tonumber(ARGV[3])
local removed = 0
for i = 0, tonumber(ARGV[4]) - 1 do
  local b = 5 + i * 4
  local id, key, uk = ARGV[b], KEYS[tonumber(ARGV[b + 1])], ARGV[b + 2]
  local at = tonumber(redis.call('ZSCORE', KEY.finished, id) or '')
  if at and at <= cutoff then
    local t = key_type(key)
    local status, stored_uk, parent, created = nil, nil, nil, nil
    if t == 'hash' then
      local v = redis.call('HMGET', key, 'status', 'unique_key', 'parent', 'created_at')
      status, stored_uk, parent, created = v[1], v[2], v[3], num(v[4], 0)
      if stored_uk == '' then stored_uk = false end
      if parent == '' then parent = nil end
    end
    local live = redis.call('HEXISTS', KEY.leases, id) == 1 or (status and not TERMINAL[status])
    -- A child of an unfinished parent is kept (its parent will read its result), its
    -- retention started again (queue_core::backend::retention_keeps_child).
    local kept = false
    if not live and parent then
      local p = facts(job_key(parent))
      if p and p.exists and p.created <= created then
        kept = KEEPS_CHILD[current_status(KEY, parent, p) or ''] or false
      end
    end
    if kept then
      redis.call('ZADD', KEY.finished, NOW, id)
    elseif live then
      redis.call('ZREM', KEY.finished, id)
    elseif (stored_uk or '') == uk then
      redis.call('DEL', key)
      redis.call('ZREM', KEY.finished, id)
      -- A flow's index entries: its own children's list, its place in its parent's.
      redis.call('DEL', kids_key(id))
      if parent and parent ~= '' then redis.call('ZREM', kids_key(parent), id) end
      -- `jobs` is written no more (before 0.2 it listed every job): emptied as jobs go.
      redis.call('ZREM', KEY.jobs, id)
      for s, _ in pairs(VALID) do
        if s ~= 'processing' then redis.call('ZREM', status_key(KEY, s), id) end
      end
      if uk ~= '' then
        local history = KEYS[tonumber(ARGV[b + 3])]
        if key_type(history) == 'zset' then redis.call('ZREM', history, id) end
        if redis.call('HGET', KEY.dedup, uk) == id then redis.call('HDEL', KEY.dedup, uk) end
      end
      removed = removed + 1
    end
  end
end
return removed
