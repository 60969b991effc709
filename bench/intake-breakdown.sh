#!/usr/bin/env bash
# Where an intake submission's database time goes: the statements one JSON submission runs on
# Postgres, replayed by pgbench -c 8 -j 2 as the service's role (row-level security on) in a
# migrated schema, whole and with one part left out at a time, beside the one-row INSERT
# anchor of bench/intake-vs-pgbench.sh, all in one run; and `group_of_8`, eight submissions in
# one transaction as the group commit writes them (submissions_per_s = tps × 8). Needs pgbench
# and python3.
#
#   bench/intake-breakdown.sh     (VOXLINE_BIN, PG_URL, SECONDS_EACH override)
. "$(dirname "$0")/common.sh"
SECONDS_EACH="${SECONDS_EACH:-8}"
SCHEMA="bench_breakdown_$$"
TMP="$(mktemp -d)"
cleanup() {
  psql_ "DROP SCHEMA IF EXISTS $SCHEMA CASCADE; DROP SCHEMA IF EXISTS pgb_one CASCADE" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

VOXLINE_DATABASE__URL="$PG_URL" VOXLINE_DATABASE__SCHEMA="$SCHEMA" RUST_LOG=warn "$BIN" migrate >/dev/null
psql_ "CREATE SCHEMA pgb_one; CREATE TABLE pgb_one.intake (id bigserial PRIMARY KEY,
       created_at timestamptz NOT NULL DEFAULT now(), v integer)" >/dev/null
variants="$(python3 bench/intake_breakdown.py "$TMP")"
for v in $variants; do
  opts="-c role=voxline_app -c search_path=$SCHEMA"
  case "$v" in one_row*) opts="" ;; esac  # the anchor table is the superuser's own
  PGOPTIONS="$opts" pgbench -n -c 8 -j 2 -T "$SECONDS_EACH" -f "$TMP/$v.sql" "$PG_URL" >"$TMP/$v.out" 2>&1 || true
  tps="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$TMP/$v.out")"
  failed="$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$TMP/$v.out")"
  per_tx=1
  case "$v" in group_of_*) per_tx="${v#group_of_}" ;; esac  # submissions per transaction
  submissions="$(awk -v t="${tps:-0}" -v n="$per_tx" 'BEGIN { printf "%.0f", t * n }')"
  printf '%-28s tps=%s submissions_per_s=%s failed=%s\n' "$v" "${tps:-error}" "$submissions" "${failed:-?}"
  [ -n "$tps" ] || sed -n '/error/{p;q}' "$TMP/$v.out" >&2
done
