#!/usr/bin/env bash
# Builds the checkpoint-reader and image-decoder fuzzers with clang + libFuzzer/ASan/UBSan and runs each one.
#   scripts/fuzz.sh [seconds per harness, default 300] [harness names, default: safetensors pth image]
# Build tree: build/fuzz (override with HISTOGRAD_FUZZ_BUILD). New inputs collect in
# <build>/corpus/<name> beside the committed seeds in fuzz/corpus/<name>; crashes in <build>/crashes/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${HISTOGRAD_FUZZ_BUILD:-$root/build/fuzz}"
seconds="${1:-300}"
shift || true
harnesses=("$@")
[ ${#harnesses[@]} -eq 0 ] && harnesses=(safetensors pth image)

cmake -S "$root" -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DHISTOGRAD_BUILD_FUZZERS=ON -DHISTOGRAD_BUILD_TESTS=OFF -DHISTOGRAD_BUILD_EXAMPLES=OFF \
  -DHISTOGRAD_BUILD_BENCHMARKS=OFF -DHISTOGRAD_OPENMP=OFF >/dev/null
for name in "${harnesses[@]}"; do
  cmake --build "$build" --target "fuzz_$name" -j1
done

status=0
for name in "${harnesses[@]}"; do
  mkdir -p "$build/corpus/$name" "$build/crashes/$name"
  echo "== fuzz_$name for ${seconds}s"
  # A few hundred bytes of progressive JPEG may legitimately describe tens of megapixels (EOB runs
  # cover whole scans), which takes seconds under ASan: the image harness gets a longer timeout.
  timeout=10
  [ "$name" = image ] && timeout=60
  if ! "$build/fuzz/fuzz_$name" -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 \
      -timeout="$timeout" -dict="$root/fuzz/$name.dict" -artifact_prefix="$build/crashes/$name/" \
      "$build/corpus/$name" "$root/fuzz/corpus/$name" 2>"$build/fuzz_$name.log"; then
    status=1
    echo "fuzz_$name found a failure; see $build/fuzz_$name.log and $build/crashes/$name/"
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb|Done [0-9]+ runs" "$build/fuzz_$name.log" || true
done
exit $status
