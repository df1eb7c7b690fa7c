-- Chains: a job waiting for another to end before it is placed (queue_core::backend::
-- released_due says where it goes then). `KEY.chained`: job -> the job waiting for it; the
-- waiting job's record names the one it waits for (`after`), and it is in no ready or
-- delayed set, so claims never see it.

-- Job `id`, being created, waits for `ahead` to end.
local function chain(KEY, id, ahead)
  redis.call('HSET', KEY.chained, ahead, id)
end

-- Job `id` ended (`rec` = facts before the ending; `rec.after`: the job it still waited
-- for): one that ended while waiting no longer waits, the job waiting for it now waits for
-- `rec.after`, and its unique key goes back to `rec.after` while that one is unfinished;
-- else the job waiting for `id` is placed: among the delayed jobs while its `run_at` is
-- ahead, else ready at the back of its priority (a sequence's tail: `sequences.lua`).
local function unchain(KEY, id, rec)
  tail_ended(KEY, id, rec)
  if rec.after then
    if redis.call('HGET', KEY.chained, rec.after) == id then redis.call('HDEL', KEY.chained, rec.after) end
    if rec.unique_key then
      local holder = redis.call('HGET', KEY.dedup, rec.unique_key)
      local v = redis.pcall('HMGET', job_key(rec.after), 'status', 'unique_key')
      if (not holder or holder == id) and not failed(v) and v[1] and not TERMINAL[v[1]]
        and v[2] == rec.unique_key then
        redis.call('HSET', KEY.dedup, rec.unique_key, rec.after)
      end
    end
  end
  -- Only a job with a unique key (keep-latest) or a sequence has a job waiting for it:
  -- others cost no lookup.
  if not rec.unique_key and not rec.sequence then return end
  local waiter = redis.call('HGET', KEY.chained, id)
  if not waiter then return end
  redis.call('HDEL', KEY.chained, id)
  local wkey = job_key(waiter)
  if rec.after then
    redis.call('HSET', KEY.chained, rec.after, waiter)
    redis.call('HSET', wkey, 'after', rec.after)
    return
  end
  local v = redis.pcall('HMGET', wkey, 'status', 'run_at', 'priority', 'group')
  if failed(v) or v[1] ~= 'queued' then return end
  redis.call('HDEL', wkey, 'after')
  local due, band, group = tonumber(v[2]), band_of(v[3]), v[4]
  if group == '' then group = nil end
  if due and due > NOW then
    schedule(KEY, band, due, waiter, group)
  else
    local seq = redis.call('INCR', KEY.seq)
    if group then
      push_group_ready(KEY, band, group, seq, waiter)
    else
      later_zadd(ready_key(KEY, band), seq, waiter)
    end
  end
  wake()
end
