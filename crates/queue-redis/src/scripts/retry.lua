-- Manual retry of a finished, unsuccessful job (`manual_retry` in the prelude; a parent
-- with unfinished children waits on them, a child re-opens its parent's wait). KEYS after
-- the statics: the job's key. ARGV: 3 id, 4 band ('' keeps the priority). Returns
-- {'ok', fields} | {'missing'} | {'invalid', status} | {'dup', holder}.
local id = ARGV[3]
local key = KEYS[NSTATIC + 1]
if key_type(key) ~= 'hash' then return { 'missing' } end
local rec = facts(key)
local status = current_status(KEY, id, rec)
if not (NEXT[status or ''] and NEXT[status]['manual_retry']) then return { 'invalid', status or '' } end
local out = manual_retry(KEY, id, key, rec, status, tonumber(ARGV[4]))
if out[1] ~= 'ok' then return out end
return { 'ok', redis.call('HGETALL', key) }
