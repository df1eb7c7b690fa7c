-- The charts' buckets (queue_core::series): fields added in this call, sent by flush.
local function series_add(field, by) PENDING.series[field] = (PENDING.series[field] or 0) + (by or 1) end

-- queue_core::series::latency_bin: the first bound at or above `ms` (the last bin beyond).
local function latency_bin(ms)
  for i, b in ipairs(LATENCY_BOUNDS) do
    if ms <= b then return i - 1 end
  end
  return #LATENCY_BOUNDS
end

-- How many jobs wait: scheduled (delayed, with the delayed jobs of groups) and a function
-- of the band for the ready ones (ready jobs of groups wait in their groups' sets, counted
-- per band in `groups`).
local function depth(KEY)
  local function card(key) return redis.call('ZCARD', key) end
  local scheduled = card(KEY.delayed0) + card(KEY.delayed1) + card(KEY.delayed2) + card(KEY.gdelayed)
  local grouped = redis.call('HMGET', KEY.groups, 'ready:0', 'ready:1', 'ready:2')
  return scheduled, function(band) return card(ready_key(KEY, band)) + num(grouped[band + 1], 0) end
end

-- A heartbeat samples the depth into the charts' current buckets (queue_core::series
-- GAUGES), written by flush.
local function sample_depth(KEY)
  local scheduled, ready = depth(KEY)
  local s = { 'g_scheduled', scheduled, 'g_running', redis.call('ZCARD', KEY.active) }
  for band = 0, 2 do
    s[#s + 1] = 'g_' .. PNAME[band]
    s[#s + 1] = ready(band)
  end
  PENDING.sampled = s
end

-- queue_core::SeriesSpan::{bucket, expires_at}: the bucket of a span of `step` ms holding
-- time `ms`, and when a bucket is dropped (`keep` ms after its interval ended).
local function bucket_of(ms, step) return math.floor(ms / step) end
local function bucket_expiry(index, step, keep) return (index + 1) * step + keep end
