-- Role-play audio (ElevenLabs' post_call_audio) that arrived before the conversation's
-- transcript made its session: held here by conversation id until the transcript comes and
-- takes it (the row is then deleted in the same transaction). No company column: whose audio
-- it is is only known from the transcript's ticket, so nothing here is a tenant's row; only
-- the blob key is stored, the audio itself lives in the blob store. Retention removes rows
-- (and blobs) no transcript claimed.
CREATE TABLE pending_call_audio (
    source           TEXT        NOT NULL,
    conversation_id  TEXT        NOT NULL,
    audio_ref        TEXT        NOT NULL,
    audio_type       TEXT        NOT NULL,
    received_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (source, conversation_id)
);
CREATE INDEX pending_call_audio_received ON pending_call_audio (received_at);

-- A role-play whose call ElevenLabs could not start (call_initiation_failure).
ALTER TABLE roleplays ADD COLUMN failed_at TIMESTAMPTZ;
ALTER TABLE roleplays ADD COLUMN failure_reason TEXT;
