-- Tenancy enforced by the database: the service connects as `voxline_app`, a role that owns
-- nothing, is no superuser and has no BYPASSRLS; these migrations run as the owner (the role in
-- `database.url`). Every tenant table has row-level security ENABLED and FORCED, and its policy
-- lets a row through only when
--   * its company_id equals `app.company_id`, set per transaction with
--     set_config('app.company_id', …, true) by the API and the workers (voxline_domain::db), or
--   * the transaction declared itself platform work (`app.scope` = 'platform': Stripe event
--     mapping, reconciliation, usage reports, retention, operator reads).
-- Neither setting outlives its transaction, so a pooled connection never carries one tenant's
-- setting into another's work, and with neither set a query sees no rows (fail closed).
--
-- Not tenant tables: `jobs` (the engine's queue, whose payloads carry ids, never transcripts),
-- `stripe_events` (an event arrives before voxline knows its company) and `email_suppressions`
-- (bounced addresses, platform-wide). The app role reads and writes them without a policy.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'voxline_app') THEN
        -- LOGIN without a password: with password authentication the operator sets one
        -- (ALTER ROLE voxline_app PASSWORD …) and gives it in database.app_password.
        CREATE ROLE voxline_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
EXCEPTION
    -- Another deployment (or a parallel test schema) created it between the check and here.
    WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

DO $$
DECLARE
    schema_name TEXT := current_schema();
    t TEXT;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO voxline_app', schema_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO voxline_app', schema_name);
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO voxline_app', schema_name);
    -- Tables of later migrations get the same grants (the audit log's are narrowed below).
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO voxline_app', schema_name);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES TO voxline_app', schema_name);

    FOREACH t IN ARRAY ARRAY['sessions', 'transcripts', 'feedback', 'idempotency_keys', 'profiles',
        'usage_records', 'notification_preferences', 'email_log', 'billing_customers',
        'subscriptions', 'usage_reports', 'audit_log']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (current_setting('app.scope', true) = 'platform'
                   OR company_id = NULLIF(current_setting('app.company_id', true), ''))
            WITH CHECK (current_setting('app.scope', true) = 'platform'
                   OR company_id = NULLIF(current_setting('app.company_id', true), ''))$p$, t);
    END LOOP;
END $$;

-- The audit log is append-only for the service: no UPDATE or DELETE grant (and the trigger of
-- 0002 refuses them for every role).
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM voxline_app;

-- Erasure (DELETE /api/me) and retention find a profile's rows by profile.
CREATE INDEX sessions_profile ON sessions (company_id, profile_id);
-- Retention finds old audio by age.
CREATE INDEX sessions_audio_age ON sessions (created_at) WHERE audio_ref IS NOT NULL;
