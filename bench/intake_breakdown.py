"""Writes the pgbench scripts of bench/intake-breakdown.sh: the statements one JSON submission
runs on Postgres (as voxline sends them since the one-transaction intake), whole and with one
part left out at a time, so their costs can be told apart beside the one-row INSERT anchor."""
import json
import sys

out = sys.argv[1]
turns = [{"speaker": "partner" if i % 2 == 0 else "user", "start": i * 6.0, "end": i * 6.0 + 5.5,
          "text": "So what would it mean for your team if onboarding took half the time?"}
         for i in range(30)]
segments = json.dumps(turns).replace("'", "''")
sid = "'s' || :client_id || '-' || :n"
payload = (f"json_build_object('session_id', {sid}, 'company_id', 'bench-co', "
           "'profile_id', 'bench-p', 'notify_email', null)::jsonb")


def script(scope_in_tx=True, quota=True, session=True, job=True, search=True, notify=True,
           audit=True, one_row=False):
    lines = ["\\set n random(1, 2000000000)", "BEGIN;"]
    if scope_in_tx:
        lines.append("SELECT set_config('app.company_id', 'bench-co', true), "
                     "set_config('app.profile_id', 'bench-p', true);")
    if one_row:
        lines.append("INSERT INTO pgb_one.intake (v) VALUES (1);")
    if quota:
        lines.append("SELECT * FROM subscriptions WHERE company_id = 'bench-co' "
                     "ORDER BY last_event_at DESC, id;")
        lines.append("SELECT count(*), sum(seconds) FROM usage_records WHERE company_id = 'bench-co' "
                     "AND recorded_at >= date_trunc('month', now()) "
                     "AND recorded_at < date_trunc('month', now()) + interval '1 month';")
    if session:
        lines.append(
            "WITH session AS (INSERT INTO sessions (id, company_id, profile_id, title, kind, status, "
            "source) VALUES (" + sid + ", 'bench-co', 'bench-p', 'Benchmark call', 'sales', "
            "'queued', 'transcript') RETURNING id, company_id) INSERT INTO transcripts "
            f"(session_id, company_id, segments, speakers) SELECT id, company_id, '{segments}'::jsonb, "
            "'{\"method\":\"transcript\"}'::jsonb FROM session;")
    if job:
        words = (", words AS (INSERT INTO job_search (job_id, tenant_key, words) SELECT id, "
                 "tenant_key, to_tsvector('simple', kind || ' ' || errors::text || ' ' || "
                 "payload::text) FROM ins)") if search else ""
        select = ("SELECT id, pg_notify('voxline_jobs_bench', 'analysis') FROM ins;" if notify
                  else "SELECT id FROM ins;")
        lines.append(
            "WITH ins AS (INSERT INTO jobs (queue, kind, payload, state, priority, max_attempts, "
            "unique_key, run_at, tenant_key) VALUES ('analysis', 'analysis.run', " + payload +
            ", 'available', 0, 5, 'analysis:' || " + sid + ", clock_timestamp(), 'bench-co') "
            "ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING "
            "RETURNING id, state, kind, payload, errors, tenant_key)" + words + " " + select)
    if audit:
        lines.append("INSERT INTO audit_log (actor, actor_role, company_id, action, target, details) "
                     "VALUES ('bench-p', 'member', 'bench-co', 'session.create', 'session:' || " + sid +
                     ", '{\"source\":\"transcript\",\"kind\":\"sales\"}'::jsonb) RETURNING id;")
    lines.append("END;")
    return "\n".join(lines) + "\n"


def group(n):
    """`n` submissions of one tenant in one transaction, as intake's group commit writes them:
    one quota read per tenant, one multi-row statement per table, one NOTIFY."""
    gsid = "'s' || :client_id || '-' || :n || '-' || g"
    gpayload = payload.replace(sid, gsid)
    rows = f"FROM generate_series(1, {n}) g"
    return "\n".join([
        "\\set n random(1, 2000000000)", "BEGIN;",
        "SELECT set_config('app.company_id', 'bench-co', true), "
        "set_config('app.profile_id', 'bench-p', true);",
        "SELECT * FROM subscriptions WHERE company_id = 'bench-co' ORDER BY last_event_at DESC, id;",
        "SELECT count(*), sum(seconds) FROM usage_records WHERE company_id = 'bench-co' "
        "AND recorded_at >= date_trunc('month', now()) "
        "AND recorded_at < date_trunc('month', now()) + interval '1 month';",
        "WITH session AS (INSERT INTO sessions (id, company_id, profile_id, title, kind, status, "
        f"source) SELECT {gsid}, 'bench-co', 'bench-p', 'Benchmark call', 'sales', 'queued', "
        f"'transcript' {rows} RETURNING id, company_id) INSERT INTO transcripts "
        f"(session_id, company_id, segments, speakers) SELECT id, company_id, '{segments}'::jsonb, "
        "'{\"method\":\"transcript\"}'::jsonb FROM session;",
        "WITH ins AS (INSERT INTO jobs (queue, kind, payload, state, priority, max_attempts, "
        f"unique_key, run_at, tenant_key) SELECT 'analysis', 'analysis.run', {gpayload}, "
        f"'available', 0, 5, 'analysis:' || {gsid}, clock_timestamp(), 'bench-co' {rows} "
        "ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING "
        "RETURNING id, queue, state, kind, payload, errors, tenant_key), "
        "words AS (INSERT INTO job_search (job_id, tenant_key, words) SELECT id, tenant_key, "
        "to_tsvector('simple', kind || ' ' || errors::text || ' ' || payload::text) FROM ins) "
        "SELECT (SELECT count(*) FROM ins), (SELECT count(pg_notify('voxline_jobs_bench', queue)) "
        "FROM (SELECT DISTINCT queue FROM ins WHERE state = 'available') woken);",
        "INSERT INTO audit_log (actor, actor_role, company_id, action, target, details) "
        f"SELECT 'bench-p', 'member', 'bench-co', 'session.create', 'session:' || {gsid}, "
        f"'{{\"source\":\"transcript\",\"kind\":\"sales\"}}'::jsonb {rows};",
        "END;"]) + "\n"


variants = {
    "submission": script(),
    "without_quota_reads": script(quota=False),
    "without_notify": script(notify=False),
    "without_job_search": script(search=False),
    "without_audit": script(audit=False),
    "job_alone": script(quota=False, session=False, audit=False),
    "job_alone_without_notify": script(quota=False, session=False, audit=False, notify=False),
    "session_alone": script(quota=False, job=False, audit=False),
    "one_row_in_scoped_tx": script(quota=False, session=False, job=False, audit=False, one_row=True),
    # Submissions per second = tps × 8 (the shell prints both).
    "group_of_8": group(8),
}
with open(f"{out}/one_row.sql", "w") as f:
    f.write("INSERT INTO pgb_one.intake (v) VALUES (1);\n")
for name, text in variants.items():
    with open(f"{out}/{name}.sql", "w") as f:
        f.write(text)
print(" ".join(["one_row", *variants]))
