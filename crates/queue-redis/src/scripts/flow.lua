-- Creates a flow whole (ARGV 4 = '') or adds children to a queued job (ARGV 4 = its id),
-- atomically: every job is checked first, and one refusal creates nothing. KEYS after the
-- statics: the target's key (when adding), then each job's key and history key as in
-- enqueue.lua. ARGV: 3 count, 4 target id, then per job the JOB_ARGS values of check_new and 3
-- more: its parent ('' = the flow's root, or a direct child of the target; else the
-- 1-based number of its parent in this call, which comes before it), its policy ('' =
-- fail_parent), how many children it has.
-- Returns {now, answer}: {'ok'} | {'exists', id} (the root's id is taken: nothing created) |
-- {'missing'} | {'refused', status} (the target is not queued) | {'chained', after} (the
-- target waits for job `after`) | {i, check_new's answer}
-- (job i was refused).
local count = tonumber(ARGV[3])
local target = ARGV[4]
if target == '' then target = nil end
local function base(i) return 5 + i * (JOB_ARGS + 3) end
local tkey, trec
if target then
  tkey = KEYS[NSTATIC + 1]
  if key_type(tkey) ~= 'hash' then return { NOW, { 'missing' } } end
  trec = facts(tkey)
  local status = current_status(KEY, target, trec) or ''
  if not ACCEPTS_CHILDREN[status] then return { NOW, { 'refused', status } } end
  -- A job waiting for another to end takes no children (queue_core::backend::
  -- check_takes_children).
  if trec.after then return { NOW, { 'chained', trec.after } } end
elseif redis.call('EXISTS', KEYS[tonumber(ARGV[base(0) + 9])]) == 1 then
  return { NOW, { 'exists', ARGV[base(0)] } }
end
for i = 0, count - 1 do
  local refused = check_new(KEY, KEYS, ARGV, base(i))
  if refused then return { NOW, { i + 1, refused } } end
end
local ready = {}
local top = 0
for i = 0, count - 1 do
  local b = base(i)
  local up = ARGV[b + JOB_ARGS]
  local parent = target
  if up ~= '' then parent = ARGV[base(tonumber(up) - 1)] else top = top + 1 end
  ready[#ready + 1] = create_new(KEY, KEYS, ARGV, b, parent, ARGV[b + JOB_ARGS + 1],
    tonumber(ARGV[b + JOB_ARGS + 2]))
end
-- The new jobs take their places first, then the target is held: a group whose ready job
-- becomes a parent and gains a ready child keeps its lane (and its turn).
place_new(KEY, ready, count)
if target and top > 0 then hold(KEY, target, tkey, trec, top) end
return { NOW, { 'ok' } }
