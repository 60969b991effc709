-- The hot path writes as few index entries as it can (issue 18). A job row is written three
-- times: enqueued, claimed (`running`) and finished (`done`). Each of those is a new row
-- version, and a new version goes into every index whose predicate it matches, whichever
-- columns changed. So what never changes after enqueue is indexed where it is written once:
--
-- * `job_search` holds each job's company and search words, written with the job (one
--   statement) and again only when its errors change (the trigger below). The console's
--   company filter and search read it; a claim or a completion never touches it.
-- * `jobs.tenant_key` is the company for fair claiming, set at enqueue ('' for none). Its
--   index covers waiting jobs only, so it too is written at enqueue and retry only.
-- * Rescue finds running jobs through `jobs_state_newest` (few rows) instead of its own
--   index on `heartbeat_at`, so a heartbeat changes no indexed column and is a HOT update.
--
-- After this a claim writes two index entries (primary key, `jobs_state_newest`) and a
-- completion one (the primary key), plus the unique key's where a job has one.
--
-- The column is `tenant_key`, not `company_id`: `jobs` and `job_search` are the engine's
-- platform tables (migration 0007), read by every worker whatever the tenant, and a
-- `company_id` column marks a tenant table that row-level security must guard.

ALTER TABLE jobs ADD COLUMN tenant_key TEXT NOT NULL DEFAULT '';
UPDATE jobs SET tenant_key = payload->>'company_id' WHERE payload ? 'company_id';

CREATE TABLE job_search (
    -- No foreign key: its check would lock every new job row at enqueue. The statements that
    -- delete jobs (retention, purge) delete their rows here in the same statement, and a row
    -- left behind would match nothing (ids are never reused).
    job_id      BIGINT PRIMARY KEY,
    tenant_key  TEXT     NOT NULL,
    words       TSVECTOR NOT NULL
);
INSERT INTO job_search (job_id, tenant_key, words)
SELECT id, tenant_key, to_tsvector('simple', kind || ' ' || errors::text || ' ' || payload::text)
FROM jobs;

-- One company's jobs, newest first.
CREATE INDEX job_search_company ON job_search (tenant_key, job_id);
-- `q=`: every word in the kind, the errors or the payload.
CREATE INDEX job_search_words ON job_search USING gin (words);

-- A failure, a rescue or a shutdown appends to `errors`: the words follow. A claim or a
-- completion does not name `errors`, so this trigger is not even queued for them.
CREATE FUNCTION job_search_errors_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE job_search
    SET words = to_tsvector('simple', NEW.kind || ' ' || NEW.errors::text || ' ' || NEW.payload::text)
    WHERE job_id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_errors_changed AFTER UPDATE OF errors ON jobs
    FOR EACH ROW WHEN (OLD.errors IS DISTINCT FROM NEW.errors)
    EXECUTE FUNCTION job_search_errors_changed();

DROP INDEX jobs_search;
DROP INDEX jobs_company_newest;
DROP INDEX jobs_running;

-- Fair claiming: the waiting jobs of one queue by company, each company's in claim order.
CREATE INDEX jobs_fair ON jobs (queue, tenant_key, priority DESC, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retrying');
