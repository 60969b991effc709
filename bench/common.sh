# Sourced by the intake scripts (`. "$(dirname "$0")/common.sh"`): strict mode, the repository
# root as working directory, the binary under test, the cluster, and psql with errors stopping
# the script. The binary and the cluster can be overridden from the environment.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN="${VOXLINE_BIN:-${CARGO_TARGET_DIR:-/var/tmp/voxline-target}/release/voxline}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
psql_() { psql -qtAX -v ON_ERROR_STOP=1 "$PG_URL" -c "$1"; }
