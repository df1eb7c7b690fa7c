-- queue_core::backend::retention_cutoff: a finished job listed at or before this time is
-- due for the sweep (unless its unfinished parent keeps it).
local function retention_cutoff(now, retention_ms) return now - retention_ms end

-- Deletes a finished job's record and every index entry naming it (retention, and
-- queue_core::JobStore::delete). `history` is its unique key's history key (nil: none).
local function delete_job(KEY, id, key, parent, uk, history)
  redis.call('DEL', key)
  -- A flow's index entries: its own children's list (of any size: freed in the
  -- background), its place in its parent's.
  redis.call('UNLINK', kids_key(id))
  if parent and parent ~= '' then redis.call('ZREM', kids_key(parent), id) end
  for s, _ in pairs(VALID) do
    if s ~= 'processing' then redis.call('ZREM', status_key(KEY, s), id) end
  end
  if uk ~= '' then
    if history and key_type(history) == 'zset' then redis.call('ZREM', history, id) end
    if redis.call('HGET', KEY.dedup, uk) == id then redis.call('HDEL', KEY.dedup, uk) end
  end
end
