-- The rank of the first member of the zset `key` after (`ms`, `id`) in its order (score,
-- then member): a binary search of O(log n) single-member reads, so a walk through a
-- family of any size resumes from its cursor at bounded cost, even when the member at the
-- cursor is gone.
local function rank_after(key, ms, id)
  local lo, hi = 0, redis.call('ZCARD', key)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local e = redis.call('ZRANGE', key, mid, mid, 'WITHSCORES')
    local score = tonumber(e[2])
    if score < ms or (score == ms and e[1] <= id) then lo = mid + 1 else hi = mid end
  end
  return lo
end

-- One step of the cancels' cascades (queue_core::backend::CANCEL_STEP): visits up to
-- CANCEL_STEP children of the jobs in `cascade`, oldest first, each from where its walk
-- stands (`cascade_at`): queued ones are cancelled (their own descendants join the
-- cascade), running ones asked to stop. Returns 1 while a cascade is left, else 0.
local function cascade_step(KEY)
  local budget = CANCEL_STEP
  while budget > 0 do
    local head = redis.call('ZRANGE', KEY.cascade, 0, 0)[1]
    if not head then break end
    local kids = kids_key(head)
    local start = 0
    local at = redis.call('HGET', KEY.cascade_at, head)
    if at then
      local ms, last = string.match(at, '^([^|]*)|(.*)$')
      start = rank_after(kids, tonumber(ms) or 0, last or '')
    end
    local want = budget
    local batch = redis.call('ZRANGE', kids, start, start + want - 1, 'WITHSCORES')
    local n = #batch / 2
    budget = budget - n
    for i = 1, #batch, 2 do cancel_job(KEY, batch[i], job_key(batch[i])) end
    if n < want then
      redis.call('ZREM', KEY.cascade, head)
      redis.call('HDEL', KEY.cascade_at, head)
    else
      redis.call('HSET', KEY.cascade_at, head, batch[#batch] .. '|' .. batch[#batch - 1])
    end
  end
  return redis.call('EXISTS', KEY.cascade)
end

-- Whether a cascade is under way for an ancestor of `id` (a parent that is still its
-- parent, queue_core::backend::is_parent_of, up to MAX_FLOW_DEPTH levels).
local function doomed(KEY, id)
  local child = id
  for _ = 1, MAX_FLOW_DEPTH do
    local v = redis.pcall('HMGET', job_key(child), 'parent', 'created_at')
    if failed(v) or not v[1] or v[1] == '' then return false end
    local parent = v[1]
    local created = redis.pcall('HGET', job_key(parent), 'created_at')
    if failed(created) or not created or not is_parent_of(num(created, 0), num(v[2], 0)) then
      return false
    end
    if redis.call('ZSCORE', KEY.cascade, parent) then return true end
    child = parent
  end
  return false
end
