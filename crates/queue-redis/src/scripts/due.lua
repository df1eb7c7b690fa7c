-- Read only. ARGV: 3 retention_ms, 4 limit. Returns the ids of finished jobs older than
-- the retention, oldest first: from the finished status sets (scored by when each job
-- finished).
local cutoff, limit = retention_cutoff(NOW, tonumber(ARGV[3])), tonumber(ARGV[4])
local all = {}
for s, _ in pairs(TERMINAL) do
  local raw = redis.call('ZRANGE', status_key(KEY, s), '-inf', cutoff, 'BYSCORE', 'LIMIT', 0,
    limit, 'WITHSCORES')
  for i = 1, #raw, 2 do all[#all + 1] = { tonumber(raw[i + 1]), raw[i] } end
end
table.sort(all, function(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] < b[2]
end)
local out, seen = {}, {}
for _, e in ipairs(all) do
  if #out >= limit then break end
  if not seen[e[2]] then
    seen[e[2]] = true
    out[#out + 1] = e[2]
  end
end
return out
