-- The operators' console at a million jobs: the plans and times of its list, filter and search
-- queries on a jobs table shaped like voxline's (one dead job in 1,000), with the indexes of
-- migrations/postgres/0016_operators_console.sql. Run: psql -h 127.0.0.1 -U postgres test -f bench/console_1m.sql
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
CREATE INDEX jobs_company_newest ON jobs ((payload->>'company_id'), id);
CREATE INDEX jobs_search ON jobs USING gin (to_tsvector('simple', kind || ' ' || errors::text || ' ' || payload::text));
VACUUM ANALYZE jobs;
\timing on
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT id FROM jobs WHERE to_tsvector('simple', kind || ' ' || errors::text || ' ' || payload::text) @@ plainto_tsquery('simple', 'sess-' || md5('777777')) ORDER BY id DESC LIMIT 50;
EXPLAIN (ANALYZE, COSTS OFF) SELECT id FROM jobs WHERE to_tsvector('simple', kind || ' ' || errors::text || ' ' || payload::text) @@ plainto_tsquery('simple', 'mailbox unavailable') ORDER BY id DESC LIMIT 50;
EXPLAIN (ANALYZE, COSTS OFF) SELECT id FROM jobs WHERE state IN ('dead') ORDER BY id DESC LIMIT 50;
EXPLAIN (ANALYZE, COSTS OFF) SELECT id FROM jobs WHERE (payload->>'company_id') = 'company-42' ORDER BY id DESC LIMIT 50;
EXPLAIN (ANALYZE, COSTS OFF) SELECT id FROM jobs WHERE state IN ('done') AND id < 500000 ORDER BY id DESC LIMIT 50;
EXPLAIN (ANALYZE, COSTS OFF) SELECT id FROM jobs WHERE queue = 'email' AND state IN ('dead') ORDER BY id DESC LIMIT 50;
EXPLAIN (ANALYZE, COSTS OFF) SELECT count(*) FROM jobs WHERE state IN ('retrying','dead') AND (payload->>'company_id') = 'company-0';
-- The queue overview's counts (not a list: one pass over the table, cached 1 s for /metrics).
EXPLAIN (ANALYZE, COSTS OFF) SELECT queue, state, count(*) FROM jobs GROUP BY queue, state;
SELECT pg_size_pretty(pg_relation_size('jobs')) AS heap, pg_size_pretty(pg_relation_size('jobs_search')) AS search_idx, pg_size_pretty(pg_relation_size('jobs_company_newest')) AS company_idx;
DROP SCHEMA scratch_search CASCADE;
