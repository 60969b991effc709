-- Data exports (GDPR access requests): GET /api/me/export starts one, a maintenance job writes
-- the JSON bundle to the blob store, and the same route serves it until it expires.
CREATE TABLE data_exports (
    id          TEXT        PRIMARY KEY,
    company_id  TEXT        NOT NULL,
    profile_id  TEXT        NOT NULL,
    status      TEXT        NOT NULL CHECK (status IN ('pending', 'ready', 'failed')),
    blob_ref    TEXT,
    error       TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    ready_at    TIMESTAMPTZ,
    expires_at  TIMESTAMPTZ
);
CREATE INDEX data_exports_profile ON data_exports (company_id, profile_id, created_at DESC);

ALTER TABLE data_exports ENABLE ROW LEVEL SECURITY;
ALTER TABLE data_exports FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON data_exports
    USING (current_setting('app.scope', true) = 'platform'
           OR company_id = NULLIF(current_setting('app.company_id', true), ''))
    WITH CHECK (current_setting('app.scope', true) = 'platform'
           OR company_id = NULLIF(current_setting('app.company_id', true), ''));
-- (0007's default privileges grant the service's role SELECT, INSERT, UPDATE, DELETE.)
