-- Read only. KEYS after the statics: each job's key. ARGV: 3 count, then the ids.
-- Returns per job {fields (HGETALL; 'wrongtype' when the key is not a hash), lease ('' = none)}.
local out = {}
for i = 1, tonumber(ARGV[3]) do
  local fields = redis.pcall('HGETALL', KEYS[NSTATIC + i])
  if failed(fields) then fields = 'wrongtype' end
  out[i] = { fields, redis.call('HGET', KEY.leases, ARGV[3 + i]) or '' }
end
return out
