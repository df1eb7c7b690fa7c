-- Version 6: chains and sequences. A job waiting for another to end (keep-latest's next run) names it in
-- its record (`after`); when that job ends, the waiting one is found by this index.
CREATE INDEX IF NOT EXISTS jobs_after ON {schema}.jobs ((state->>'after'))
    WHERE state ? 'after';
-- Sequences: each one's newest unfinished member (its tail), which the next member is
-- chained behind. Written under a transaction lock on (queue, sequence), so members joining
-- one sequence at once form one line.
CREATE TABLE IF NOT EXISTS {schema}.sequences (
    queue text NOT NULL,
    name  text NOT NULL,
    tail  uuid NOT NULL,
    PRIMARY KEY (queue, name)
);
CREATE INDEX IF NOT EXISTS sequences_tail ON {schema}.sequences (queue, tail);
