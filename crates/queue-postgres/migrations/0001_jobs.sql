-- Version 1: jobs, their places and leases. `{schema}` is the deployment's schema (quoted
-- by the migrator). One schema holds any number of queues (the `queue` column).
--
-- A row's columns are what the queue's statements select and order by; `state` is the
-- rest of the record (queue_core::JobRecord without its payload), written by Rust from
-- the core rules in the same transaction. The payload is its own column, the text the
-- producer sent: written once, never rewritten by a transition (TOASTed apart when large).
CREATE TABLE {schema}.jobs (
    id              uuid PRIMARY KEY,
    queue           text     NOT NULL,
    status          text     NOT NULL,
    -- Priority band (0 high, 1 normal, 2 low) and place within it: a job keeps its place
    -- while it runs, so a release or an expired lease puts it back where it was.
    band            smallint NOT NULL,
    place           bigint   NOT NULL,
    -- Ready to be claimed now (queued, not delayed, not waiting on children).
    ready           boolean  NOT NULL,
    -- Queued until this time (ms since the epoch, the database's clock).
    due_ms          bigint,
    unique_key      text,
    -- Its group (fair share, concurrency, pause, rate limits) and its cost against rate
    -- limits.
    grp             text,
    cost            integer  NOT NULL DEFAULT 1,
    -- Flows: its parent; whether it waits on unfinished children (queued, not claimable);
    -- whether a cancel's cascade is still cancelling its descendants.
    parent          uuid,
    waiting         boolean  NOT NULL DEFAULT false,
    cascading       boolean  NOT NULL DEFAULT false,
    created_ms      bigint   NOT NULL,
    finished_ms     bigint,
    -- The lease: its token fences every write of the holder; `claim_*` answer a claim
    -- request sent again (its reply was lost) with what the first send took.
    lease_token     text,
    lease_until_ms  bigint,
    -- The lease's length: progress reports renew it by as much.
    lease_ms        bigint,
    claim_worker    text,
    claim_id        bigint,
    claimed_ms      bigint,
    -- The last lease that ended and the status it produced (`<token> <status>`): a finish
    -- sent again is answered with it.
    ended_token     text,
    payload         text     NOT NULL,
    state           jsonb    NOT NULL,
    -- Where listings show it (queue_core::backend::listed_at): when it finished, else
    -- when it was created.
    listed_ms       bigint   GENERATED ALWAYS AS (coalesce(finished_ms, created_ms)) STORED
);

CREATE SEQUENCE {schema}.places;

-- Claims: strict priority, then FIFO; the jobs without a group, and each group's.
CREATE INDEX jobs_ready ON {schema}.jobs (queue, band, place) WHERE ready AND grp IS NULL;
CREATE INDEX jobs_group_ready ON {schema}.jobs (queue, grp, band, place) WHERE ready AND grp IS NOT NULL;
-- A group's running and unfinished jobs.
CREATE INDEX jobs_group_open ON {schema}.jobs (queue, grp) WHERE grp IS NOT NULL AND finished_ms IS NULL;
-- Promotion of due delayed jobs.
CREATE INDEX jobs_due ON {schema}.jobs (queue, due_ms) WHERE due_ms IS NOT NULL;
-- Expired leases, and a claim request's leases.
CREATE INDEX jobs_leased ON {schema}.jobs (queue, lease_until_ms) WHERE lease_token IS NOT NULL;
CREATE INDEX jobs_claims ON {schema}.jobs (queue, claim_worker, claim_id) WHERE lease_token IS NOT NULL;
-- One active job per unique key: held from enqueue until the job finishes. An insert in
-- a transaction not yet committed holds it too (a second insert waits for that commit).
CREATE UNIQUE INDEX jobs_unique_key ON {schema}.jobs (queue, unique_key)
    WHERE unique_key IS NOT NULL AND finished_ms IS NULL;
-- Listings, newest first: every job, one status, one unique key's history.
CREATE INDEX jobs_listed ON {schema}.jobs (queue, listed_ms, id);
CREATE INDEX jobs_by_status ON {schema}.jobs (queue, status, listed_ms, id);
CREATE INDEX jobs_by_key ON {schema}.jobs (queue, unique_key, created_ms, id)
    WHERE unique_key IS NOT NULL;
-- A parent's children, oldest first; the parents waiting on theirs; cascades under way.
CREATE INDEX jobs_children ON {schema}.jobs (parent, created_ms, id) WHERE parent IS NOT NULL;
CREATE INDEX jobs_waiting ON {schema}.jobs (queue, created_ms, id) WHERE waiting;
CREATE INDEX jobs_cascading ON {schema}.jobs (queue) WHERE cascading;
-- Retention.
CREATE INDEX jobs_finished ON {schema}.jobs (queue, finished_ms) WHERE finished_ms IS NOT NULL;

-- Lifetime counters as deltas, added by the transaction that moved them (an enqueue in the
-- application's transaction counts only if it commits) and never updated in place, so
-- concurrent transactions never wait on one counter row; the sweep folds them.
CREATE TABLE {schema}.counts (
    queue   text   NOT NULL,
    name    text   NOT NULL,
    n       bigint NOT NULL
);
CREATE INDEX counts_queue ON {schema}.counts (queue, name);

-- Workers, by their last heartbeat.
CREATE TABLE {schema}.workers (
    queue      text   NOT NULL,
    worker     text   NOT NULL,
    seen_ms    bigint NOT NULL,
    -- Alive until seen_ms + alive_ms (three of its heartbeat intervals).
    alive_ms   bigint NOT NULL,
    info       jsonb  NOT NULL,
    PRIMARY KEY (queue, worker)
);

-- Per worker, the newest claim request seen: a request with an id at or below it is one
-- sent again (its reply was lost) and answers what it took. Forgotten when the worker
-- deregisters or is found dead: a request it sends again then claims anew.
CREATE TABLE {schema}.claims (
    queue   text   NOT NULL,
    worker  text   NOT NULL,
    last_id bigint NOT NULL,
    PRIMARY KEY (queue, worker)
);

-- Events. A transaction that changes a job adds its events to the outbox (they exist only
-- if it commits); the sequencer (whichever process holds the queue's advisory lock) moves
-- them, in the order they were added, into the log with the queue's next sequence numbers:
-- a job's later transition waited for the earlier one's commit, so it was added later and
-- is logged later. The log keeps the last EVENT_LOG_LEN events of the queue.
CREATE TABLE {schema}.outbox (
    n      bigserial PRIMARY KEY,
    queue  text   NOT NULL,
    ms     bigint NOT NULL,
    job    uuid   NOT NULL,
    kind   jsonb  NOT NULL
);
CREATE INDEX outbox_queue ON {schema}.outbox (queue, n);
CREATE TABLE {schema}.events (
    queue  text   NOT NULL,
    seq    bigint NOT NULL,
    ms     bigint NOT NULL,
    job    uuid   NOT NULL,
    kind   jsonb  NOT NULL,
    PRIMARY KEY (queue, seq)
);
-- Per queue: the last sequence number and event time logged, the highest sequence number
-- trimmed from the log, and until when someone follows the queue (events are logged only
-- while someone does, and EVENT_LOG_LINGER after).
CREATE TABLE {schema}.event_heads (
    queue          text   PRIMARY KEY,
    last_seq       bigint NOT NULL DEFAULT 0,
    last_ms        bigint NOT NULL DEFAULT 0,
    dropped_seq    bigint NOT NULL DEFAULT 0,
    followed_until bigint NOT NULL DEFAULT 0
);

-- Per queue: paused, its rate limit, and a handler's hold (no job starts before it).
CREATE TABLE {schema}.queues (
    queue       text    PRIMARY KEY,
    paused      boolean NOT NULL DEFAULT false,
    rate_max    integer,
    rate_per_ms bigint,
    held_until  bigint  NOT NULL DEFAULT 0,
    -- Fair share (queue_core::backend group rules): the ticket of the last start, and per
    -- band the ticket of the last start of a job without a group.
    tick        bigint  NOT NULL DEFAULT 0,
    ungrouped   bigint[] NOT NULL DEFAULT '{0,0,0}'
);
-- Groups' settings and turns (a group without a row has none).
CREATE TABLE {schema}.groups (
    queue       text    NOT NULL,
    grp         text    NOT NULL,
    paused      boolean NOT NULL DEFAULT false,
    concurrency integer,
    weight      integer,
    turn        integer NOT NULL DEFAULT 0,
    rate_max    integer,
    rate_per_ms bigint,
    held_until  bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, grp)
);
-- Per band, the groups that have ready jobs there and admit a start, by ticket: written by
-- claims (under the queue's row lock); a change that stops a group admitting or takes its
-- last ready job of a band away removes its lane at once. A group with ready jobs that
-- admits and has no lane gets one at the current tick when the next claim looks (ticks
-- move only in claims, so that is the tick it would have had).
CREATE TABLE {schema}.lanes (
    queue   text     NOT NULL,
    band    smallint NOT NULL,
    grp     text     NOT NULL,
    ticket  bigint   NOT NULL,
    PRIMARY KEY (queue, band, grp)
);
CREATE TABLE {schema}.group_starts (
    queue  text    NOT NULL,
    grp    text    NOT NULL,
    ms     bigint  NOT NULL,
    cost   integer NOT NULL
);
CREATE INDEX group_starts_grp ON {schema}.group_starts (queue, grp, ms);
-- The starts inside a rate limit's window, with their costs (pruned as the window moves).
CREATE TABLE {schema}.starts (
    queue  text    NOT NULL,
    ms     bigint  NOT NULL,
    cost   integer NOT NULL
);
CREATE INDEX starts_queue ON {schema}.starts (queue, ms);

-- Schedules: stored forms (compared byte for byte by the next write) and next runs.
CREATE TABLE {schema}.schedules (
    queue   text   NOT NULL,
    name    text   NOT NULL,
    stored  text   NOT NULL,
    next_ms bigint,
    PRIMARY KEY (queue, name)
);
CREATE INDEX schedules_next ON {schema}.schedules (queue, next_ms) WHERE next_ms IS NOT NULL;

-- Webhooks, and their outbox: a delivery is written by the transaction that finished the
-- job; due at `due_ms` (claimed ones: when their claim runs out), or parked since
-- `parked_ms`.
CREATE TABLE {schema}.webhooks (
    queue  text  NOT NULL,
    name   text  NOT NULL,
    hook   jsonb NOT NULL,
    PRIMARY KEY (queue, name)
);
CREATE TABLE {schema}.deliveries (
    queue     text   NOT NULL,
    id        text   NOT NULL,
    hook      text   NOT NULL,
    stored    text   NOT NULL,
    due_ms    bigint,
    parked_ms bigint,
    PRIMARY KEY (queue, id)
);
CREATE INDEX deliveries_due ON {schema}.deliveries (queue, due_ms, id) WHERE due_ms IS NOT NULL;
CREATE INDEX deliveries_parked ON {schema}.deliveries (queue, parked_ms, id) WHERE parked_ms IS NOT NULL;
CREATE INDEX deliveries_hook ON {schema}.deliveries (queue, hook);

-- The charts' series: per span ('m' per minute, 'q' per quarter hour) and bucket, counter
-- and latency deltas added by the transactions that moved them (folded by the sweep), and
-- the gauges a heartbeat sampled (the last one stands).
CREATE TABLE {schema}.series (
    queue  text     NOT NULL,
    span   text     NOT NULL,
    bucket bigint   NOT NULL,
    field  text     NOT NULL,
    n      bigint   NOT NULL
);
CREATE INDEX series_bucket ON {schema}.series (queue, span, bucket);
CREATE TABLE {schema}.gauges (
    queue  text     NOT NULL,
    span   text     NOT NULL,
    bucket bigint   NOT NULL,
    field  text     NOT NULL,
    value  bigint   NOT NULL,
    PRIMARY KEY (queue, span, bucket, field)
);
