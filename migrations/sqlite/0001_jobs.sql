-- The durable job table (SQLite). Times are integer microseconds since the Unix epoch (UTC).
-- States are a closed set (see jobs/src/state.rs and the README).
CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    queue         TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    payload       TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN
        ('scheduled', 'available', 'running', 'retrying', 'done', 'dead', 'cancelled')),
    priority      INTEGER NOT NULL DEFAULT 0,
    attempt       INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts  INTEGER NOT NULL CHECK (max_attempts > 0),
    timeout_ms    INTEGER,
    unique_key    TEXT,
    run_at        INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    attempted_at  INTEGER,
    heartbeat_at  INTEGER,
    finished_at   INTEGER,
    locked_by     TEXT,
    last_error    TEXT,
    errors        TEXT    NOT NULL DEFAULT '[]'
);

CREATE INDEX jobs_waiting ON jobs (queue, priority DESC, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retrying');
CREATE INDEX jobs_future ON jobs (queue, run_at) WHERE state IN ('scheduled', 'retrying');
CREATE INDEX jobs_running ON jobs (heartbeat_at) WHERE state = 'running';
-- Operator views and retention of dead and cancelled jobs. Done jobs are left out on purpose:
-- every job ends done, and one index entry fewer per job is worth more than an index for
-- pruning them, which walks the primary key from the oldest id instead.
CREATE INDEX jobs_final ON jobs (state, finished_at) WHERE state IN ('dead', 'cancelled');
CREATE UNIQUE INDEX jobs_unique_key ON jobs (unique_key) WHERE unique_key IS NOT NULL;
