-- Deletes one finished job's record on request, as queue_core::backend::on_delete decides
-- (a running or queued job is refused; so is a finished child of an unfinished parent,
-- which retention keeps: KEEPS_CHILD). KEYS after the statics: the job's key, then its
-- unique key's history key when it has one. ARGV: 3 id, 4 the unique key the caller read
-- ('' = none). Returns {'ok', fields} | {'missing'} | {'active', status} | {'kept'} |
-- {'changed'} (the unique key is not the one declared: read it again).
local id, uk = ARGV[3], ARGV[4]
local key = KEYS[NSTATIC + 1]
if key_type(key) ~= 'hash' then return { 'missing' } end
local v = redis.call('HMGET', key, 'status', 'unique_key', 'parent', 'created_at')
local status, stored_uk, parent, created = v[1] or '', v[2] or '', v[3], num(v[4], 0)
if parent == '' then parent = nil end
if stored_uk ~= uk then return { 'changed' } end
if redis.call('HEXISTS', KEY.leases, id) == 1 or not TERMINAL[status] then
  return { 'active', status }
end
if parent then
  local p = facts(job_key(parent))
  if p and p.exists and is_parent_of(p.created, created) and KEEPS_CHILD[current_status(KEY, parent, p) or ''] then
    return { 'kept' }
  end
end
local fields = redis.call('HGETALL', key)
local history = nil
if uk ~= '' then history = KEYS[NSTATIC + 2] end
delete_job(KEY, id, key, parent, uk, history)
return { 'ok', fields }
