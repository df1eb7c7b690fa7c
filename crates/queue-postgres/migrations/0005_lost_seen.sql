-- Version 5: a worker's claim history goes once, at the first heartbeat after its
-- liveness ended, as on every backend: the queue keeps the time of its last heartbeat,
-- and a beat forgets the history of the workers whose liveness ended since then (a lost
-- worker that claims again keeps that claim's history).
ALTER TABLE {schema}.queues ADD COLUMN IF NOT EXISTS lost_seen bigint NOT NULL DEFAULT 0;
