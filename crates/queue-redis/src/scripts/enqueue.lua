-- Creates jobs, each on its own. KEYS after the statics: each job's key, and its unique
-- key's history key when it has one. ARGV: 3 count, then per job the 14 values `check_new`
-- (prelude) reads. Returns {now, {code, id}...}: ok, or the answer of check_new.
local count = tonumber(ARGV[3])
local out = {}
local created = 0
-- Ready jobs get their places in one INCRBY once all are known (in order).
local ready = {}
for i = 0, count - 1 do
  local b = 4 + i * 14
  local refused = check_new(KEY, KEYS, ARGV, b)
  if refused then
    out[#out + 1] = refused
  else
    ready[#ready + 1] = create_new(KEY, KEYS, ARGV, b, nil, '', 0)
    created = created + 1
    out[#out + 1] = { 'ok', ARGV[b] }
  end
end
place_new(KEY, ready, created)
return { NOW, out }
