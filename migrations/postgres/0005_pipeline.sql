-- The session pipeline: audio uploads, provider sessions (ElevenLabs), failure reasons,
-- profiles seen in tokens, and usage per analysed session.
ALTER TABLE sessions ADD COLUMN audio_ref        TEXT;
ALTER TABLE sessions ADD COLUMN audio_type       TEXT;
ALTER TABLE sessions ADD COLUMN duration_seconds DOUBLE PRECISION;
-- The provider's id for sessions that came from a webhook (ElevenLabs conversation id):
-- a redelivered webhook finds the session it already made.
ALTER TABLE sessions ADD COLUMN external_id      TEXT;
ALTER TABLE sessions ADD COLUMN error            TEXT;
CREATE UNIQUE INDEX sessions_external_id ON sessions (source, external_id) WHERE external_id IS NOT NULL;

-- A profile is created the first time a valid token names it (and refreshed when its email
-- changes); webhooks find the company of a profile here.
CREATE TABLE profiles (
    id          TEXT        PRIMARY KEY,
    company_id  TEXT        NOT NULL,
    email       TEXT,
    role        TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX profiles_company ON profiles (company_id);

-- One row per analysed session (its id is the key, so a retried job records it once).
CREATE TABLE usage_records (
    session_id   TEXT             PRIMARY KEY,
    company_id   TEXT             NOT NULL,
    profile_id   TEXT             NOT NULL,
    seconds      DOUBLE PRECISION NOT NULL,
    recorded_at  TIMESTAMPTZ      NOT NULL DEFAULT now()
);
CREATE INDEX usage_records_company_time ON usage_records (company_id, recorded_at);
