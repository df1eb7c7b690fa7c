-- Read only. Returns {now, ids and liveness deadlines (WITHSCORES) of workers alive or lost
-- within LOST_WORKER_KEPT_MS, per listed worker (in that order) the ids of the jobs it
-- holds}: each worker's jobs are one range of `claimed`, so nothing reads every lease.
local listed = redis.call('ZRANGEBYSCORE', KEY.workers, workers_listed_from(NOW), '+inf', 'WITHSCORES')
local held = {}
for i = 1, #listed, 2 do
  local w = listed[i]
  local prefix = #w .. ':' .. w .. '|'
  local jobs = {}
  for _, m in ipairs(redis.call('ZRANGEBYLEX', KEY.claimed, '[' .. prefix, '(' .. prefix .. '\255')) do
    jobs[#jobs + 1] = string.match(m, '|([^|]*)$')
  end
  held[#held + 1] = jobs
end
return { NOW, listed, held }
