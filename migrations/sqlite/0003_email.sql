-- See the Postgres migration. Times are integer microseconds since the Unix epoch.
CREATE TABLE notification_preferences (
    company_id  TEXT    NOT NULL,
    profile_id  TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    enabled     INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (company_id, profile_id, kind)
);

CREATE TABLE email_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key  TEXT    NOT NULL UNIQUE,
    company_id  TEXT,
    profile_id  TEXT,
    recipient   TEXT    NOT NULL,
    template    TEXT    NOT NULL,
    subject_id  TEXT    NOT NULL,
    message_id  TEXT    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN
        ('sending', 'sent', 'failed', 'suppressed_preference', 'suppressed_address')),
    detail      TEXT,
    updated_at  INTEGER NOT NULL,
    sent_at     INTEGER
);

CREATE TABLE email_suppressions (
    address     TEXT    PRIMARY KEY,
    reason      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
