-- ARGV: 3 worker, 4 token base, 5 lease_ms, 6 max, 7 retention_ms.
-- Returns {now, next delayed due ('' if none), {{id, fields}...}}.
local leased = claim(ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), true)
return { NOW, next_due(), leased }
