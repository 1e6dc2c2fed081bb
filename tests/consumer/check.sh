#!/usr/bin/env bash
# Installs histograd into a scratch prefix and builds + runs the consumer project both ways.
set -euo pipefail
source_dir="$1"; build_dir="$2"
rm -rf "$build_dir/consumer" && mkdir -p "$build_dir/consumer"
cd "$build_dir/consumer"
cmake -S "$source_dir" -B lib -DHISTOGRAD_BUILD_TESTS=OFF -DHISTOGRAD_BUILD_EXAMPLES=OFF -DHISTOGRAD_BUILD_BENCHMARKS=OFF \
      -DHISTOGRAD_CUDA=OFF >/dev/null
cmake --install lib --prefix prefix >/dev/null
cmake -S "$source_dir/tests/consumer" -B find -DCMAKE_PREFIX_PATH="$PWD/prefix" -DHISTOGRAD_CONSUME=find >/dev/null
cmake --build find >/dev/null
find/consumer
cmake -S "$source_dir/tests/consumer" -B subdirectory -DHISTOGRAD_CONSUME=subdirectory -DHISTOGRAD_SOURCE_DIR="$source_dir" >/dev/null
cmake --build subdirectory >/dev/null
subdirectory/consumer
