#!/usr/bin/env bash
# One run on a GPU machine (the device tool): build histograd::cuda and the CUDA suites and
# benchmarks for the card in hand, run every CUDA test against the CPU reference, then the
# benchmarks beside PyTorch, and print a short table last. Logs go to $OUT (or ./gpu_out).
# Usage (device tool): bash scripts/gpu_check.sh [tests|bench|profile|all]   with .devdeps carried
# (scripts/gpu_devdeps.sh fills it: Eigen and doctest from this machine, DINO's reference files
# for torch_dino_step.py; HG_DEVDEPS names another folder). HG_TESTS_ONLY / HG_BENCH_ONLY: regexes
# picking test and benchmark names. profile (also part of all): Nsight Compute on the flash
# attention kernels at bf16 D128 N4096 (HG_PROFILE_CASE="N,D" picks another), the sections that
# say why the Hopper forward runs at a third of torch's speed (ATTENTION_NOTES.md).
set -uo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
out="${OUT:-$PWD/gpu_out}"
mkdir -p "$out"
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start ))s] $*"; }

# The GPU image has no Eigen or doctest and no network: use the copies carried in .devdeps.
deps="${HG_DEVDEPS:-.devdeps}"
if [ -d "$deps" ] && [ ! -d /usr/include/eigen3 ]; then
  cp -r "$deps"/include/eigen3 "$deps"/include/doctest /usr/include/ 2>/dev/null
  mkdir -p /usr/share/eigen3 /usr/lib/cmake && cp -r "$deps"/cmake/eigen3 /usr/share/eigen3/cmake &&
    cp -r "$deps"/cmake/doctest /usr/lib/cmake/doctest
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)" 2>&1 | tee -a "$out/gpu.txt"

# cuDNN: the toolkit's if it has one, else the copy PyTorch's wheels brought.
cudnn_flags=()
if ! ls /usr/local/cuda/lib64/libcudnn.so* >/dev/null 2>&1; then
  cudnn_root=$(python3 -c "import nvidia.cudnn as c; print(list(c.__path__)[0])" 2>/dev/null)
  cudnn_lib=$(ls "$cudnn_root"/lib/libcudnn.so* 2>/dev/null | head -1)
  if [ -n "$cudnn_lib" ]; then
    cudnn_flags=(-DHISTOGRAD_CUDNN_LIBRARY="$cudnn_lib" -DHISTOGRAD_CUDNN_INCLUDE_DIR="$cudnn_root/include")
    export LD_LIBRARY_PATH="$cudnn_root/lib:${LD_LIBRARY_PATH:-}"
  fi
fi
echo "cudnn: ${cudnn_flags[*]:-toolkit}" | tee -a "$out/gpu.txt"

arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')
[ "$arch" = 90 ] && arch=90a  # Hopper: the wgmma attention kernel needs the arch-specific target
stamp "configure for sm_${arch}"
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DHISTOGRAD_WSI=OFF -DHISTOGRAD_BUILD_EXAMPLES=OFF \
      -DHISTOGRAD_BUILD_BENCHMARKS=ON -DHISTOGRAD_CUDA_ARCHITECTURES="${arch}" "${cudnn_flags[@]}" >"$out/configure.log" 2>&1 ||
  { tail -30 "$out/configure.log"; exit 1; }
bench_targets=$(ls benchmarks/cuda/*.cu benchmarks/cuda/*.cpp 2>/dev/null | xargs -n1 basename 2>/dev/null | sed 's/\.[a-z]*$//' |
                grep -E "${HG_BENCH_ONLY:-.}" | tr '\n' ' ')  # HG_BENCH_ONLY: a regex picking benchmarks
stamp "build (benchmarks: ${bench_targets:-none})"
build_what="test_cuda $bench_targets"
[ "$what" = profile ] && build_what=attention_bench
make -C build/gpu -k -j"$(nproc)" $build_what >"$out/build.log" 2>&1
build_status=$?
grep -E "error|warning" "$out/build.log" | head -40
stamp "build finished with status $build_status"

declare -a summary
if [ "$what" = tests ] || [ "$what" = all ]; then
  for test in build/gpu/tests/test_cuda_*; do
    [ -x "$test" ] || continue
    name=$(basename "$test")
    echo "$name" | grep -qE "${HG_TESTS_ONLY:-.}" || continue
    timeout 300 "$test" --no-intro >"$out/$name.log" 2>&1
    status=$?
    result=$(grep -E "^\[doctest\] test cases" "$out/$name.log" | sed 's/\[doctest\] //')
    summary+=("$(printf '%-40s rc=%-3s %s' "$name" "$status" "$result")")
    [ "$status" = 0 ] || grep -E "ERROR|error|CHECK|skipped" "$out/$name.log" | head -25
  done
  stamp "tests done"
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  for name in $bench_targets; do
    bench=build/gpu/benchmarks/cuda/$name
    [ -x "$bench" ] || { summary+=("$(printf '%-40s not built' "$name")"); continue; }
    timeout 200 "$bench" >"$out/$name.log" 2>&1
    summary+=("$(printf '%-40s rc=%s' "$name" "$?")")
  done
  for script in benchmarks/cuda/torch_*.py; do
    [ -f "$script" ] && echo "$script" | grep -qE "${HG_BENCH_ONLY:-.}" || continue
    name=$(basename "$script" .py)
    PYTHONUNBUFFERED=1 timeout 200 python3 "$script" >"$out/$name.log" 2>&1
    summary+=("$(printf '%-40s rc=%s' "$name" "$?")")
  done
  stamp "benchmarks done"
  for log in "$out"/*bench.log "$out"/torch_*.log; do
    [ -f "$log" ] && { echo "== $(basename "$log")"; tail -25 "$log"; }
  done
fi
if [ "$what" = profile ] || [ "$what" = all ]; then
  bench=build/gpu/benchmarks/cuda/attention_bench
  if ! command -v ncu >/dev/null; then
    summary+=("ncu                                      not found: no profile")
  elif [ -x "$bench" ]; then
    sections=(--section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats
              --section SchedulerStats --section Occupancy --section LaunchStats --section SourceCounters)
    for pass in forward backward; do
      # the flash kernel the bench runs (Hopper's, or v1's on other cards); its 4th launch, past
      # the first warm-up calls
      kernel=attention_${pass}
      HG_ATTENTION_CASE="${HG_PROFILE_CASE:-4096,128}" timeout 150 ncu -k "regex:attention_${pass}_(hopper|flash)" --launch-skip 3 \
        --launch-count 1 "${sections[@]}" "$bench" >"$out/ncu_$kernel.log" 2>&1
      summary+=("$(printf '%-40s rc=%s' "ncu $kernel" "$?")")
      grep -E "^  attention|Duration|Compute \(SM\) Throughput|Issue Slots Busy|Registers Per|Achieved Occupancy|No Eligible|Stall|Warp Cycles Per Issued" \
        "$out/ncu_$kernel.log" | head -24
    done
    stamp "profile done"
  else
    summary+=("attention_bench                          not built: no profile")
  fi
fi
echo "== summary ($(head -1 "$out/gpu.txt"))"
printf '%s\n' "${summary[@]}"
