-- Conversation audio: how an upload's speakers are told apart, and what transcription found.
-- `channels` names each channel's speaker in channel order ("user,partner"); `user_speaker`
-- says which voice of a mono two-person recording is the user's, by order of first speech.
ALTER TABLE sessions ADD COLUMN channels TEXT;
ALTER TABLE sessions ADD COLUMN user_speaker TEXT CHECK (user_speaker IN ('first', 'second'));
-- How the transcript's speakers were attributed: {"method", "status", "count", "reason"}.
ALTER TABLE transcripts ADD COLUMN speakers JSONB;
