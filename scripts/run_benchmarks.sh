#!/usr/bin/env bash
# Builds the benchmarks with native tuning and runs them beside PyTorch (installed by
# scripts/setup_python.sh) on the given thread count (default 2, the project's machines).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/setup_python.sh
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DHISTOGRAD_NATIVE=ON >/dev/null
cmake --build build/bench --target gemm_bench vit_bench -j"$(nproc)"
export OMP_NUM_THREADS="${1:-2}"
echo "# $(date -u +%F) $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, OMP_NUM_THREADS=$OMP_NUM_THREADS"
build/bench/benchmarks/gemm_bench
build/bench/benchmarks/vit_bench
