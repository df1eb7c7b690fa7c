-- Version 3: nothing a claim writes on every call is a row updated in place. While a long
-- transaction holds the xmin horizon, no old row version can be removed, and a row
-- updated by every claim (the queue's ticks, a worker's last claim request) grows a chain
-- of versions that every later claim walks to find the live one; and the index entries
-- of leased jobs cannot be marked dead, so a scan of the ready jobs from the index's start
-- walks every job leased since. Claims slowed in proportion to the work done.
--
-- `cursors`: each claim adds a row (under the queue's row lock, `n` one past the last)
-- and the next reads the newest (a backward index scan meets it first); the folder
-- deletes the older ones. It holds the fair-share ticks (moved here from `queues`) and
-- the floors: per band, where claims scan the ready jobs without a group from (every one
-- below it has been announced by a wake-up carrying its place, or is found by the next
-- sweep); the delayed jobs' due floor; when a claim last scanned from the start
-- (`floors::SWEEP`).
CREATE TABLE {schema}.cursors (
    queue     text     NOT NULL,
    n         bigint   NOT NULL,
    tick      bigint   NOT NULL,
    ungrouped bigint[] NOT NULL,
    floors    bigint[] NOT NULL,
    due_floor bigint   NOT NULL,
    swept_ms  bigint   NOT NULL,
    PRIMARY KEY (queue, n)
);
INSERT INTO {schema}.cursors (queue, n, tick, ungrouped, floors, due_floor, swept_ms)
SELECT queue, 1, tick, ungrouped, '{0,0,0}', 0, 0 FROM {schema}.queues;
ALTER TABLE {schema}.queues DROP COLUMN tick, DROP COLUMN ungrouped;

-- A worker's claim requests: one row per request (the newest read first), the older
-- deleted by the folder.
ALTER TABLE {schema}.claims DROP CONSTRAINT claims_pkey;
ALTER TABLE {schema}.claims ADD PRIMARY KEY (queue, worker, last_id);
