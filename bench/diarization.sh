#!/usr/bin/env bash
# Diarization error of the local speaker model on a test set made with espeak-ng voices and
# sox pitch shifts (see whisper/examples/diarization.rs, which installs the pinned Resemblyzer
# wheel through pip under the models root first if needed).
# Usage: bench/diarization.sh [models root]   (needs espeak-ng and sox)
set -euo pipefail
cd "$(dirname "$0")/.."
models="${1:-data/models}"
cargo run --release --quiet -p voxline-whisper --example diarization -- "$models"
