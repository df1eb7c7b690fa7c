-- Workers: `workers` holds each live worker by the end of its liveness window.
-- queue_core::backend::worker_listing: a worker is listed (alive, or lost for at most
-- LOST_WORKER_KEPT_MS) while the end of its window is at or after this time.
local function workers_listed_from(now) return now - LOST_WORKER_KEPT_MS end
