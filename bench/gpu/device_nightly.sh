#!/usr/bin/env bash
# The H100 side of bench/gpu/nightly_8b.py, in two back-to-back device calls (a call may run 10 minutes;
# the CUDA build of llama-cpp-python alone takes ~300 s with 16 cores, measured 2026-11-25):
#   bash bench/gpu/device_nightly.sh setup   # CUDA llama-cpp-python build || random 8B + data; then the base q4_k_m
#   bash bench/gpu/device_nightly.sh run     # serving on the resident base; the timed nightly; the bare unsloth peer
# Both write under $OUT; /dev/shm and /tmp survive between calls while the machine stays warm.
set -x
. .device/device_setup.sh .device
M=/dev/shm/llama8b W=/dev/shm/nightly
mkdir -p "$W"
if [ "$1" = setup ]; then
  ( t=$(date +%s); CC=/usr/bin/gcc CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++ CMAKE_BUILD_PARALLEL_LEVEL=16 \
    CMAKE_ARGS="-DGGML_NATIVE=off -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_BUILD_TESTS=off -DLLAMA_BUILD_EXAMPLES=off" \
    python3 -m pip install -q --no-deps --no-build-isolation --target /tmp/llama .device/llama_cpp_python.tar.gz \
    > /tmp/build.log 2>&1; echo "{\"stage\": \"llama_cpp_cuda_build\", \"rc\": $?, \"s\": $(( $(date +%s) - t ))}" > /tmp/build.json ) &
  python3 -m bench.gpu.nightly_8b prepare "$M" "$W" | tee -a "$OUT/nightly_runs.jsonl"
  wait
  cat /tmp/build.json | tee -a "$OUT/nightly_runs.jsonl"
  export PYTHONPATH=/tmp/llama:$PYTHONPATH
  python3 -m bench.gpu.nightly_8b base "$M" "$W" | tee -a "$OUT/nightly_runs.jsonl"
else
  export PYTHONPATH=/tmp/llama:$PYTHONPATH
  python3 -m bench.gpu.nightly_8b run "$M" "$W" "$OUT"
  python3 .device/bare_unsloth_bench.py unsloth "$M" | tee "$OUT/peer.jsonl"
fi
ls -la "$W" "$OUT"
