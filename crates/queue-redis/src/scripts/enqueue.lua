-- Creates jobs, each on its own. KEYS after the statics: each job's key, and its unique
-- key's history key when it has one. ARGV: 3 count, then per job the JOB_ARGS values `check_new`
-- (prelude) reads. Returns {now, {code, id}...}: ok, or the answer of check_new.
return { NOW, create_each(KEY, KEYS, ARGV, 4, tonumber(ARGV[3])) }
