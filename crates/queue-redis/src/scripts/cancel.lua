-- Cancels a job, as queue_core::rules::on_cancel decides (`cancel_job` in the prelude),
-- and a cancelled parent's unfinished children. KEYS after the statics: the job's key.
-- ARGV: 3 id. Returns {'cancelled'} | {'requested'} | {'missing'} | {'invalid', status}.
local id = ARGV[3]
local out = cancel_job(KEY, id, KEYS[NSTATIC + 1])
if out[1] == 'cancelled' then cancel_children(KEY, id) end
return out
