local function band_of(priority) return BAND[priority] or 1 end

local READY_NAME = { [0] = 'ready0', [1] = 'ready1', [2] = 'ready2' }

local DELAYED_NAME = { [0] = 'delayed0', [1] = 'delayed1', [2] = 'delayed2' }

local LANES_NAME = { [0] = 'lanes0', [1] = 'lanes1', [2] = 'lanes2' }

local function ready_key(KEY, band) return KEY[READY_NAME[band] or ('ready' .. band)] end

local function delayed_key(KEY, band) return KEY[DELAYED_NAME[band] or ('delayed' .. band)] end

local function lanes_key(KEY, band) return KEY[LANES_NAME[band] or ('lanes' .. band)] end

-- Status indexes, together listing every retained job: one per finished status, scored by
-- when the job finished (its retention clock: the sweep reads these), and `st_queued`,
-- scored by creation, for every job not finished, queued or running (a running job is told
-- apart by its lease: `leases`, and `active` by lease expiry), so a claim moves no index
-- entry. Names are kept, not built per job.
local STATUS_NAME = {}

-- queue_core::backend::listed_at: a job's place in the listings of every job and of its
-- status: when it finished while finished, else when it was created.
local function listed_at(status, created, finished)
  if TERMINAL[status] and finished then return finished end
  return created
end

local function status_key(KEY, status)
  local name = STATUS_NAME[status]
  if not name then
    name = 'st_' .. status
    STATUS_NAME[status] = name
  end
  return KEY[name]
end

-- Whether some status index lists `id` (entries of a deleted job may remain).
local function listed(KEY, id)
  if redis.call('ZSCORE', KEY.st_queued, id) then return true end
  for s, _ in pairs(TERMINAL) do
    if redis.call('ZSCORE', status_key(KEY, s), id) then return true end
  end
  return false
end

-- Puts a job among the delayed ones (those of a group in `gdelayed`) and lowers the due
-- hint if it is now the earliest.
local function schedule(KEY, band, due, id, group)
  if group then
    redis.call('ZADD', KEY.gdelayed, due, id)
  else
    redis.call('ZADD', delayed_key(KEY, band), due, id)
  end
  local hint = tonumber(redis.call('GET', KEY.due))
  if not hint or due < hint then redis.call('SET', KEY.due, due) end
end

-- A job's place after `event` (queue_core::rules::placement) and its counters, then what
-- that does to its parent (a flow) and which webhook deliveries it leaves. `rec` = facts();
-- `ctx.run_at` = the due time of a retry. A queued parent with unfinished children waits in
-- `waiting` instead of being ready.
local function place(KEY, id, event, to, rec, ctx, seq)
  local where = PLACE[event]
  if where ~= 'finished' and where ~= 'leased' and rec.waiting > 0 then
    later_zadd(KEY.waiting, rec.created, id)
    later_zadd(KEY.st_queued, rec.created, id)
  elseif where == 'finished' then
    leave_deliveries(KEY, id, to, rec)
    later_zrem(KEY.st_queued, id)
    -- A finished job is listed by when it finished, which is also its retention clock
    -- (queue_core::backend::listed_at): the sweep reads these sets, no other index.
    later_zadd(status_key(KEY, to), listed_at(to, rec.created, NOW), id)
    if rec.unique_key then later_release(rec.unique_key, id) end
    unchain(KEY, id, rec)
  elseif where == 'delayed' then
    schedule(KEY, rec.band, ctx.run_at, id, rec.group)
    later_zadd(KEY.st_queued, rec.created, id)
    wake()
  elseif ctx.after then
    -- Queued again behind another job (a sequence's member retried by hand): in no ready
    -- set until that one ends.
    chain(KEY, id, ctx.after)
    later_zadd(KEY.st_queued, rec.created, id)
  elseif where == 'ready_in_place' or where == 'ready_at_back' then
    if where == 'ready_at_back' then seq = redis.call('INCR', KEY.seq) end
    if rec.group then
      push_group_ready(KEY, rec.band, rec.group, seq, id)
    else
      later_zadd(ready_key(KEY, rec.band), seq, id)
    end
    later_zadd(KEY.st_queued, rec.created, id)
    wake()
  end
  if COUNTER[event] then bump(COUNTER[event]) end
  if rec.group and UNFINISHED_CHANGE[event] then later_group_load(rec.group, UNFINISHED_CHANGE[event]) end
  if rec.parent then
    if where == 'finished' then
      child_ended(KEY, rec.parent, id, to, rec.policy, rec.created)
    elseif event == 'manual_retry' then
      child_reopened(KEY, rec.parent, rec.status, rec.created)
    end
  end
end

-- A manual retry of `id` (its record `key`, `rec` = facts, `status` its finished status):
-- `{'ok'}` | `{'dup', holder}` (another job holds its unique key). `band` changes the
-- priority (nil keeps it). Checked by the caller: the state machine allows it.
local function manual_retry(KEY, id, key, rec, status, band)
  if rec.unique_key then
    local holder = redis.call('HGET', KEY.dedup, rec.unique_key)
    if holder and holder ~= id then return { 'dup', holder } end
  end
  local set = {}
  if band then
    rec.band = band
    set.priority = PNAME[band]
  end
  apply_effect('manual_retry', set, { now = NOW, retry_count = rec.retries })
  set.status = 'queued'
  redis.call('ZREM', status_key(KEY, status), id)
  -- A member of a sequence joins its back (queue_core::sequences).
  local tail = nil
  if rec.sequence then
    tail = join_sequence(KEY, rec.sequence, id)
    if tail then set.after = tail end
  end
  place(KEY, id, 'manual_retry', 'queued', rec, { after = tail or nil }, nil)
  if rec.unique_key then redis.call('HSET', KEY.dedup, rec.unique_key, id) end
  hset(key, set, rec.present)
  emit_transition(KEY, id, status, 'queued')
  return { 'ok' }
end

-- Takes a queued job out of the ready, delayed and waiting sets.
local function unqueue(KEY, id, rec)
  if rec.group then
    remove_group_ready(KEY, rec.band, rec.group, id)
    redis.call('ZREM', KEY.gdelayed, id)
  else
    redis.call('ZREM', ready_key(KEY, rec.band), id)
    redis.call('ZREM', delayed_key(KEY, rec.band), id)
  end
  if rec.waiting > 0 then redis.call('ZREM', KEY.waiting, id) end
end

-- How many values of ARGV describe one new job (queue-redis `wire.rs`, `JOB_ARGS`).
local JOB_ARGS = 16

-- One job of an enqueue (`enqueue.lua`, `flow.lua`): ARGV from `b` holds id, task, payload,
-- unique_key, band, delay_ms, max_retries, timeout_ms, metadata, job key index, history key
-- index, '1' when the caller chose the id, group ('' without), cost ('' for 1), key mode
-- ('' = refuse, 'debounce', 'throttle:<window ms>', 'keep_latest'), sequence ('' without).
-- Returns nil when it may be created, else its answer: {'exists', id} (the id is taken:
-- that record is kept) | {'stale', id} (entries of a deleted job with this id remain) |
-- {'dup', holder} (the unique key's holder refuses it, or is gone) | {'badkey', id} (the
-- unique key's history key holds something else) | {'held', holder} (answered with the
-- key's holder) | {'replace', holder} (a debounce: the caller replaces the holder's payload).
-- The key mode's decision is queue_core::backend::on_key_held (KEY_ACTION).
local function check_new(KEY, KEYS, ARGV, b)
  local id, uk = ARGV[b], ARGV[b + 3]
  local key = KEYS[tonumber(ARGV[b + 9])]
  if redis.call('EXISTS', key) == 1 then return { 'exists', id } end
  if ARGV[b + 11] == '1' and (listed(KEY, id) or redis.call('HEXISTS', KEY.leases, id) == 1) then
    return { 'stale', id }
  end
  if uk ~= '' then
    local history = KEYS[tonumber(ARGV[b + 10])]
    local decided = key_decision(KEY, id, uk, ARGV[b + 14], history)
    if decided then return decided end
    local t = key_type(history)
    if t ~= 'none' and t ~= 'zset' then return { 'badkey', id } end
  end
  return nil
end

-- Creates the job of ARGV from `b` (checked by check_new). `parent`: its parent's id (nil
-- without), `policy`: what its failure does to the parent ('' = fail_parent), `kids`: how
-- many children it waits on (it waits in `waiting`, not ready), `after`: the job it waits
-- for (chains; nil without). A job of a sequence joins it: chained behind its tail, and
-- becomes the tail. Returns {band, id, group} when it is ready now (the caller gives the
-- ready jobs their places), else nil; then the job it waits for, if any.
local function create_new(KEY, KEYS, ARGV, b, parent, policy, kids, after)
  local id, task, payload, uk = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local band, delay = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])
  local key = KEYS[tonumber(ARGV[b + 9])]
  local group = ARGV[b + 12]
  if group == '' then group = nil end
  -- The HSET arguments are built directly (this runs for every job). `progress` and
  -- `retry_count` start absent: an absent one reads as 0 (codec.rs, facts()).
  local fields = { 'task', task, 'payload', payload, 'status', 'queued', 'priority', PNAME[band],
    'max_retries', ARGV[b + 6], 'created_at', NOW }
  local n = 12
  if uk ~= '' then fields[n + 1], fields[n + 2], n = 'unique_key', uk, n + 2 end
  if ARGV[b + 7] ~= '' then fields[n + 1], fields[n + 2], n = 'timeout_ms', ARGV[b + 7], n + 2 end
  if ARGV[b + 8] ~= '' then fields[n + 1], fields[n + 2], n = 'metadata', ARGV[b + 8], n + 2 end
  if ARGV[b + 13] ~= '' then fields[n + 1], fields[n + 2], n = 'cost', ARGV[b + 13], n + 2 end
  if group then
    fields[n + 1], fields[n + 2], n = 'group', group, n + 2
    later_group_load(group, UNFINISHED_CHANGE.new)
  end
  if parent then
    fields[n + 1], fields[n + 2], n = 'parent', parent, n + 2
    if policy ~= '' then fields[n + 1], fields[n + 2], n = 'policy', policy, n + 2 end
    redis.call('ZADD', kids_key(parent), NOW, id)
  end
  local ready = nil
  if delay > 0 then fields[n + 1], fields[n + 2], n = 'run_at', NOW + delay, n + 2 end
  local sequence = ARGV[b + 15]
  if sequence ~= '' then
    fields[n + 1], fields[n + 2], n = 'sequence', sequence, n + 2
    after = after or join_sequence(KEY, sequence, id)
  end
  if kids and kids > 0 then
    fields[n + 1], fields[n + 2], n = 'kids_waiting', kids, n + 2
    later_zadd(KEY.waiting, NOW, id)
  elseif after then
    fields[n + 1], fields[n + 2], n = 'after', after, n + 2
    chain(KEY, id, after)
  elseif delay > 0 then
    schedule(KEY, band, NOW + delay, id, group)
  else
    ready = { band, id, group }
  end
  redis.call('HSET', key, unpack(fields))
  later_zadd(KEY.st_queued, NOW, id)
  if uk ~= '' then
    redis.call('ZADD', KEYS[tonumber(ARGV[b + 10])], NOW, id)
    redis.call('HSET', KEY.dedup, uk, id)
  end
  emit_transition(KEY, id, nil, 'queued')
  return ready, after
end

-- Gives the ready jobs of one enqueue their places (one INCRBY, in order) and counts them.
local function place_new(KEY, ready, created)
  if #ready > 0 then
    local first = redis.call('INCRBY', KEY.seq, #ready) - #ready
    for i, r in ipairs(ready) do
      if r[3] then
        push_group_ready(KEY, r[1], r[3], first + i, r[2])
      else
        later_zadd(ready_key(KEY, r[1]), first + i, r[2])
      end
    end
  end
  if created > 0 then
    bump('enqueued', created)
    wake()
  end
end

-- Creates `count` jobs each on its own (a refused one does not stop the others), their
-- JOB_ARGS values of check_new from ARGV[first]; the ready ones take their places in order.
-- Returns {code, id} per job: ok, or the answer of check_new ('held' for a replacement).
local function create_each(KEY, KEYS, ARGV, first, count)
  local out = {}
  local ready = {}
  local created = 0
  for i = 0, count - 1 do
    local b = first + i * JOB_ARGS
    local refused = check_new(KEY, KEYS, ARGV, b)
    if refused and refused[1] == 'replace' then
      -- The holder may be a job of this call still to be placed: place those first.
      place_new(KEY, ready, created)
      ready, created = {}, 0
      local restart = nil
      if ARGV[b + 14] == 'debounce' then restart = tonumber(ARGV[b + 5]) end
      replace_payload(KEY, refused[2], ARGV[b + 2], restart)
      out[#out + 1] = { 'held', refused[2] }
    elseif refused and refused[1] == 'chain' then
      create_new(KEY, KEYS, ARGV, b, nil, '', 0, refused[2])
      created = created + 1
      out[#out + 1] = { 'chained', refused[2] }
    elseif refused and refused[1] == 'supersede' then
      -- Replace-running: the holder is cancelled (a running one asked to stop); the job
      -- waits for it while it still runs.
      place_new(KEY, ready, created)
      ready, created = {}, 0
      local holder = refused[2]
      local behind = nil
      if cancel_job(KEY, holder, job_key(holder))[1] == 'requested' then behind = holder end
      ready[#ready + 1] = create_new(KEY, KEYS, ARGV, b, nil, '', 0, behind)
      created = created + 1
      if behind then out[#out + 1] = { 'chained', behind } else out[#out + 1] = { 'ok', ARGV[b] } end
    elseif refused then
      out[#out + 1] = refused
    else
      local r, behind = create_new(KEY, KEYS, ARGV, b, nil, '', 0)
      ready[#ready + 1] = r
      created = created + 1
      if behind then out[#out + 1] = { 'chained', behind } else out[#out + 1] = { 'ok', ARGV[b] } end
    end
  end
  place_new(KEY, ready, created)
  return out
end

-- Cancels job `id` (record `key`) as queue_core::rules::on_cancel decides: {'cancelled'} |
-- {'requested'} | {'missing'} | {'invalid', status}. A cancelled parent joins `cascade`:
-- its unfinished children are cancelled in the steps that follow (theirs as well; running
-- ones are asked to stop).
local function cancel_job(KEY, id, key)
  if key_type(key) ~= 'hash' then return { 'missing' } end
  local rec = facts(key)
  local l = read_lease(KEY, id)
  local status = rec.status
  if l then status = 'processing' end
  local action = CANCEL[status or ''] and CANCEL[status][l ~= nil and l.cancel]
  if action == 'cancel' then
    local queued = { group = rec.group, band = rec.band, waiting = rec.waiting }
    redis.call('ZREM', KEY.st_queued, id)
    rec.waiting = 0
    local set = {}
    apply_effect('cancel', set, { now = NOW, retry_count = rec.retries })
    set.status = 'cancelled'
    place(KEY, id, 'cancel', 'cancelled', rec, {}, nil)
    -- Off the ready jobs after its parent (released by `place`) joined them: a group
    -- with ready jobs before and after the call keeps its lane's ticket (the model
    -- refreshes lanes once per call).
    unqueue(KEY, id, queued)
    hset(key, set, rec.present)
    emit_transition(KEY, id, 'queued', 'cancelled')
    -- Its unfinished descendants are cancelled by the cascade's steps (cascade_step).
    if redis.call('EXISTS', kids_key(id)) == 1 then redis.call('ZADD', KEY.cascade, 'NX', NOW, id) end
    return { 'cancelled' }
  elseif action == 'request' then
    l.cancel = true
    write_lease(KEY, id, l)
    redis.call('PUBLISH', PREFIX .. 'cancel', id)
    emit(KEY, id, 'cancel_requested', {})
    return { 'requested' }
  elseif action == 'already_requested' then
    return { 'requested' }
  end
  return { 'invalid', status or '' }
end

-- Due delayed jobs join the back of their priority, in order of due time, then id. `due`
-- holds a lower bound of the earliest due time ('none': no delayed job), so a claim looks
-- at the delayed sets only when one may be due; a missing hint is rebuilt.
local function promote(KEY)
  local hint = redis.call('GET', KEY.due)
  if hint == 'none' or (tonumber(hint) and tonumber(hint) > NOW) then return end
  local first = nil
  for band = 0, 2 do
    local due = redis.call('ZRANGEBYSCORE', delayed_key(KEY, band), '-inf', NOW, 'LIMIT', 0, 1000)
    for _, id in ipairs(due) do
      redis.call('ZREM', delayed_key(KEY, band), id)
      redis.call('ZADD', ready_key(KEY, band), redis.call('INCR', KEY.seq), id)
    end
    local head = redis.call('ZRANGE', delayed_key(KEY, band), 0, 0, 'WITHSCORES')
    if #head > 0 and (not first or tonumber(head[2]) < first) then first = tonumber(head[2]) end
  end
  -- Jobs of groups, in the same order, each to its group's ready set.
  local due = redis.call('ZRANGEBYSCORE', KEY.gdelayed, '-inf', NOW, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', KEY.gdelayed, id)
    local v = redis.pcall('HMGET', PREFIX .. 'job:' .. id, 'group', 'priority')
    if not failed(v) and v[1] then
      push_group_ready(KEY, band_of(v[2]), v[1], redis.call('INCR', KEY.seq), id)
    else
      -- Damaged or gone: among the ready jobs without a group, where the claim fails it.
      redis.call('ZADD', ready_key(KEY, 1), redis.call('INCR', KEY.seq), id)
    end
  end
  local head = redis.call('ZRANGE', KEY.gdelayed, 0, 0, 'WITHSCORES')
  if #head > 0 and (not first or tonumber(head[2]) < first) then first = tonumber(head[2]) end
  redis.call('SET', KEY.due, first or 'none')
end

local function next_due(KEY)
  local hint = redis.call('GET', KEY.due)
  if hint == 'none' or not hint then return '' end
  return hint
end
