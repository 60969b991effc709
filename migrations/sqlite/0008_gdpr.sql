-- See the Postgres migration. Times are integer microseconds since the Unix epoch.
CREATE TABLE data_exports (
    id          TEXT    PRIMARY KEY,
    company_id  TEXT    NOT NULL,
    profile_id  TEXT    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('pending', 'ready', 'failed')),
    blob_ref    TEXT,
    error       TEXT,
    created_at  INTEGER NOT NULL,
    ready_at    INTEGER,
    expires_at  INTEGER
);
CREATE INDEX data_exports_profile ON data_exports (company_id, profile_id, created_at DESC);
