-- Leases live in the `leases` hash, one entry per running job:
-- token|expires|lease_ms|started|seq|cancel|claim|worker (the worker id last: it may hold
-- anything). `cancel` is '0' or '1', followed by the job's group when it has one (a group
-- holds no '|'), so the group's slot is given back however the attempt ends, even when
-- the record is damaged. A job is processing exactly when it has an entry; its hash keeps
-- the fields that outlive the attempt, and the attempt's own fields are written when it
-- ends.
local LEASE = '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$'

local function decode_lease(v)
  if not v then return nil end
  local token, expires, lease_ms, started, seq, cancel, claim, worker = string.match(v, LEASE)
  if not token then return nil end
  local group = string.sub(cancel, 2)
  if group == '' then group = nil end
  return { token = token, expires = tonumber(expires), lease_ms = tonumber(lease_ms),
    started = tonumber(started), seq = seq, cancel = string.sub(cancel, 1, 1) == '1',
    claim = claim, worker = worker, group = group }
end

local function read_lease(KEY, id) return decode_lease(redis.call('HGET', KEY.leases, id)) end

local function write_lease(KEY, id, l) redis.call('HSET', KEY.leases, id, encode_lease(l)) end

local function holds(l, token) return l ~= nil and token ~= '' and l.token == token and l.expires > NOW end

local function lease_string(token, expires, lease_ms, started, seq, cancel, group, claim, worker)
  local c = '0'
  if cancel then c = '1' end
  return token .. '|' .. expires .. '|' .. lease_ms .. '|' .. started .. '|' .. seq .. '|' .. c
    .. (group or '') .. '|' .. claim .. '|' .. worker
end

encode_lease = function(l)
  return lease_string(l.token, l.expires, l.lease_ms, l.started, l.seq, l.cancel, l.group,
    l.claim, l.worker)
end

local function extend(KEY, id, l, expires)
  l.expires = expires
  write_lease(KEY, id, l)
  redis.call('ZADD', KEY.active, expires, id)
end

-- The prefix of the members of `claimed` for `worker`'s claim `claim` (keys.rs `Claimed`):
-- the worker's length first, so no worker id (which may hold anything) is a prefix of
-- another's members.
local function claimed_prefix(worker, claim) return #worker .. ':' .. worker .. '|' .. claim .. '|' end

-- A lease ended: its entries go (`l`, the lease read, names its claim's member).
local function ended_lease(KEY, id, l)
  PENDING.ended[id] = true
  later_hdel(KEY.leases, id)
  later_zrem(KEY.active, id)
  if l then later_zrem(KEY.claimed, claimed_prefix(l.worker, l.claim) .. id) end
end

-- Ends a running job's attempt with `event`: the record (what `start` wrote, then what the
-- event writes), its place, the lease gone, the event published.
local function end_attempt(KEY, id, key, lease, rec, event, ctx)
  local to = NEXT['processing'][event]
  local set = {}
  materialize_start(set, lease)
  ctx.now = NOW
  ctx.retry_count = rec.retries
  ctx.key = key
  series_add('r' .. latency_bin(NOW - lease.started))
  apply_effect(event, set, ctx)
  set.status = to
  if lease.cancel then set.cancel_requested = '1' end
  if ctx.ended then set.ended = ctx.ended .. '|' .. to end
  release_group_slot(KEY, lease.group)
  place(KEY, id, event, to, rec, ctx, lease.seq)
  ended_lease(KEY, id, lease)
  hset(key, set, rec.present)
  emit_transition(KEY, id, 'processing', to)
  return to
end

-- The status a job is in: its record's, or processing while it holds a lease.
local function current_status(KEY, id, rec)
  if redis.call('HEXISTS', KEY.leases, id) == 1 then return 'processing' end
  return rec.status
end

-- The record of each claimed job goes back with its lease (the worker needs it to run the
-- job: no second round trip). Claimed ids are known only here, so this is the one place a
-- script builds a key: `PREFIX .. 'job:' .. id` (keys.rs `job`), the queue's hash tag and so the
-- same Cluster slot as every declared key. A key that is not a hash answers 'wrongtype'.
-- A fresh claim (not a replay) adds each job's wait since it was due (its creation or its
-- run_at, the later: queue_core::series::latency_field) to the charts.
local function with_records(claimed, fresh)
  for _, c in ipairs(claimed) do
    local fields = redis.pcall('HGETALL', PREFIX .. 'job:' .. c[1])
    if failed(fields) then
      fields = 'wrongtype'
    elseif fresh then
      local created, run_at = 0, 0
      for i = 1, #fields, 2 do
        if fields[i] == 'created_at' then created = tonumber(fields[i + 1]) or 0
        elseif fields[i] == 'run_at' then run_at = tonumber(fields[i + 1]) or 0 end
      end
      series_add('w' .. latency_bin(NOW - math.max(created, run_at)))
    end
    c[6] = fields
  end
  return claimed
end

-- Leases up to `max` ready jobs for `worker`: a list of {id, token, started, expires, cancel,
-- record fields}.
-- Claim ids of one worker increase; one at or below the last seen is a request sent again,
-- answered with the leases it took that are still held, oldest first, at most `max`
-- (none: it claims as new).
-- `chain` re-arms the wake-up marker when work is left.
local function claim(KEY, worker, claim_id, token_base, lease_ms, max, chain)
  local id_num = tonumber(claim_id)
  local last = tonumber(redis.call('HGET', KEY.claims, worker) or '0') or 0
  local prefix = claimed_prefix(worker, claim_id)
  if id_num <= last then
    -- A replay reads only its own claim's leases (at most MAX_CLAIM members).
    local again = {}
    local mine = redis.call('ZRANGEBYLEX', KEY.claimed, '[' .. prefix, '(' .. prefix .. '\255')
    for _, m in ipairs(mine) do
      local id = string.sub(m, #prefix + 1)
      local l = read_lease(KEY, id)
      if l and l.claim == claim_id and l.worker == worker and l.expires > NOW then
        local cancel = 0
        if l.cancel then cancel = 1 end
        again[#again + 1] = { id, l.token, l.started, l.expires, cancel }
      end
    end
    if #again > 0 then
      -- Oldest first (start, then id), at most what the request asks for.
      table.sort(again, function(a, b)
        if a[3] ~= b[3] then return a[3] < b[3] end
        return a[1] < b[1]
      end)
      while #again > max do table.remove(again) end
      return with_records(again)
    end
  else
    redis.call('HSET', KEY.claims, worker, claim_id)
  end
  promote(KEY)
  wake_timed_groups(KEY)
  -- A paused queue starts nothing (a replay above still answers what was taken before).
  local meta = redis.call('HMGET', KEY.meta, 'paused', 'rate_max', 'rate_per_ms', 'held_until')
  if meta[1] then return with_records({}) end
  -- Held after a handler hit a limit outside the queue: nothing starts until then.
  local held = tonumber(meta[4])
  if held and NOW < held then
    RATE_NEXT = held
    return with_records({})
  end
  -- Rate limited: each start's cost must fit what is left of the window that ends now
  -- (starts at or before NOW - window no longer count; queue_core::RateLimit::admits).
  local want = max
  local rate_max, rate_per = tonumber(meta[2]), tonumber(meta[3])
  local limited = rate_max and rate_per
  local used = 0
  local function stop_at_limit()
    local oldest = redis.call('ZRANGE', KEY.rate, 0, 0, 'WITHSCORES')
    if oldest[2] then RATE_NEXT = tonumber(oldest[2]) + rate_per end
  end
  if limited then
    used = log_prune(KEY.rate, window_floor(NOW, rate_per), KEY.meta, 'rate_extra')
    local room = rate_max - used
    if room < max then max = math.max(room, 0) end
    if max == 0 then
      stop_at_limit()
      return with_records({})
    end
  end
  -- Whether the queue's limit lets job `id` start now (its cost counted if so).
  local blocked = false
  local costs = {}
  local function fits(id)
    if not limited then return true end
    local c = job_cost(id)
    if not rate_admits(rate_max, used, c) then
      blocked = true
      stop_at_limit()
      return false
    end
    used = used + c
    costs[#costs + 1] = c
    return true
  end
  local out, leases, active, claimed = {}, {}, {}, {}
  local expires = NOW + lease_ms
  -- While a cancel's cascade is under way, a job it is about to reach is cancelled here
  -- instead of started (queue_core::backend::CANCEL_STEP).
  local cascading = redis.call('EXISTS', KEY.cascade) == 1
  -- Leases the popped job `id` (false: a cascade's, cancelled instead).
  local function take(id, seq, group)
    if cascading and doomed(KEY, id) then
      release_group_slot(KEY, group)
      cancel_job(KEY, id, job_key(id))
      return false
    end
    local token = token_base .. ':' .. (#out + 1)
    leases[#leases + 1] = id
    leases[#leases + 1] = lease_string(token, expires, lease_ms, NOW, seq, false, group,
      claim_id, worker)
    active[#active + 1] = expires
    active[#active + 1] = id
    claimed[#claimed + 1] = 0
    claimed[#claimed + 1] = prefix .. id
    emit_transition(KEY, id, 'queued', 'processing')
    out[#out + 1] = { id, token, NOW, expires, 0 }
    return true
  end
  -- queue_core::backend group rules: per band, the lane with the lowest ticket starts its
  -- first job and takes the next ticket; the jobs without a group win a tie.
  local tickets = nil
  for band = 0, 2 do
    if #out >= max or blocked then break end
    local ready, lanes = ready_key(KEY, band), lanes_key(KEY, band)
    if redis.call('EXISTS', lanes) == 0 then
      -- No group has a lane here: today's pop, in one call (one by one under a rate
      -- limit: each cost must fit).
      local popped
      if limited then
        popped = {}
        while #out + #popped / 2 < max do
          local head = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
          if #head == 0 or not fits(head[1]) then break end
          redis.call('ZREM', ready, head[1])
          popped[#popped + 1] = head[1]
          popped[#popped + 1] = head[2]
        end
      else
        popped = redis.call('ZPOPMIN', ready, max - #out)
      end
      if #popped > 0 then
        TICK = current_tick(KEY) + #popped / 2
        tickets = tickets or {}
        tickets[#tickets + 1] = 'ut' .. band
        tickets[#tickets + 1] = TICK
        for j = 1, #popped, 2 do take(popped[j], popped[j + 1], nil) end
      end
    else
      local waiting = redis.call('ZCARD', ready)
      local ut = tonumber(redis.call('HGET', KEY.meta, 'ut' .. band) or '0') or 0
      local served_ungrouped = false
      while #out < max and not blocked do
        -- The first two lanes: with one lane alone (and no job without a group waiting),
        -- every start of this claim goes to it, so they are taken in one call.
        local head = redis.call('ZRANGE', lanes, 0, 1, 'WITHSCORES')
        if #head == 0 and waiting == 0 then break end
        current_tick(KEY)
        if waiting > 0 and (#head == 0 or ungrouped_goes_first(ut, tonumber(head[2]))) then
          local first = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
          if not fits(first[1]) then break end
          redis.call('ZREM', ready, first[1])
          waiting = waiting - 1
          TICK = TICK + 1
          ut = TICK
          served_ungrouped = true
          take(first[1], first[2], nil)
        else
          local group = head[1]
          local q = group_ready_key(band, group)
          local _, running, limit, group_limited, _, weight = group_admits(KEY, group)
          local popped
          if limited or group_limited or weight then
            -- One at a time: each cost must fit, each start counts in a weighted turn.
            local first = redis.call('ZRANGE', q, 0, 0, 'WITHSCORES')
            if first[1] and not fits(first[1]) then break end
            if first[1] then redis.call('ZREM', q, first[1]) end
            popped = first
          else
            local n = 1
            if #head == 2 and waiting == 0 then
              n = max - #out
              if limit then n = math.min(n, limit - running) end
            end
            popped = redis.call('ZPOPMIN', q, math.max(n, 1))
          end
          local took = #popped / 2
          if took == 0 then
            -- A lane left without jobs (it cannot be, but must not stop the claim).
            redis.call('ZREM', lanes, group)
          else
            TICK = TICK + took
            redis.call('HINCRBY', KEY.groups, 'run:' .. group, took)
            later_group_ready(band, -took)
            local leased, spared = 0, false
            for j = 1, #popped, 2 do
              if take(popped[j], popped[j + 1], group) then leased = leased + 1 else spared = true end
            end
            -- Its lane takes the new ticket, or keeps its own within a weighted turn.
            local stamp = weighted_turn(KEY, group, weight)
            if group_limited then
              -- Its rate log, then its lanes as its next job's cost allows.
              local log, rper = group_rate_key(group), tonumber(redis.call('HGET', KEY.groups, 'rper:' .. group))
              log_prune(log, window_floor(NOW, rper), KEY.groups, 'rx:' .. group)
              if leased > 0 then
                log_add(log, { { out[#out][2], job_cost(popped[1]) } }, KEY.groups, 'rx:' .. group)
              end
              if stamp and redis.call('EXISTS', q) == 1 then redis.call('ZADD', lanes, TICK, group) end
              refresh_group(KEY, group)
            elseif limit and running + took >= limit then
              -- At a limit: no lane anywhere until a slot comes back.
              for b = 0, 2 do redis.call('ZREM', lanes_key(KEY, b), group) end
            elseif redis.call('EXISTS', q) == 0 then
              redis.call('ZREM', lanes, group)
            elseif stamp then
              redis.call('ZADD', lanes, TICK, group)
            end
            -- A job a cascade cancelled gave its slot back: the lanes follow what is left.
            if spared then refresh_group(KEY, group) end
          end
        end
      end
      if served_ungrouped then
        tickets = tickets or {}
        tickets[#tickets + 1] = 'ut' .. band
        tickets[#tickets + 1] = ut
      end
    end
  end
  if #out > 0 then redis.call('HSET', KEY.meta, 'tick', TICK, unpack(tickets or {})) end
  if #out > 0 then
    call_chunked('HSET', KEY.leases, leases, 2)
    call_chunked('ZADD', KEY.active, active, 2)
    call_chunked('ZADD', KEY.claimed, claimed, 2)
    if limited then
      local starts = {}
      for i, c in ipairs(out) do starts[i] = { c[2], costs[i] } end
      log_add(KEY.rate, starts, KEY.meta, 'rate_extra')
    end
  end
  -- All it asked for, and maybe more left: let another fetcher look.
  if chain and #out == want then wake() end
  return with_records(out, true)
end
