-- See the Postgres migration. Times are integer microseconds since the Unix epoch.
CREATE TABLE sessions (
    id          TEXT    PRIMARY KEY,
    company_id  TEXT    NOT NULL,
    profile_id  TEXT    NOT NULL,
    title       TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('sales', 'interview', 'presentation', 'custom')),
    status      TEXT    NOT NULL CHECK (status IN ('queued', 'transcribing', 'analyzing', 'ready', 'failed')),
    source      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX sessions_company_newest ON sessions (company_id, created_at DESC, id DESC);

CREATE TABLE transcripts (
    session_id  TEXT PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    company_id  TEXT NOT NULL,
    segments    TEXT NOT NULL
);

CREATE TABLE feedback (
    session_id  TEXT    PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    company_id  TEXT    NOT NULL,
    metrics     TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE idempotency_keys (
    company_id    TEXT    NOT NULL,
    profile_id    TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    request_hash  TEXT    NOT NULL,
    status        INTEGER NOT NULL,
    response      TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (company_id, profile_id, key)
);
