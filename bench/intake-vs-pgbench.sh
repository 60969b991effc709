#!/usr/bin/env bash
# Intake rate against the cluster's own one-row INSERT rate, side by side in one run:
# `pgbench -n -c 8 -j 2 -T 15` of a one-row INSERT into a table of its own (a custom script,
# a fresh schema) and `voxline bench intake --requests 5000 --concurrency 16` (HTTP, JWT,
# validation, session + transcript + job committed, 202) on the same Postgres, alternated
# REPEATS times (pgbench, voxline, pgbench, voxline), each voxline run in a fresh schema.
# The summary compares the medians (of two runs: their mean).
#
#   bench/intake-vs-pgbench.sh     (VOXLINE_BIN, PG_URL, REPEATS, REQUESTS, CONCURRENCY,
#                                   PGBENCH_SECONDS override)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VOXLINE_BIN:-${CARGO_TARGET_DIR:-/var/tmp/voxline-target}/release/voxline}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
REPEATS="${REPEATS:-2}"
REQUESTS="${REQUESTS:-5000}"
CONCURRENCY="${CONCURRENCY:-16}"
PGBENCH_SECONDS="${PGBENCH_SECONDS:-15}"
PGBENCH="${PGBENCH:-$(command -v pgbench || echo /usr/bin/pgbench)}"
TMP="$(mktemp -d)"
SCHEMAS=()

psql_() { psql -qtAX -v ON_ERROR_STOP=1 "$PG_URL" -c "$1"; }
cleanup() {
  for schema in "${SCHEMAS[@]}"; do psql_ "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

run_pgbench() {
  local run=$1 schema="bench_pgbench_$$_$1"
  SCHEMAS+=("$schema")
  psql_ "CREATE SCHEMA $schema;
         CREATE TABLE $schema.intake (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(), v integer)"
  echo "INSERT INTO $schema.intake (v) VALUES (1);" >"$TMP/insert.sql"
  "$PGBENCH" -n -c 8 -j 2 -T "$PGBENCH_SECONDS" -f "$TMP/insert.sql" "$PG_URL" >"$TMP/pgbench$run.out" 2>&1 ||
    { cat "$TMP/pgbench$run.out" >&2; exit 1; }
  local tps latency
  tps="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$TMP/pgbench$run.out")"
  latency="$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$TMP/pgbench$run.out")"
  echo "pgbench run$run: clients=8 threads=2 seconds=$PGBENCH_SECONDS tps=$tps latency_avg_ms=$latency" | tee "$TMP/pg$run"
  psql_ "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1
}

run_voxline() {
  local run=$1 schema="bench_intake_$$_$1"
  SCHEMAS+=("$schema")
  export VOXLINE_DATABASE__URL="$PG_URL" VOXLINE_DATABASE__SCHEMA="$schema" RUST_LOG=warn
  # A Postgres deployment must be given its JWT secret; the bench mints its tokens with it.
  VOXLINE_AUTH_JWT_SECRET="${VOXLINE_AUTH_JWT_SECRET:-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')}"
  export VOXLINE_AUTH_JWT_SECRET
  "$BIN" migrate >/dev/null
  "$BIN" bench intake --requests "$REQUESTS" --concurrency "$CONCURRENCY" 2>/dev/null |
    grep requests_per_s | tail -1 | sed "s/^/voxline run$run: /" | tee "$TMP/vx$run"
  psql_ "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1
}

field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" "$2"; }
median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.2f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
medians() { # key prefix
  for run in $(seq "$REPEATS"); do field "$1" "$TMP/$2$run"; done | median
}

for run in $(seq "$REPEATS"); do
  run_pgbench "$run"
  run_voxline "$run"
done

accepted="$(medians requests_per_s vx)"
p99="$(medians p99_ms vx)"
tps="$(medians tps pg)"
ratio="$(awk -v a="$accepted" -v b="$tps" 'BEGIN { printf "%.2f", a / b }')"
printf 'intake-vs-pgbench: voxline %.0f accepted/s p99 %s ms, pgbench -c 8 %.0f tps, ratio %s (voxline --requests %s --concurrency %s; %s runs each)\n' \
  "$accepted" "$p99" "$tps" "$ratio" "$REQUESTS" "$CONCURRENCY" "$REPEATS"
