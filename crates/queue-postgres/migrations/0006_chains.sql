-- Version 6: chains. A job waiting for another to end (keep-latest's next run) names it in
-- its record (`after`); when that job ends, the waiting one is found by this index.
CREATE INDEX IF NOT EXISTS jobs_after ON {schema}.jobs ((state->>'after'))
    WHERE state ? 'after';
