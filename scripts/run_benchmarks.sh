#!/usr/bin/env bash
# Builds the benchmarks with native tuning and runs them beside PyTorch (installed by
# scripts/setup_python.sh) on the given thread count (default 2, the project's machines).
# The whole-slide benchmark runs when the WSI component is built and the shared slide exists.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/setup_python.sh
python3 -c "import openslide, cv2" 2>/dev/null || python3 -m pip install --quiet pillow openslide-python opencv-python-headless
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DHISTOGRAD_NATIVE=ON -DHISTOGRAD_BUILD_TESTS=OFF \
      -DHISTOGRAD_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build/bench -j"$(nproc)"
export OMP_NUM_THREADS="${1:-2}"
echo "# $(date -u +%F) $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, OMP_NUM_THREADS=$OMP_NUM_THREADS"
build/bench/benchmarks/gemm_bench
build/bench/benchmarks/vit_bench
build/bench/benchmarks/ssl_bench 3  # DINO + MAE training steps beside the reference code (fetched repos)
slide=../shared/data/slides/CMU-1-Small-Region.svs
if [ -x build/bench/benchmarks/wsi_bench ] && [ -f "$slide" ]; then
  build/bench/benchmarks/wsi_bench "$slide" 3
fi
