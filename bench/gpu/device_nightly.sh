#!/usr/bin/env bash
# The H100 side of bench/gpu/nightly_8b.py, in back-to-back device calls (one call may run 10 minutes; the
# CUDA build of llama-cpp-python alone took 299 s on 16 cores, measured 2026-11-25):
#   bash bench/gpu/device_nightly.sh setup   # CUDA llama-cpp-python build || random 8B + SentencePiece + data
#   bash bench/gpu/device_nightly.sh nights  # night 0 (builds the base GGUF once), then the timed nightly
#   bash bench/gpu/device_nightly.sh peer    # bare unsloth vs forge, alternating x3, on the same model
#   bash bench/gpu/device_nightly.sh nights-cached  # a later session, with the saved CUDA build carried
# Each writes under $OUT; /dev/shm and /tmp survive between calls while the machine stays warm.
set -x
. .device/device_setup.sh .device
export PYTHONPATH=/tmp/llama:$PWD:$PYTHONPATH
M=/dev/shm/llama8b W=/dev/shm/nightly
mkdir -p "$W"
case "$1" in
setup)
  ( t=$(date +%s); CC=/usr/bin/gcc CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++ CMAKE_BUILD_PARALLEL_LEVEL=16 \
    CMAKE_ARGS="-DGGML_NATIVE=off -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_BUILD_TESTS=off -DLLAMA_BUILD_EXAMPLES=off" \
    python3 -m pip install -q --no-deps --no-build-isolation --target /tmp/llama .device/llama_cpp_python.tar.gz \
    > /tmp/build.log 2>&1; echo "{\"stage\": \"llama_cpp_cuda_build\", \"rc\": $?, \"s\": $(( $(date +%s) - t ))}" > /tmp/build.json ) &
  python3 -m bench.gpu.nightly_8b prepare "$M" "$W" | tee -a "$OUT/nightly_runs.jsonl"
  wait
  tail -3 /tmp/build.log; cat /tmp/build.json | tee -a "$OUT/nightly_runs.jsonl"
  # Keep the CUDA build for a later session when it is small enough to travel back (carry: .device/llama-cuda).
  tar cf - -C /tmp llama | xz -T16 -6 > /tmp/llama-cuda.tar.xz; ls -la /tmp/llama-cuda.tar.xz
  if [ "$(stat -c %s /tmp/llama-cuda.tar.xz)" -lt 31457280 ]; then split -b 15m /tmp/llama-cuda.tar.xz "$OUT/llama-cuda.tar.xz.part-"; fi ;;
nights-cached)  # a later session: unpack the CUDA build saved by `setup` instead of compiling again
  mkdir -p /tmp && cat .device/llama-cuda/llama-cuda.tar.xz.part-* | xz -d | tar xf - -C /tmp
  python3 -m bench.gpu.nightly_8b prepare "$M" "$W" | tee -a "$OUT/nightly_runs.jsonl"
  python3 -m bench.gpu.nightly_8b base "$M" "$W" 2> "$OUT/night0.log" | tee -a "$OUT/nightly_runs.jsonl"
  tail -5 "$OUT/night0.log"
  python3 -m bench.gpu.nightly_8b run "$M" "$W" "$OUT" ;;
nights)
  python3 -m bench.gpu.nightly_8b base "$M" "$W" 2> "$OUT/night0.log" | tee -a "$OUT/nightly_runs.jsonl"
  tail -5 "$OUT/night0.log"
  python3 -m bench.gpu.nightly_8b run "$M" "$W" "$OUT" ;;
peer)  # bare unsloth and forge's unsloth path alternating, three rounds, then forge packed
  python3 -m bench.gpu.run_training_bench "$M" .device/bare_unsloth_bench.py "$OUT" repeat ;;
esac
ls -la "$W" "$OUT"
