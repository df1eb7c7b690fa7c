-- One compare-and-set of a schedule, with the jobs of its ticks (queue_core::Schedules
-- decides both). ARGV: 3 name, 4 the stored form the writer read ('' = absent), 5 the new
-- stored form ('' = delete), 6 its next run in ms ('' = none), 7 job count, then per job
-- the JOB_ARGS values of check_new (keys as in enqueue.lua). Returns {now, 'conflict'} when the
-- schedule is not what the writer read (nothing written), else {now, 'ok', {code, id}...}
-- with each job's answer as enqueue.lua gives it; {now, 'full'} when it would create a
-- schedule past MAX_SCHEDULES (nothing written).
local name = ARGV[3]
local held = redis.call('HGET', KEY.schedules, name)
if not held then held = '' end
if held ~= ARGV[4] then return { NOW, 'conflict' } end
if held == '' and ARGV[5] ~= '' and redis.call('HLEN', KEY.schedules) >= MAX_SCHEDULES then
  return { NOW, 'full' }
end
if ARGV[5] == '' then
  redis.call('HDEL', KEY.schedules, name)
  redis.call('ZREM', KEY.sdue, name)
else
  redis.call('HSET', KEY.schedules, name, ARGV[5])
  if ARGV[6] == '' then
    redis.call('ZREM', KEY.sdue, name)
  else
    redis.call('ZADD', KEY.sdue, tonumber(ARGV[6]), name)
  end
end
return { NOW, 'ok', create_each(KEY, KEYS, ARGV, 8, tonumber(ARGV[7])) }
