-- See the Postgres migration. Times are integer microseconds since the Unix epoch.
ALTER TABLE sessions ADD COLUMN audio_ref        TEXT;
ALTER TABLE sessions ADD COLUMN audio_type       TEXT;
ALTER TABLE sessions ADD COLUMN duration_seconds REAL;
ALTER TABLE sessions ADD COLUMN external_id      TEXT;
ALTER TABLE sessions ADD COLUMN error            TEXT;
CREATE UNIQUE INDEX sessions_external_id ON sessions (source, external_id) WHERE external_id IS NOT NULL;

CREATE TABLE profiles (
    id          TEXT    PRIMARY KEY,
    company_id  TEXT    NOT NULL,
    email       TEXT,
    role        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX profiles_company ON profiles (company_id);

CREATE TABLE usage_records (
    session_id   TEXT    PRIMARY KEY,
    company_id   TEXT    NOT NULL,
    profile_id   TEXT    NOT NULL,
    seconds      REAL    NOT NULL,
    recorded_at  INTEGER NOT NULL
);
CREATE INDEX usage_records_company_time ON usage_records (company_id, recorded_at);
