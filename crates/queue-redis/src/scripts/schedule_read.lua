-- Stored schedules with the clock every scheduler decides on. ARGV: 3 'all' | 'due' |
-- 'one', 4 the limit (due) or the name (one). Returns {now, earliest next run or '',
-- {name, stored form}...}.
local mode = ARGV[3]
local out = {}
if mode == 'all' then
  local all = redis.call('HGETALL', KEY.schedules)
  for i = 1, #all, 2 do out[#out + 1] = { all[i], all[i + 1] } end
elseif mode == 'one' then
  local held = redis.call('HGET', KEY.schedules, ARGV[4])
  if held then out[1] = { ARGV[4], held } end
else
  local due = redis.call('ZRANGEBYSCORE', KEY.sdue, '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[4]))
  for _, name in ipairs(due) do
    local held = redis.call('HGET', KEY.schedules, name)
    if held then out[#out + 1] = { name, held } end
  end
end
local first = redis.call('ZRANGE', KEY.sdue, 0, 0, 'WITHSCORES')
local next_due = ''
if first[2] then next_due = first[2] end
return { NOW, next_due, out }
