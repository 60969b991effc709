-- See the Postgres migration.
ALTER TABLE sessions ADD COLUMN channels TEXT;
ALTER TABLE sessions ADD COLUMN user_speaker TEXT CHECK (user_speaker IN ('first', 'second'));
ALTER TABLE transcripts ADD COLUMN speakers TEXT;
