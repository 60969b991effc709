#!/usr/bin/env bash
# Queue burn-down, voxline vs graphile-worker with batching, side by side in one run on one
# cluster: N no-op jobs committed in one transaction while P worker processes × C concurrency
# sit idle, timed from that commit until no job is left (voxline: `bench queue`'s jobs_per_s;
# graphile-worker: bench/graphile_burndown.js, its jobs table empty). The engines alternate
# REPEATS times (graphile, voxline, graphile, voxline, …), each run in its own fresh schema,
# and the medians are compared. graphile-worker runs with the batching its performance page
# uses: localQueue.size 500, completeJobBatchDelay 0, failJobBatchDelay 0; voxline with
# --prefetch 500.
#
# With JOBS=200000 (or STATS=1) each run also reports what it did to the tables: per job table
# n_dead_tup, n_tup_ins/upd/hot_upd/del and autovacuum/autoanalyze counts from
# pg_stat_user_tables once its processes have exited (and the cluster's autovacuum settings,
# which those counts depend on), and the WAL written during the run
# (pg_current_wal_lsn() before/after; cluster-wide, so anything else running on the cluster
# is counted too). voxline's figures include its bench's whole run (single-enqueue and latency
# phases, and the purge of the bench queue at the end, which is most of its n_tup_del);
# graphile-worker deletes each job as it completes.
#
#   bench/queue-vs-graphile.sh                 JOBS=20000 PROCESSES=2 CONCURRENCY=10 REPEATS=2
#   JOBS=200000 bench/queue-vs-graphile.sh     adds the dead-tuple / vacuum / WAL report
#
# Overrides: VOXLINE_BIN, PG_URL, GRAPHILE_VERSION (newest 0.x that runs on node 20: 0.18
# wants node 22), BENCH_CACHE (npm installs there, outside the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VOXLINE_BIN:-${CARGO_TARGET_DIR:-/var/tmp/voxline-target}/release/voxline}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
JOBS="${JOBS:-20000}"
PROCESSES="${PROCESSES:-2}"
CONCURRENCY="${CONCURRENCY:-10}"
REPEATS="${REPEATS:-2}"
PREFETCH=500
GRAPHILE_VERSION="${GRAPHILE_VERSION:-0.17.3}"
CACHE="${BENCH_CACHE:-$HOME/.cache/voxline-bench}/graphile-worker-$GRAPHILE_VERSION"
STATS="${STATS:-$([ "$JOBS" -ge 200000 ] && echo 1 || echo 0)}"
WARMUP=$((PROCESSES * CONCURRENCY * 4)) # as `voxline bench queue` warms up
DRIVER="$PWD/bench/graphile_burndown.js"
TMP="$(mktemp -d)"
SCHEMAS=()
WORKER_PIDS=()

psql_() { psql -qtAX -v ON_ERROR_STOP=1 "$PG_URL" -c "$1"; }
cleanup() {
  for pid in "${WORKER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for schema in "${SCHEMAS[@]}"; do psql_ "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

# graphile-worker from npm into the cache (not the repository); reused on later runs.
if [ "$(node -p "try { require('$CACHE/node_modules/graphile-worker/package.json').version } catch { '' }")" != "$GRAPHILE_VERSION" ]; then
  mkdir -p "$CACHE"
  [ -f "$CACHE/package.json" ] || echo '{"private": true}' >"$CACHE/package.json"
  npm install --prefix "$CACHE" --no-audit --no-fund --loglevel=error "graphile-worker@$GRAPHILE_VERSION" >/dev/null
fi
export NODE_PATH="$CACHE/node_modules"

wal_lsn() { psql_ "SELECT pg_current_wal_lsn()"; }
# After the run's processes have exited (a backend flushes its table counters on exit).
report_stats() { # engine run schema lsn_before jobs tables...
  local engine=$1 run=$2 schema=$3 before=$4 jobs=$5
  shift 5
  local tables
  tables="$(printf "'%s'," "$@")"
  sleep 1
  psql_ "SELECT pg_stat_force_next_flush()" >/dev/null
  psql_ "SELECT format('stats %s run%s table=%s n_dead_tup=%s n_tup_ins=%s n_tup_upd=%s n_tup_hot_upd=%s n_tup_del=%s autovacuum_count=%s autoanalyze_count=%s',
                '$engine', $run, relname, n_dead_tup, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, autovacuum_count, autoanalyze_count)
         FROM pg_stat_user_tables WHERE schemaname = '$schema' AND relname IN (${tables%,}) ORDER BY relname"
  psql_ "SELECT format('wal %s run%s wal_bytes=%s (%s) per_job=%s', '$engine', $run, d, pg_size_pretty(d), round(d / $jobs))
         FROM (SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$before')::bigint AS d) w"
}

run_graphile() { # run number; prints jobs/s on the last line
  local run=$1 schema="bench_gw_$$_$1" before i
  SCHEMAS+=("$schema")
  export GRAPHILE_WORKER_SCHEMA="$schema" PG_URL
  node "$DRIVER" migrate
  before="$(wal_lsn)"
  WORKER_PIDS=()
  for i in $(seq "$PROCESSES"); do
    node "$DRIVER" worker "$CONCURRENCY" >"$TMP/worker$i.out" &
    WORKER_PIDS+=("$!")
  done
  for i in $(seq "$PROCESSES"); do
    for _ in $(seq 300); do grep -q ready "$TMP/worker$i.out" && break; sleep 0.1; done
    grep -q ready "$TMP/worker$i.out" || { echo "graphile worker $i did not start" >&2; exit 1; }
  done
  node "$DRIVER" drive "$JOBS" "$WARMUP" | sed "s/^/graphile-worker run$run: /" | tee "$TMP/gw$run"
  for pid in "${WORKER_PIDS[@]}"; do kill -TERM "$pid"; wait "$pid" || true; done
  WORKER_PIDS=()
  if [ "$STATS" = 1 ]; then
    report_stats graphile-worker "$run" "$schema" "$before" "$JOBS" _private_jobs _private_job_queues _private_tasks
  fi
  psql_ "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1
}

run_voxline() {
  local run=$1 schema="bench_vx_$$_$1" before
  SCHEMAS+=("$schema")
  export VOXLINE_DATABASE__URL="$PG_URL" VOXLINE_DATABASE__SCHEMA="$schema" RUST_LOG=warn
  "$BIN" migrate >/dev/null
  before="$(wal_lsn)"
  "$BIN" bench queue --jobs "$JOBS" --processes "$PROCESSES" --concurrency "$CONCURRENCY" \
    --prefetch "$PREFETCH" --single 200 --latency-jobs 200 2>/dev/null |
    grep jobs_per_s | tail -1 | sed "s/^/voxline run$run: /" | tee "$TMP/vx$run"
  if [ "$STATS" = 1 ]; then
    report_stats voxline "$run" "$schema" "$before" "$JOBS" jobs job_search job_stats_minute
  fi
  psql_ "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1
}

figure() { sed -n 's/.*[ :]jobs_per_s=\([0-9.]*\).*/\1/p' "$1"; }
median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.0f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

if [ "$STATS" = 1 ]; then
  # Zero autovacuum counts mean nothing when the cluster does not autovacuum: say which it is.
  psql_ "SELECT 'settings ' || string_agg(name || '=' || setting || coalesce(unit, ''), ' ' ORDER BY name) FROM pg_settings
         WHERE name IN ('autovacuum', 'autovacuum_naptime', 'autovacuum_vacuum_threshold', 'autovacuum_vacuum_scale_factor',
                        'synchronous_commit', 'full_page_writes', 'wal_level')"
fi
for run in $(seq "$REPEATS"); do
  run_graphile "$run"
  run_voxline "$run"
done

gw_runs="$(for run in $(seq "$REPEATS"); do figure "$TMP/gw$run"; done | xargs)"
vx_runs="$(for run in $(seq "$REPEATS"); do figure "$TMP/vx$run"; done | xargs)"
gw="$(tr ' ' '\n' <<<"$gw_runs" | median)"
vx="$(tr ' ' '\n' <<<"$vx_runs" | median)"
ratio="$(awk -v a="$vx" -v b="$gw" 'BEGIN { printf "%.2f", a / b }')"
echo "queue-vs-graphile: voxline $vx jobs/s, graphile-worker $GRAPHILE_VERSION $gw jobs/s, ratio $ratio" \
  "(jobs=$JOBS ${PROCESSES}x$CONCURRENCY; voxline runs: $vx_runs; graphile-worker runs: $gw_runs)"
