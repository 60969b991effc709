#!/usr/bin/env bash
# One intake run and what it cost the machine: `voxline bench intake` in a fresh schema, with the
# whole machine's busy share and busy core-centiseconds (from /proc/stat) over the run, so CPU
# per submission = busy_core_cs / 100 / requests. The machine should be otherwise quiet.
#
#   bench/intake-cpu.sh [REQUESTS [CONCURRENCY]]     (VOXLINE_BIN, PG_URL override)
. "$(dirname "$0")/common.sh"
REQUESTS="${1:-6000}"
CONCURRENCY="${2:-16}"
SCHEMA="bench_intake_cpu_$$"
trap 'psql_ "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true' EXIT

export VOXLINE_DATABASE__URL="$PG_URL" VOXLINE_DATABASE__SCHEMA="$SCHEMA" RUST_LOG=warn
VOXLINE_AUTH_JWT_SECRET="${VOXLINE_AUTH_JWT_SECRET:-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')}"
export VOXLINE_AUTH_JWT_SECRET
"$BIN" migrate >/dev/null
busy_total() { awk '/^cpu / { b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6 }' /proc/stat; }
read -r b0 t0 < <(busy_total)
"$BIN" bench intake --requests "$REQUESTS" --concurrency "$CONCURRENCY" 2>/dev/null | grep requests_per_s | tail -1
read -r b1 t1 < <(busy_total)
awk -v b="$((b1 - b0))" -v t="$((t1 - t0))" -v n="$REQUESTS" \
  'BEGIN { printf "machine busy=%.0f%% busy_core_cs=%d cpu_ms_per_submission=%.2f\n", 100 * b / t, b, b * 10 / n }'
