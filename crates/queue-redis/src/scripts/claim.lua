-- Leases up to `max` jobs. ARGV: 3 worker, 4 claim id, 5 token base, 6 lease_ms, 7 max.
-- Returns {now, when to look again ('' if no delayed job and no rate limit holds back),
-- {{id, token, started, expires, cancel}...}}.
local leased = claim(KEY, ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), true)
-- When to look again if nothing was taken: a delayed job's due time, or when the rate
-- limit next allows a start, whichever comes first.
local due = next_due(KEY)
if RATE_NEXT and (due == '' or RATE_NEXT < tonumber(due)) then due = RATE_NEXT end
-- Or when a group held back by time may start again.
local timed = redis.call('ZRANGE', KEY.gheld, 0, 0, 'WITHSCORES')
if timed[2] and (due == '' or tonumber(timed[2]) < tonumber(due)) then due = timed[2] end
return { NOW, due, leased }
