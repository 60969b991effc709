#!/usr/bin/env bash
# Two builds' intake side by side in one run, alternated A B A B: `voxline bench intake
# --requests 5000 --concurrency 16` on Postgres, each in a fresh schema, with the whole
# machine's busy CPU (from /proc/stat) per submission beside the rate.
#
#   bench/intake-ab.sh OLD_BIN NEW_BIN     (PG_URL, REQUESTS, CONCURRENCY override)
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 OLD_BIN NEW_BIN" >&2; exit 2; }
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
REQUESTS="${REQUESTS:-5000}"
CONCURRENCY="${CONCURRENCY:-16}"
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
run() {
  local label=$1 bin=$2 schema="bench_ab_$$_$3"
  export VOXLINE_DATABASE__URL="$PG_URL" VOXLINE_DATABASE__SCHEMA="$schema" RUST_LOG=warn
  VOXLINE_AUTH_JWT_SECRET="${VOXLINE_AUTH_JWT_SECRET:-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')}"
  export VOXLINE_AUTH_JWT_SECRET
  "$bin" migrate >/dev/null
  local before after line
  before=$(busy_ticks)
  line=$("$bin" bench intake --requests "$REQUESTS" --concurrency "$CONCURRENCY" 2>/dev/null | grep requests_per_s | tail -1)
  after=$(busy_ticks)
  echo "$label: $line machine_cpu_ms_per_request=$(echo "($after - $before) * 10 / $REQUESTS" | bc -l | cut -c1-5)"
  psql -qtAX "$PG_URL" -c "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1
}
run A "$1" 1; run B "$2" 2; run A "$1" 3; run B "$2" 4
