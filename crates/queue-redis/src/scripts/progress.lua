-- ARGV: 3 id, 4 token, 5 percent, 6 has step ('1'/'0'), 7 step.
-- Returns {'lost'} or {'ok', cancel requested 1/0}.
local id = ARGV[3]
local h = held(id, ARGV[4])
if not h then return { 'lost' } end
local key = jk(id)
local value = math.max(num(redis.call('HGET', key, 'progress'), 0), tonumber(ARGV[5]))
redis.call('HSET', key, 'progress', value)
if ARGV[6] == '1' then redis.call('HSET', key, 'current_step', ARGV[7]) end
extend(id, NOW + h.lease_ms)
local step = redis.call('HGET', key, 'current_step')
if step == '' then step = nil end
emit(id, 'progress', { progress = value, step = step or nil })
local cancel = 0
if h.cancel then cancel = 1 end
return { 'ok', cancel }
