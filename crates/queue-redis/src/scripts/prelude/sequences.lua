-- Ordered sequences (queue_core::sequences): `KEY.tails`: sequence -> its newest
-- unfinished member (its tail); a member is chained behind it (`chains.lua`).

-- Job `id` joins `sequence` (created, or retried by hand) and becomes its tail: returns the
-- member it waits for (the tail before it), if any.
local function join_sequence(KEY, sequence, id)
  local tail = redis.call('HGET', KEY.tails, sequence)
  redis.call('HSET', KEY.tails, sequence, id)
  if not tail or tail == id then return nil end
  return tail
end

-- Job `id` ended (`rec` = facts before the ending; `rec.after`: the job it still waited
-- for): a sequence whose tail it was has `rec.after` as its tail, or none.
local function tail_ended(KEY, id, rec)
  if rec.sequence and redis.call('HGET', KEY.tails, rec.sequence) == id then
    if rec.after then
      redis.call('HSET', KEY.tails, rec.sequence, rec.after)
    else
      redis.call('HDEL', KEY.tails, rec.sequence)
    end
  end
end
