#!/usr/bin/env bash
# The H100 side of bench/gpu/nightly_8b.py, in back-to-back device calls (one call may run 10 minutes; the
# CUDA build of llama-cpp-python alone took 299 s on 16 cores, measured 2026-11-25):
#   bash bench/gpu/device_nightly.sh setup   # CUDA llama-cpp-python build || random 8B + SentencePiece + data
#   bash bench/gpu/device_nightly.sh night0  # night 0 (its export builds the base GGUF once)
#   bash bench/gpu/device_nightly.sh setup0  # both in one call: night 0 trains while llama-cpp-python builds
#   bash bench/gpu/device_nightly.sh nights  # three timed nightlies on three nights' data (NIGHTS="1 2 3")
#   bash bench/gpu/device_nightly.sh peer    # bare unsloth vs forge, alternating x3, on the same model
#   bash bench/gpu/device_nightly.sh peer2   # bare unsloth vs forge at 4x512 and 4x2048, alternating x2
#   bash bench/gpu/device_nightly.sh together  # one timed nightly (night $NIGHT, default 1), then peer2, in one command
#   bash bench/gpu/device_nightly.sh nightspeer  # timed nightlies (NIGHTS, default "1 2"), then one round of peer2
#   bash bench/gpu/device_nightly.sh quants    # the newest adapter's fidelity on q8_0 and q4_k_m bases
#   bash bench/gpu/device_nightly.sh skip       # checkpoint_skip_layers 0 vs auto beside bare unsloth
#   bash bench/gpu/device_nightly.sh profile    # where a 4x512 step's time goes, forge vs bare unsloth
#   bash bench/gpu/device_nightly.sh trainonly  # training + adapter export only, after/before/after (no llama.cpp build)
# Each writes under $OUT; /dev/shm and /tmp survive between calls while the machine stays warm.
set -x
. .device/device_setup.sh .device
# presidio-analyzer, spaCy (imported by presidio, no model), detect-secrets, phonenumbers, tldextract: the
# redactor's libraries (issue 12's back-translation curates), a second bundle because the first plus these
# would pass the 64 MiB limit unpruned (phonenumbers' geocoding data dropped, .so files stripped: 11 MiB).
# Made with make_device_bundle.py (device_packages.txt extended by the first bundle's package names) for
# "presidio-analyzer==2.2.366" "detect-secrets==1.5.0" "phonenumbers>=8.13" "tldextract>=5", then in the
# unpacked site: strip --strip-unneeded on every .so; delete *.pyx *.pxd *.c *.cpp *.h and phonenumbers/
# {geodata,carrierdata,tzdata}; tar cJf .device/site2.tar.xz . Unpacked into a folder of its own and put on the
# path only where curation runs (night0's back-translation): /tmp/site outlives a call on a warm machine, and
# the timed nightlies should import from the path they had before this bundle existed.
export PYTHONPATH=/tmp/llama:$PWD:$PYTHONPATH
M=/dev/shm/llama8b W=/dev/shm/nightly
mkdir -p "$W"
build_llama() {  # in the background; /tmp/build.json appears when pip returns (a kept /tmp/llama would stay)
  rm -rf /tmp/llama /tmp/build.json
  ( t=$(date +%s); CC=/usr/bin/gcc CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++ CMAKE_BUILD_PARALLEL_LEVEL=16 \
    CMAKE_ARGS="-DGGML_NATIVE=off -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_BUILD_TESTS=off -DLLAMA_BUILD_EXAMPLES=off" \
    python3 -m pip install -q --no-deps --no-build-isolation --target /tmp/llama .device/llama_cpp_python.tar.gz \
    > /tmp/build.log 2>&1; echo "{\"stage\": \"llama_cpp_cuda_build\", \"rc\": $?, \"s\": $(( $(date +%s) - t ))}" > /tmp/build.json.part
    mv /tmp/build.json.part /tmp/build.json ) &
}
case "$1" in
setup0)  # setup and night 0 in one call: night 0 trains while llama-cpp-python builds, its export waits for the
  # build (no back-translation, no import profile); its stage times are not comparable with night0's
  build_llama
  python3 -m bench.gpu.nightly_8b prepare "$M" "$W" | tee -a "$OUT/nightly_runs.jsonl"
  BENCH_WAIT_BUILD=/tmp/build.json python3 -m bench.gpu.nightly_8b base "$M" "$W" 2> "$OUT/night0.log" \
    | tee -a "$OUT/nightly_runs.jsonl"
  tail -5 "$OUT/night0.log"; wait; tail -3 /tmp/build.log; cat /tmp/build.json | tee -a "$OUT/nightly_runs.jsonl" ;;
setup)
  build_llama
  python3 -m bench.gpu.nightly_8b prepare "$M" "$W" | tee -a "$OUT/nightly_runs.jsonl"
  # where the nightly's ~29 s of imports go (measured while the build runs: shares, not absolute times)
  python3 -X importtime -c "import unsloth; import trl; from trl import SFTTrainer" 2> /tmp/importtime.log
  sort -t'|' -k2 -n -r /tmp/importtime.log | head -40 > "$OUT/importtime_top.txt"
  wait
  tail -3 /tmp/build.log; cat /tmp/build.json | tee -a "$OUT/nightly_runs.jsonl" ;;
night0)  # right after setup (the machine stays warm ~30 s): its export builds the resident base GGUF (~150 s once)
  python3 -m bench.gpu.nightly_8b base "$M" "$W" 2> "$OUT/night0.log" | tee -a "$OUT/nightly_runs.jsonl"
  tail -5 "$OUT/night0.log"
  # back-translated user turns on the GPU path (issue 12), generating with the base GGUF night 0 built
  # (BACKTRANSLATE=0: not, ~50 s less, for a `setup; night0` chained in one call)
  if [ "${BACKTRANSLATE:-1}" != 0 ]; then
    mkdir -p /tmp/site2 && tar xJf .device/site2.tar.xz -C /tmp/site2
    PYTHONPATH=/tmp/site2:$PYTHONPATH python3 -m bench.gpu.backtranslate_gpu "$(ls "$W"/home/base_models/gguf/*/base-*.gguf | head -1)" \
      2> "$OUT/backtranslate.log" | tee -a "$OUT/nightly_runs.jsonl"; tail -3 "$OUT/backtranslate.log"
  fi ;;
nights)  # timed nightlies against a server on the base GGUF, each on a later night's data: this tree on
  # nights 1 and 3; on night 2 the code before this round's changes (BEFORE: that commit's tree, carried in
  # .bench_before), so before and after run on one machine in one command
  for seed in ${NIGHTS:-1 2 3}; do
    if [ $seed = 2 ] && [ -d "${BEFORE:-.bench_before}" ]; then
      ( cd "${BEFORE:-.bench_before}" && PYTHONPATH=/tmp/llama:$PWD:/tmp/site BENCH_DATA_SEED=$seed \
        python3 -m bench.gpu.nightly_8b run "$M" "$W" "$OUT" | sed 's/^{/{"code": "before", /' )
    else
      BENCH_DATA_SEED=$seed python3 -m bench.gpu.nightly_8b run "$M" "$W" "$OUT"
    fi
    cp "$OUT/nightly.log" "$OUT/nightly-$seed.log"
  done
  # the Dagster job's export validation, which the timed nightly leaves out, timed on its own (VALIDATE=0: not)
  if [ "${VALIDATE:-1}" = 1 ]; then
    python3 -m bench.gpu.nightly_8b validate "$M" "$W" 2> "$OUT/validate.log" | tee -a "$OUT/nightly_runs.jsonl"
  fi ;;
trainonly)  # no llama.cpp build: data, then training + adapter export on an f16 base (the first run builds it
  # once, its export base_s), this tree on nights 1 and 3, the code before this round on night 2
  python3 -m bench.gpu.nightly_8b prepare "$M" "$W" | tee -a "$OUT/nightly_runs.jsonl"
  export BENCH_QUANT=f16
  for seed in ${NIGHTS:-1 2 3}; do
    if [ $seed = 2 ]; then
      ( cd .bench_before && PYTHONPATH=$PWD:/tmp/site python3 ../bench/gpu/train_export_8b.py "$M" "$W" $seed )
    else
      python3 bench/gpu/train_export_8b.py "$M" "$W" $seed
    fi 2> "$OUT/train-$seed.log" | grep '^{"stage"' | tee -a "$OUT/nightly_runs.jsonl"
  done ;;
skipnight)  # night 1's training alone (no llama.cpp), checkpoint_skip_layers auto then 0, then auto again
  BENCH_PREPARE_SEEDS=1 python3 -m bench.gpu.nightly_8b prepare "$M" "$W" > "$OUT/prepare.json"
  for skip in auto 0 auto; do
    rm -rf "$W/home/training"  # the setting leaves the fingerprint alone: a kept adapter would be reused
    BENCH_SKIP=$skip BENCH_NO_EXPORT=1 python3 bench/gpu/train_export_8b.py "$M" "$W" 1 2> "$OUT/train-1-$skip.log" \
      | grep '^{"stage"' | tee -a "$OUT/nightly_runs.jsonl"
  done ;;
trainnow)  # the shortest lease: the random 8B and night 1's data, then training alone (BENCH_NO_EXPORT=1)
  BENCH_PREPARE_SEEDS=1 python3 -m bench.gpu.nightly_8b prepare "$M" "$W" > "$OUT/prepare.json"
  BENCH_NO_EXPORT=1 python3 bench/gpu/train_export_8b.py "$M" "$W" 1 2> "$OUT/train-1.log" \
    | grep '^{"stage"' | tee -a "$OUT/nightly_runs.jsonl" ;;
first)  # when device time is short: no night 0; the timed night builds the base GGUF (its export base_s, once)
  # and serving, started empty, loads base and adapter at the swap; base probes and losses are not cached yet
  BENCH_DATA_SEED=1 python3 -m bench.gpu.nightly_8b run "$M" "$W" "$OUT"; cp "$OUT/nightly.log" "$OUT/nightly-1.log" ;;
together)  # issue 14 asks for the nightly measured in one command with the bare-unsloth peer alongside
  BENCH_DATA_SEED=${NIGHT:-1} python3 -m bench.gpu.nightly_8b run "$M" "$W" "$OUT"
  cp "$OUT/nightly.log" "$OUT/nightly-${NIGHT:-1}.log"
  python3 -m bench.gpu.run_training_bench "$M" .device/bare_unsloth_bench.py "$OUT" repeat2 ;;
nightspeer)  # a short lease: timed nightlies on nights $NIGHTS (default 1 2), then one round of bare unsloth vs
  # forge (4x512, 4x2048), all in one command (~480 s): one pair per shape, quoted as such (4x512 moves +-20%)
  for seed in ${NIGHTS:-1 2}; do
    BENCH_DATA_SEED=$seed python3 -m bench.gpu.nightly_8b run "$M" "$W" "$OUT"; cp "$OUT/nightly.log" "$OUT/nightly-$seed.log"
  done
  python3 -m bench.gpu.run_training_bench "$M" .device/bare_unsloth_bench.py "$OUT" once ;;
quants)  # issue 14's fidelity table on the H100: the newest adapter on a q8_0 base (built here once) and q4_k_m
  python3 -m bench.gpu.nightly_8b quants "$M" "$W" 2> "$OUT/quants.log" | tee -a "$OUT/nightly_runs.jsonl"
  tail -3 "$OUT/quants.log" ;;
peer)  # bare unsloth and forge's unsloth path alternating, three rounds, then forge packed
  python3 -m bench.gpu.run_training_bench "$M" .device/bare_unsloth_bench.py "$OUT" repeat ;;
skip)  # needs only the random 8B: checkpoint_skip_layers 0 vs auto beside bare unsloth (~480 s)
  python3 -m bench.gpu.run_training_bench "$M" .device/bare_unsloth_bench.py "$OUT" skip ;;
profile)  # needs only the random 8B: where a 4x512 step's time goes, forge (like for like) vs bare unsloth
  python3 -m bench.gpu.run_training_bench "$M" .device/bare_unsloth_bench.py "$OUT" profile ;;
peer2)
  python3 -m bench.gpu.run_training_bench "$M" .device/bare_unsloth_bench.py "$OUT" repeat2 ;;
esac
ls -la "$W" "$OUT"
