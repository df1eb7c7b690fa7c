-- Progress of an attempt. KEYS after the statics: the job's key. ARGV: 3 id, 4 token,
-- 5 percent, 6 has step ('1'/'0'), 7 step. Returns {'lost'} or {'ok', cancel requested 1/0}.
local id = ARGV[3]
local key = KEYS[NSTATIC + 1]
local l = read_lease(KEY, id)
if not holds(l, ARGV[4]) then return { 'lost' } end
local current = redis.pcall('HMGET', key, 'progress', 'current_step')
if failed(current) then return { 'lost' } end
local value = math.max(num(current[1], 0), tonumber(ARGV[5]))
local step = current[2]
if ARGV[6] == '1' then step = ARGV[7] end
if step and step ~= '' then
  redis.call('HSET', key, 'progress', value, 'current_step', step)
else
  -- No step: none is stored (a record keeps no empty field).
  redis.call('HSET', key, 'progress', value)
  if current[2] then redis.call('HDEL', key, 'current_step') end
end
extend(KEY, id, l, NOW + l.lease_ms)
-- A missing field reads as false: no step is no `step` in the event (not `false`, which
-- no subscriber could read).
if not step or step == '' then step = nil end
emit(KEY, id, 'progress', { progress = value, step = step })
local cancel = 0
if l.cancel then cancel = 1 end
return { 'ok', cancel }
