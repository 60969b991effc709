-- Role-play conversations voxline has issued a ticket for (POST /api/roleplays). The ticket,
-- signed by voxline, travels through the ElevenLabs conversation as a dynamic variable and
-- comes back in the post-call webhook: the session is created for the ticket's profile, never
-- for whatever profile the (client-set) variables name. `conversation_id` is set by the first
-- webhook that uses the ticket: a ticket is good for one conversation.
CREATE TABLE roleplays (
    id               TEXT        PRIMARY KEY,
    company_id       TEXT        NOT NULL,
    profile_id       TEXT        NOT NULL,
    kind             TEXT        NOT NULL CHECK (kind IN ('sales', 'interview', 'presentation', 'custom')),
    title            TEXT        NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at       TIMESTAMPTZ NOT NULL,
    conversation_id  TEXT,
    used_at          TIMESTAMPTZ
);
CREATE INDEX roleplays_profile ON roleplays (company_id, profile_id);

ALTER TABLE roleplays ENABLE ROW LEVEL SECURITY;
ALTER TABLE roleplays FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON roleplays
    USING (current_setting('app.scope', true) = 'platform'
           OR company_id = NULLIF(current_setting('app.company_id', true), ''))
    WITH CHECK (current_setting('app.scope', true) = 'platform'
           OR company_id = NULLIF(current_setting('app.company_id', true), ''));
