-- Version 3: claims scan the ready jobs without a group from a floor per band instead of
-- from the index's start. While a long transaction holds the xmin horizon, the index
-- entries of claimed rows cannot be removed or marked dead, and a scan from the start
-- visited every one of them: claims slowed in proportion to the jobs processed since the
-- transaction began. `floors` (one per band): every ready job without a group below it
-- has been announced (a wake-up carrying its place) or is found by the next sweep;
-- `due_floor`: the same for the delayed jobs' due times; `swept_ms`: when a claim last
-- scanned from the start (`floors::SWEEP`).
ALTER TABLE {schema}.queues
    ADD COLUMN IF NOT EXISTS floors    bigint[] NOT NULL DEFAULT '{0,0,0}',
    ADD COLUMN IF NOT EXISTS due_floor bigint   NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS swept_ms  bigint   NOT NULL DEFAULT 0;
