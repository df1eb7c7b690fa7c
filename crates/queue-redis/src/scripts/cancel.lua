-- Cancels a job, as queue_core::rules::on_cancel decides. KEYS after the statics: the
-- job's key. ARGV: 3 id. Returns {'cancelled'} | {'requested'} | {'missing'} |
-- {'invalid', status}.
local id = ARGV[3]
local key = KEYS[NS + 1]
if key_type(key) ~= 'hash' then return { 'missing' } end
local rec = facts(key)
local l = read_lease(K, id)
local status = rec.status
if l then status = 'processing' end
local action = CANCEL[status or ''] and CANCEL[status][l ~= nil and l.cancel]
if action == 'cancel' then
  redis.call('ZREM', ready_key(K, rec.band), id)
  redis.call('ZREM', delayed_key(K, rec.band), id)
  redis.call('ZREM', K.st_queued, id)
  local set = {}
  apply_effect('cancel', set, { now = NOW, retry_count = rec.retries })
  set.status = 'cancelled'
  place(K, id, 'cancel', 'cancelled', rec, {}, nil)
  hset(key, set, rec.present)
  emit_transition(K, id, 'queued', 'cancelled')
  return { 'cancelled' }
elseif action == 'request' then
  l.cancel = true
  write_lease(K, id, l)
  redis.call('PUBLISH', P .. 'cancel', id)
  emit(K, id, 'cancel_requested', {})
  return { 'requested' }
elseif action == 'already_requested' then
  return { 'requested' }
end
return { 'invalid', status or '' }
