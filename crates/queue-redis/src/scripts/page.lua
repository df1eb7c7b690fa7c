-- Read only. One page of one or more indexes (zsets scored by creation time), merged:
-- newest first, ties by id (descending), after a position. KEYS: the indexes (by name).
-- ARGV: 3 position ms ('' = from the newest), 4 position id, 5 how many.
-- Returns {id, score, id, score, ...}, at most that many.
local n = tonumber(ARGV[5])
local at, after = tonumber(ARGV[3]), ARGV[4]
local all = {}
for _, index in ipairs(KEYS) do
  local max, skip = '+inf', 0
  if at then
    max = at
    -- Entries tied with the position are read too, then the ones at or before it dropped.
    skip = redis.call('ZCOUNT', index, at, at)
  end
  local raw = redis.call('ZRANGE', index, max, '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, n + skip,
    'WITHSCORES')
  for i = 1, #raw, 2 do
    local id, score = raw[i], tonumber(raw[i + 1])
    if not at or score < at or (score == at and id < after) then
      all[#all + 1] = { id, score }
    end
  end
end
if #KEYS > 1 then
  table.sort(all, function(a, b)
    if a[2] ~= b[2] then return a[2] > b[2] end
    return a[1] > b[1]
  end)
end
local out = {}
for i = 1, math.min(n, #all) do
  out[#out + 1] = all[i][1]
  out[#out + 1] = all[i][2]
end
return out
