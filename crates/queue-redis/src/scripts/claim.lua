-- Leases up to `max` jobs. ARGV: 3 worker, 4 claim id, 5 token base, 6 lease_ms, 7 max.
-- Returns {now, next delayed due ('' if none), {{id, token, started, expires, cancel}...}}.
local leased = claim(KEY, ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), true)
return { NOW, next_due(KEY), leased }
