-- The operators' console: paused queues, per-minute activity, and the indexes that keep job
-- lists and search fast at a million rows.

-- A queue listed here is not claimed from by any process until its row is deleted (resume);
-- running jobs finish. The claim statement checks it, so a pause holds across processes.
-- Times in this migration's tables are integers (Unix microseconds, and seconds for minutes)
-- on both databases, so the console's SQL is one text for both.
CREATE TABLE queue_pauses (
    queue      TEXT PRIMARY KEY,
    paused_at  BIGINT NOT NULL,
    paused_by  TEXT   NOT NULL
);

-- Per queue and minute (Unix seconds of the minute's start): jobs enqueued, attempts done,
-- failed (to be retried) and jobs that went dead. Written as work happens (the outcomes in the
-- acknowledging statement, enqueues flushed by each process every second), so trends are read
-- without scanning `jobs`, and they outlive the jobs pruned after their retention.
CREATE TABLE job_stats_minute (
    minute    BIGINT NOT NULL,
    queue     TEXT   NOT NULL,
    enqueued  BIGINT NOT NULL DEFAULT 0,
    done      BIGINT NOT NULL DEFAULT 0,
    failed    BIGINT NOT NULL DEFAULT 0,
    dead      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, queue)
);

-- Lists of any state but done, newest first (done jobs are most of the table: the primary
-- key walked backwards finds them at once, and leaving them out keeps the hot path's final
-- update from writing this index).
CREATE INDEX jobs_state_newest ON jobs (state, id) WHERE state <> 'done';
-- The company filter: the tenant is in the payload.
CREATE INDEX jobs_company_newest ON jobs ((payload->>'company_id'), id);
-- Search (`q=`): the words of the kind, the errors and the payload.
CREATE INDEX jobs_search ON jobs USING gin (
    to_tsvector('simple', kind || ' ' || errors::text || ' ' || payload::text));
