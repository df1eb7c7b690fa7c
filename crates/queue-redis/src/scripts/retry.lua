-- Manual retry of a finished, unsuccessful job. KEYS after the statics: the job's key.
-- ARGV: 3 id, 4 band ('' keeps the priority). Returns {'ok', fields} | {'missing'} |
-- {'invalid', status} | {'dup', holder}.
local id = ARGV[3]
local key = KEYS[NSTATIC + 1]
if key_type(key) ~= 'hash' then return { 'missing' } end
local rec = facts(key)
local status = rec.status
if redis.call('HEXISTS', KEY.leases, id) == 1 then status = 'processing' end
if not (NEXT[status or ''] and NEXT[status]['manual_retry']) then return { 'invalid', status or '' } end
if rec.unique_key then
  local holder = redis.call('HGET', KEY.dedup, rec.unique_key)
  if holder and holder ~= id then return { 'dup', holder } end
end
local set = {}
if ARGV[4] ~= '' then
  rec.band = tonumber(ARGV[4])
  set.priority = PNAME[rec.band]
end
apply_effect('manual_retry', set, { now = NOW, retry_count = rec.retries })
set.status = 'queued'
redis.call('ZREM', KEY.finished, id)
redis.call('ZREM', status_key(KEY, status), id)
place(KEY, id, 'manual_retry', 'queued', rec, {}, nil)
if rec.unique_key then redis.call('HSET', KEY.dedup, rec.unique_key, id) end
hset(key, set, rec.present)
emit_transition(KEY, id, status, 'queued')
return { 'ok', redis.call('HGETALL', key) }
