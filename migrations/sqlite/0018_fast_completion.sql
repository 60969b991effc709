-- Fair claiming needs each job's tenant in a column (the Postgres migration says why the hot
-- path indexes it only while the job waits). '' is no company.

ALTER TABLE jobs ADD COLUMN tenant_key TEXT NOT NULL DEFAULT '';
UPDATE jobs SET tenant_key = COALESCE(json_extract(payload, '$.company_id'), '')
WHERE json_valid(payload);

CREATE INDEX jobs_fair ON jobs (queue, tenant_key, priority DESC, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retrying');
-- The console's company filter over every state (the embedded database's rows are few, and
-- its one writer makes the extra entry cheap).
CREATE INDEX jobs_company ON jobs (tenant_key, id);
