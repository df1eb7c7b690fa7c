-- Cancels a job, as queue_core::rules::on_cancel decides (`cancel_job` in the prelude),
-- then runs one step of the cancels' cascades (a cancelled parent's unfinished
-- descendants: `cascade_step`). KEYS after the statics: the job's key. ARGV: 3 id.
-- Returns {more, 'cancelled'} | {more, 'requested'} | {more, 'missing'} |
-- {more, 'invalid', status}: `more` is 1 while a cascade is left (the caller runs
-- `cascade.lua` until it answers 0).
local out = cancel_job(KEY, ARGV[3], KEYS[NSTATIC + 1])
table.insert(out, 1, cascade_step(KEY))
return out
