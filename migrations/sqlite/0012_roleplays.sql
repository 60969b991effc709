-- Role-play conversations voxline has issued a ticket for (see the Postgres migration).
CREATE TABLE roleplays (
    id               TEXT    PRIMARY KEY,
    company_id       TEXT    NOT NULL,
    profile_id       TEXT    NOT NULL,
    kind             TEXT    NOT NULL CHECK (kind IN ('sales', 'interview', 'presentation', 'custom')),
    title            TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    conversation_id  TEXT,
    used_at          INTEGER
);
CREATE INDEX roleplays_profile ON roleplays (company_id, profile_id);
