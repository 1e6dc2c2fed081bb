#!/usr/bin/env bash
# The project's main job: install what is missing, build in Release and train a small
# Vision Transformer end to end with histograd, printing its loss as it falls.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DHISTOGRAD_NATIVE=ON >/dev/null
cmake --build build/release --target train_tiny_vit -j"$(nproc)"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}" build/release/examples/train_tiny_vit "$@"
