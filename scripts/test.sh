#!/usr/bin/env bash
# Builds and runs every test: the Release suites (which include building a consumer project
# with both find_package and add_subdirectory), then the same suites under ASan + UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
jobs="$(nproc)"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

echo "== Release build and tests"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j"$jobs"
ctest --test-dir build/release --output-on-failure -j"$jobs"

echo "== AddressSanitizer + UndefinedBehaviorSanitizer build and tests"
# The CUDA backend is compiled (warnings as errors) and its suites run in the Release build; with
# no GPU here they only report their skip, so the sanitizer build leaves them out.
cmake -S . -B build/sanitize -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" -DHISTOGRAD_SANITIZE=ON \
      -DHISTOGRAD_BUILD_BENCHMARKS=OFF -DHISTOGRAD_CUDA=OFF >/dev/null
cmake --build build/sanitize -j"$jobs"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build/sanitize --output-on-failure -j"$jobs" -E "^install/"
