-- Role-play audio held until its transcript arrives (see the Postgres migration).
CREATE TABLE pending_call_audio (
    source           TEXT    NOT NULL,
    conversation_id  TEXT    NOT NULL,
    audio_ref        TEXT    NOT NULL,
    audio_type       TEXT    NOT NULL,
    received_at      INTEGER NOT NULL,
    PRIMARY KEY (source, conversation_id)
);
CREATE INDEX pending_call_audio_received ON pending_call_audio (received_at);

ALTER TABLE roleplays ADD COLUMN failed_at INTEGER;
ALTER TABLE roleplays ADD COLUMN failure_reason TEXT;
