-- The operators' console at a million jobs: the plans and times of its list, filter and search
-- queries on a jobs table shaped like voxline's (one dead job in 1,000), with the indexes of
-- migrations/postgres/0016_operators_console.sql and 0018_fast_completion.sql (a job's company
-- and search words in job_search, written once at enqueue). Run: psql -h 127.0.0.1 -U postgres test -f bench/console_1m.sql
-- (about two minutes; it works in its own schema, scratch_search, dropped first).
DROP SCHEMA IF EXISTS scratch_search CASCADE;
CREATE SCHEMA scratch_search;
SET search_path = scratch_search;
CREATE TABLE jobs (
  id BIGSERIAL PRIMARY KEY, queue TEXT NOT NULL, kind TEXT NOT NULL, payload JSONB NOT NULL,
  state TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
  last_error TEXT, errors JSONB NOT NULL DEFAULT '[]'::jsonb);
INSERT INTO jobs (queue, kind, payload, state, errors, created_at)
SELECT (ARRAY['transcription','analysis','email','billing'])[1 + g % 4],
       (ARRAY['transcription.run','analysis.run','email.send','billing.sync'])[1 + g % 4],
       jsonb_build_object('session_id', 'sess-' || md5(g::text), 'company_id', 'company-' || (g % 500), 'profile_id', 'p-' || (g % 5000)),
       CASE WHEN g % 1000 = 0 THEN 'dead' WHEN g % 997 = 0 THEN 'available' ELSE 'done' END,
       CASE WHEN g % 1000 = 0 THEN jsonb_build_array(jsonb_build_object('attempt', 1, 'at', now(), 'error', 'smtp 550 mailbox unavailable ' || g)) ELSE '[]'::jsonb END,
       now() - (1000000 - g) * interval '1 second'
FROM generate_series(1, 1000000) g;
CREATE INDEX jobs_state_newest ON jobs (state, id) WHERE state <> 'done';
CREATE TABLE job_search (job_id BIGINT PRIMARY KEY, tenant_key TEXT NOT NULL, words TSVECTOR NOT NULL);
INSERT INTO job_search SELECT id, payload->>'company_id', to_tsvector('simple', kind || ' ' || errors::text || ' ' || payload::text) FROM jobs;
CREATE INDEX job_search_company ON job_search (tenant_key, job_id);
CREATE INDEX job_search_words ON job_search USING gin (words);
VACUUM ANALYZE jobs;
VACUUM ANALYZE job_search;
\timing on
-- The statements the console sends (jobs/src/store/postgres_console.rs: company and search are
-- semi-joins on job_search).
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT id FROM jobs WHERE id IN (SELECT job_id FROM job_search WHERE words @@ plainto_tsquery('simple', 'sess-' || md5('777777'))) ORDER BY id DESC LIMIT 50;
EXPLAIN (ANALYZE, COSTS OFF) SELECT id FROM jobs WHERE id IN (SELECT job_id FROM job_search WHERE words @@ plainto_tsquery('simple', 'mailbox unavailable')) ORDER BY id DESC LIMIT 50;
EXPLAIN (ANALYZE, COSTS OFF) SELECT id FROM jobs WHERE state IN ('dead') ORDER BY id DESC LIMIT 50;
EXPLAIN (ANALYZE, COSTS OFF) SELECT id FROM jobs WHERE id IN (SELECT job_id FROM job_search WHERE tenant_key = 'company-42') ORDER BY id DESC LIMIT 50;
EXPLAIN (ANALYZE, COSTS OFF) SELECT id FROM jobs WHERE state IN ('done') AND id < 500000 ORDER BY id DESC LIMIT 50;
EXPLAIN (ANALYZE, COSTS OFF) SELECT id FROM jobs WHERE queue = 'email' AND state IN ('dead') ORDER BY id DESC LIMIT 50;
EXPLAIN (ANALYZE, COSTS OFF) SELECT count(*) FROM jobs WHERE state IN ('retrying','dead') AND id IN (SELECT job_id FROM job_search WHERE tenant_key = 'company-0');
-- The queue overview's counts (not a list: one pass over the table, cached 1 s for /metrics).
EXPLAIN (ANALYZE, COSTS OFF) SELECT queue, state, count(*) FROM jobs GROUP BY queue, state;
SELECT pg_size_pretty(pg_relation_size('jobs')) AS heap, pg_size_pretty(pg_relation_size('job_search')) AS words_heap, pg_size_pretty(pg_relation_size('job_search_words')) AS words_idx, pg_size_pretty(pg_relation_size('job_search_company')) AS company_idx;
DROP SCHEMA scratch_search CASCADE;
