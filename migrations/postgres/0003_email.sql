-- Per-profile opt-outs by email kind (absent row = enabled).
CREATE TABLE notification_preferences (
    company_id  TEXT        NOT NULL,
    profile_id  TEXT        NOT NULL,
    kind        TEXT        NOT NULL,
    enabled     BOOLEAN     NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (company_id, profile_id, kind)
);

-- One row per (recipient, template, subject): the dedupe key makes a retried job or a
-- duplicated upstream event send at most once.
CREATE TABLE email_log (
    id          BIGSERIAL   PRIMARY KEY,
    dedupe_key  TEXT        NOT NULL UNIQUE,
    company_id  TEXT,
    profile_id  TEXT,
    recipient   TEXT        NOT NULL,
    template    TEXT        NOT NULL,
    subject_id  TEXT        NOT NULL,
    message_id  TEXT        NOT NULL,
    status      TEXT        NOT NULL CHECK (status IN
        ('sending', 'sent', 'failed', 'suppressed_preference', 'suppressed_address')),
    detail      TEXT,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at     TIMESTAMPTZ
);

-- Addresses that bounced permanently (SMTP 5xx): later sends to them are recorded, not sent.
CREATE TABLE email_suppressions (
    address     TEXT        PRIMARY KEY,
    reason      TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
