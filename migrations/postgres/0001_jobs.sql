-- The durable job table. States are a closed set (see jobs/src/state.rs and the README):
-- scheduled → available → running → done | retrying → available … | dead; any → cancelled.
CREATE TABLE jobs (
    id            BIGSERIAL PRIMARY KEY,
    queue         TEXT        NOT NULL,
    kind          TEXT        NOT NULL,
    payload       JSONB       NOT NULL,
    state         TEXT        NOT NULL,
    priority      SMALLINT    NOT NULL DEFAULT 0,
    attempt       INTEGER     NOT NULL DEFAULT 0,
    max_attempts  INTEGER     NOT NULL,
    timeout_ms    BIGINT,
    unique_key    TEXT,
    run_at        TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    attempted_at  TIMESTAMPTZ,
    heartbeat_at  TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ,
    locked_by     TEXT,
    last_error    TEXT,
    errors        JSONB       NOT NULL DEFAULT '[]'::jsonb,
    CONSTRAINT jobs_state_known CHECK (state IN
        ('scheduled', 'available', 'running', 'retrying', 'done', 'dead', 'cancelled')),
    CONSTRAINT jobs_attempts_positive CHECK (max_attempts > 0 AND attempt >= 0)
);

-- Fetch path: only waiting jobs are indexed, in claim order.
CREATE INDEX jobs_waiting ON jobs (queue, priority DESC, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retrying');
-- Idle fetchers sleep until the next scheduled or retrying job is due.
CREATE INDEX jobs_future ON jobs (queue, run_at) WHERE state IN ('scheduled', 'retrying');
-- Rescue path: running jobs by heartbeat.
CREATE INDEX jobs_running ON jobs (heartbeat_at) WHERE state = 'running';
-- Retention and operator views of final states.
-- Operator views and retention of dead and cancelled jobs. Done jobs are left out on purpose:
-- every job ends done, and one index entry fewer per job is worth more than an index for
-- pruning them, which walks the primary key from the oldest id instead.
CREATE INDEX jobs_final ON jobs (state, finished_at) WHERE state IN ('dead', 'cancelled');
-- Unique jobs: a second enqueue with the same key returns the first job.
CREATE UNIQUE INDEX jobs_unique_key ON jobs (unique_key) WHERE unique_key IS NOT NULL;
