#!/usr/bin/env bash
# Fills .devdeps (ignored by git) with what scripts/gpu_check.sh needs on the GPU machine, which
# has no network and none of these: the Eigen and doctest headers with their CMake packages (from
# this machine's Debian packages), and facebookresearch/dino's main_dino.py, utils.py and
# vision_transformer.py for benchmarks/cuda/torch_dino_step.py (from a checkout given as $1, else
# from the fetched mirror /work/.mirror/facebookresearch+dino). Then carry ".devdeps" in the run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.devdeps
rm -rf "$out/include/eigen3" "$out/include/doctest" "$out/cmake/eigen3" "$out/cmake/doctest"
mkdir -p "$out/include" "$out/cmake" "$out/dino"
cp -r /usr/include/eigen3 /usr/include/doctest "$out/include/"
cp -r /usr/share/eigen3/cmake "$out/cmake/eigen3"
cp -r /usr/lib/cmake/doctest "$out/cmake/doctest"
dino="${1:-}"
for name in main_dino.py utils.py vision_transformer.py; do
  if [ -n "$dino" ]; then
    cp "$dino/$name" "$out/dino/$name"
  else
    git --git-dir /work/.mirror/facebookresearch+dino/repo show "HEAD:$name" >"$out/dino/$name"
  fi
done
du -sh "$out"
