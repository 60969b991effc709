-- SQLite has no row-level security: the repositories filter every tenant query by company
-- (see the Postgres migration of the same number). These indexes serve erasure and retention.
CREATE INDEX sessions_profile ON sessions (company_id, profile_id);
CREATE INDEX sessions_audio_age ON sessions (created_at) WHERE audio_ref IS NOT NULL;
