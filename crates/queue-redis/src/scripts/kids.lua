-- Read only. A page of a parent's children, oldest first (`kids:<id>`, by creation then
-- id). KEYS after the statics: the parent's key, its children's key. ARGV: 3 the cursor's
-- created ms ('' = from the first), 4 its id, 5 how many. Returns {1 when the parent
-- exists, else 0, {id, created ms}...}: `how many` entries after the cursor, found by a
-- binary search (`rank_after`), so a page costs the same in a family of any size.
local parent, kids = KEYS[NSTATIC + 1], KEYS[NSTATIC + 2]
local exists = redis.call('EXISTS', parent)
local start = 0
if ARGV[3] ~= '' then start = rank_after(kids, tonumber(ARGV[3]), ARGV[4]) end
return { exists, redis.call('ZRANGE', kids, start, start + tonumber(ARGV[5]) - 1, 'WITHSCORES') }
