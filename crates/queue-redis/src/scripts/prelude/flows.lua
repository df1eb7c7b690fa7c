-- A parent's children by creation (keys.rs `kids`).
-- queue_core::backend::is_parent_of: the job created at `parent_created` under the id a
-- child names is its parent (a job created later under a reused id is not).
local function is_parent_of(parent_created, child_created) return parent_created <= child_created end

local function kids_key(id) return PREFIX .. 'kids:' .. id end

-- `parent` gets `n` more unfinished children: a queued parent that waited on none leaves
-- the ready (or delayed) jobs and waits.
local function hold(KEY, parent, pkey, prec, n)
  local waiting = redis.call('HINCRBY', pkey, 'kids_waiting', n)
  if waiting == n and current_status(KEY, parent, prec) == 'queued' then
    prec.waiting = 0
    unqueue(KEY, parent, prec)
    redis.call('ZADD', KEY.waiting, prec.created, parent)
  end
end

-- Child `child` of `parent` ended `to` under `policy`: the parent's counts, then what
-- queue_core::backend::on_child_ended decides (table CHILD_ENDED): release it to the back of
-- its priority (or its due time), or fail it (`child_failed`, placed like any ending).
child_ended = function(KEY, parent, child, to, policy, child_created)
  -- The parent's own attempt ended earlier in this call (a finish of many): its placement
  -- and lease removal go out first, so what follows sees it queued where it was placed.
  if PENDING.ended[parent] then flush(KEY) end
  local pkey = job_key(parent)
  local prec = facts(pkey)
  -- Gone (retention removed it) or not a job hash: nothing to count.
  if not prec or not prec.exists then return end
  -- A job created later under the parent's id is not the parent.
  if not is_parent_of(prec.created, child_created) then return end
  local waiting = redis.call('HINCRBY', pkey, 'kids_waiting', -1)
  if waiting < 0 then
    waiting = 0
    redis.call('HSET', pkey, 'kids_waiting', 0)
  end
  redis.call('HINCRBY', pkey, 'kids_' .. to, 1)
  local action = CHILD_ENDED[policy][to][current_status(KEY, parent, prec) or ''][waiting == 0]
  if action == 'release' then
    redis.call('ZREM', KEY.waiting, parent)
    local due = tonumber(redis.call('HGET', pkey, 'run_at') or '')
    if due and due > NOW then
      schedule(KEY, prec.band, due, parent, prec.group)
    else
      local seq = redis.call('INCR', KEY.seq)
      if prec.group then
        push_group_ready(KEY, prec.band, prec.group, seq, parent)
      else
        later_zadd(ready_key(KEY, prec.band), seq, parent)
      end
    end
    wake()
  elseif action == 'fail' then
    redis.call('ZREM', KEY.waiting, parent)
    prec.waiting = 0
    local set = {}
    apply_effect('child_failed', set, { now = NOW, retry_count = prec.retries,
      error_message = CHILD_MSG[1] .. child .. CHILD_MSG[2] .. to })
    set.status = 'failed'
    place(KEY, parent, 'child_failed', 'failed', prec, {}, nil)
    hset(pkey, set, prec.present)
    emit_transition(KEY, parent, 'queued', 'failed')
  end
end

-- A child of `parent` that had ended `was` is queued again (a manual retry): the parent's
-- counts, then what queue_core::backend::on_child_reopened decides (table REOPEN): it waits
-- again (leaving the ready jobs), or, failed by a child without running, it is retried.
child_reopened = function(KEY, parent, was, child_created)
  local pkey = job_key(parent)
  local prec = facts(pkey)
  if not prec or not prec.exists or not is_parent_of(prec.created, child_created) then return end
  if redis.call('HINCRBY', pkey, 'kids_' .. was, -1) < 0 then redis.call('HSET', pkey, 'kids_' .. was, 0) end
  local status = current_status(KEY, parent, prec) or ''
  local action = REOPEN[status] and REOPEN[status][prec.started] or 'count'
  if action == 'hold' then
    hold(KEY, parent, pkey, prec, 1)
  else
    local waiting = redis.call('HINCRBY', pkey, 'kids_waiting', 1)
    if action == 'requeue' then
      prec.waiting = waiting
      manual_retry(KEY, parent, pkey, prec, status, nil)
    end
  end
end
