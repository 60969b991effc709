-- The operators' console: paused queues and per-minute activity (see the Postgres migration
-- for what each holds). Search on the embedded database scans: one process, small tables.

CREATE TABLE queue_pauses (
    queue      TEXT PRIMARY KEY,
    paused_at  INTEGER NOT NULL,
    paused_by  TEXT    NOT NULL
);

CREATE TABLE job_stats_minute (
    minute    INTEGER NOT NULL,
    queue     TEXT    NOT NULL,
    enqueued  INTEGER NOT NULL DEFAULT 0,
    done      INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0,
    dead      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, queue)
);

CREATE INDEX jobs_state_newest ON jobs (state, id) WHERE state <> 'done';
