-- Append-only record of who did what to which target: operator job actions, and later billing,
-- session and GDPR actions. No transcript text or secrets go in `details`.
CREATE TABLE audit_log (
    id          BIGSERIAL PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    actor       TEXT        NOT NULL,
    actor_role  TEXT        NOT NULL,
    company_id  TEXT,
    action      TEXT        NOT NULL,
    target      TEXT        NOT NULL,
    details     JSONB       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_action ON audit_log (action, id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
