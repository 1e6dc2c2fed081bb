#!/usr/bin/env bash
# The project's main job, the quickstart: install what is missing, build in Release, pretrain a
# small ViT with DINO on built-in synthetic H&E tiles (no download) on the CPU, then print the
# k-NN accuracy of the learned features beside a random initialisation of the same ViT.
# Extra arguments go to train_dino (e.g. --data <image folder>, --epochs, --resume; see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build/main -DCMAKE_BUILD_TYPE=Release -DHISTOGRAD_NATIVE=ON >/dev/null
cmake --build build/main --target train_dino embed -j"$(nproc)"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}" build/main/examples/train_dino --out build/main/dino_quickstart "$@"
