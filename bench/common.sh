# Sourced by the intake scripts: the binary under test, the cluster, and psql with errors
# stopping the script. Each can be overridden from the environment.
BIN="${VOXLINE_BIN:-${CARGO_TARGET_DIR:-/var/tmp/voxline-target}/release/voxline}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
psql_() { psql -qtAX -v ON_ERROR_STOP=1 "$PG_URL" -c "$1"; }
