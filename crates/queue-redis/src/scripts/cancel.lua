-- Cancels a job, as queue_core::rules::on_cancel decides. KEYS after the statics: the
-- job's key. ARGV: 3 id. Returns {'cancelled'} | {'requested'} | {'missing'} |
-- {'invalid', status}.
local id = ARGV[3]
local key = KEYS[NSTATIC + 1]
if key_type(key) ~= 'hash' then return { 'missing' } end
local rec = facts(key)
local l = read_lease(KEY, id)
local status = rec.status
if l then status = 'processing' end
local action = CANCEL[status or ''] and CANCEL[status][l ~= nil and l.cancel]
if action == 'cancel' then
  if rec.group then
    remove_group_ready(KEY, rec.band, rec.group, id)
    redis.call('ZREM', KEY.gdelayed, id)
  else
    redis.call('ZREM', ready_key(KEY, rec.band), id)
    redis.call('ZREM', delayed_key(KEY, rec.band), id)
  end
  redis.call('ZREM', KEY.st_queued, id)
  local set = {}
  apply_effect('cancel', set, { now = NOW, retry_count = rec.retries })
  set.status = 'cancelled'
  place(KEY, id, 'cancel', 'cancelled', rec, {}, nil)
  hset(key, set, rec.present)
  emit_transition(KEY, id, 'queued', 'cancelled')
  return { 'cancelled' }
elseif action == 'request' then
  l.cancel = true
  write_lease(KEY, id, l)
  redis.call('PUBLISH', PREFIX .. 'cancel', id)
  emit(KEY, id, 'cancel_requested', {})
  return { 'requested' }
elseif action == 'already_requested' then
  return { 'requested' }
end
return { 'invalid', status or '' }
