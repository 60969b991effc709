#!/usr/bin/env bash
# What the operators' console costs the queue: `voxline bench queue` burn-down on Postgres with
# the console's search index (jobs_search), without it, and with it again (A-B-A, one schema,
# one run), so the ratio is read beside its own baseline. The per-minute activity table is
# written in both cases (it is part of the acknowledging statement).
#
#   bench/console-write-cost.sh        (VOXLINE_BIN, PG_URL, JOBS, PROCESSES override)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VOXLINE_BIN:-${CARGO_TARGET_DIR:-/var/tmp/voxline-target}/release/voxline}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
JOBS="${JOBS:-20000}"
PROCESSES="${PROCESSES:-2}"
SCHEMA="bench_console_$$"
export VOXLINE_DATABASE__URL="$PG_URL" VOXLINE_DATABASE__SCHEMA="$SCHEMA" RUST_LOG=warn
psql_() { psql -q -X "$PG_URL" -c "SET search_path = $SCHEMA; $1"; }
run() {
  "$BIN" bench queue --jobs "$JOBS" --processes "$PROCESSES" --concurrency 10 \
    --single 200 --latency-jobs 50 2>/dev/null | grep -E 'jobs_per_s|summary' | tail -1 | sed "s/^/$1: /"
}
"$BIN" migrate >/dev/null
run "with search index"
psql_ "DROP INDEX jobs_search"
run "without search index"
psql_ "CREATE INDEX jobs_search ON jobs USING gin (to_tsvector('simple', kind || ' ' || errors::text || ' ' || payload::text))"
run "with search index"
psql -q -X "$PG_URL" -c "DROP SCHEMA $SCHEMA CASCADE"
