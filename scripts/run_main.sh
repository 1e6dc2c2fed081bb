#!/usr/bin/env bash
# The project's main job: install what is missing, build in Release and train a small
# Vision Transformer end to end with histograd, printing its loss as it falls.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build/main -DCMAKE_BUILD_TYPE=Release -DHISTOGRAD_NATIVE=ON >/dev/null
cmake --build build/main --target train_tiny_vit embed -j"$(nproc)"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}" build/main/examples/train_tiny_vit "$@"
