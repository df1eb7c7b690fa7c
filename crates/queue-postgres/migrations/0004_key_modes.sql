-- Version 4: key modes. A debounced enqueue whose key's holder is running creates the next
-- run, which takes the key while the running one goes on: the running row keeps its
-- `unique_key` (its record and the key's history show it) but no longer holds the key
-- (`key_held` false), so the one-active-job-per-key index leaves it out.
ALTER TABLE {schema}.jobs ADD COLUMN IF NOT EXISTS key_held boolean NOT NULL DEFAULT true;
DROP INDEX IF EXISTS {schema}.jobs_unique_key;
CREATE UNIQUE INDEX jobs_unique_key ON {schema}.jobs (queue, unique_key)
    WHERE unique_key IS NOT NULL AND finished_ms IS NULL AND key_held;
