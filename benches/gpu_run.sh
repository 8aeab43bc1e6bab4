#!/usr/bin/env bash
# Runs the GPU checks (and optionally a training run) on a lent GPU machine; see docs/gpu.md
# for how the folder is prepared on a CPU-only machine.
#
#   bash benches/gpu_run.sh check DIR            # gpu_check + the PyTorch reference
#                                                # (GPU_ONLY=1: skip the CPU timings)
#   bash benches/gpu_run.sh train DIR SECONDS [train options...]
#   bash benches/gpu_run.sh classifier DIR SECONDS [train-classifier options...]
#   bash benches/gpu_run.sh pretrained DIR       # LLaDA-8B / Dream-7B sizes, random bf16 weights:
#                                                # forward vs PyTorch, constrained draws, and the
#                                                # masked engine's text on cuda:0 against the CPU's
#
# DIR holds gpu_check.xz and diffusion-lm.xz (the `cuda` builds, compressed with xz; .gz works
# too). Run from the repository root: the binaries are started through benches/gpu/device-run.sh
# (a copy in DIR takes precedence), and `train` and `classifier` read the corpus in data/e2e/.
# Results go to $OUT (at most 8 files come back from the device machine, so logs are merged):
#   check: gpu_check.json, pytorch.json, check.txt
#   train: train.txt and the checkpoint's small files under e2e/ (the optimizer state stays).
#   classifier: classifier.txt and the classifier's config, weights, tokenizer and training record
#     under classifier/ (a classifier of the shipped model, reading its predictions).
#   pretrained: pretrained.txt (needs benches/gpu/pretrained/*/tokenizer.json, see benches/gpu/README.md).
set -uo pipefail
MODE=${1:?check or train}
DIR=${2:?folder with the binaries}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
THREADS=${THREADS:-8}
DEVICE_RUN=benches/gpu/device-run.sh
[ -e "$DIR/device-run.sh" ] && DEVICE_RUN=$DIR/device-run.sh
run_bin() { # device-run.sh sets the library paths; its own copy of the output is not kept
  OUT=/tmp bash "$DEVICE_RUN" "$@"
}
# Binaries come compressed: xz halves gzip's size (their PTX compresses well), which keeps both
# binaries and the checkout under the 64 MiB a device call carries. Python's lzma unpacks them
# whether or not the machine has xz.
for f in "$DIR"/*.gz; do [ -e "$f" ] && gunzip -kf "$f"; done
for f in "$DIR"/*.xz; do
  [ -e "$f" ] && python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" "$f" "${f%.xz}"
done
# The E2E corpus ships in data/e2e/, where models/e2e/data.json (read by `train-classifier`) points.
require_corpus() {
  [ -e data/e2e/devset.csv ] && [ -e data/e2e/testset_w_refs.csv ] \
    || { echo "data/e2e/*.csv not found: run from the repository root"; exit 1; }
}
# run_budgeted SECONDS PROBE_DIR OUT_DIR COMMAND [options...]: a short probe of the same
# configuration gives the step time, so the real run's step budget (and with it the
# learning-rate schedule) fits the time it has. Timed between its log lines at steps 50 and 250,
# past the first kernels' compilation.
run_budgeted() {
  local budget=$1 probe=$2 out=$3
  shift 3
  run_bin "$DIR/diffusion-lm" "$@" --out "$probe" --device cuda:0 \
    --steps 250 --checkpoint-every 100000 --no-progress --log-every 50 >/tmp/probe.txt 2>&1
  grep -E "^step (50|250)/" /tmp/probe.txt || { cat /tmp/probe.txt; return 1; }
  STEP_S=$(python3 -c "
import re
t = {int(m[0]): float(m[1]) for m in re.findall(r'^step (\d+)/\d+ .*\| ([0-9.]+)s$', open('/tmp/probe.txt').read(), re.M)}
print((t[250] - t[50]) / 200)")
  STEPS=$(python3 -c "print(int($budget / $STEP_S) // 100 * 100)")
  echo "probe: $STEP_S s/step; training $STEPS steps in about $budget s"
  run_bin "$DIR/diffusion-lm" "$@" --out "$out" --device cuda:0 \
    --steps "$STEPS" --checkpoint-every 100000 --no-progress --log-every 500
}
case "$MODE" in
check)
  {
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv
    echo "== gpu_check (Rust, candle) =="
    run_bin "$DIR/gpu_check" --device cuda:0 --model models/e2e --threads "$THREADS" --short-cpu \
      --out "$OUT/gpu_check.json" --dump /tmp/rust_io.safetensors ${GPU_ONLY:+--gpu-only}
    echo "== PyTorch reference =="
    PYTHONUNBUFFERED=1 python3 benches/pytorch_reference.py --model models/e2e \
      --dump /tmp/rust_io.safetensors --threads "$THREADS" --short-cpu --out "$OUT/pytorch.json" \
      ${GPU_ONLY:+--gpu-only}
  } 2>&1 | tee "$OUT/check.txt"
  ;;
train)
  SECONDS_BUDGET=${3:?training seconds}
  shift 3
  require_corpus
  CORPUS=(--corpus data/e2e/devset.csv data/e2e/testset_w_refs.csv)
  {
    run_budgeted "$SECONDS_BUDGET" /tmp/probe "$OUT/e2e" train "${CORPUS[@]}" "$@"
    mv "$OUT/e2e"/train_state.*.safetensors "$OUT/e2e/.lock" "$OUT/e2e/data.json" /tmp/ 2>/dev/null
    ls -la "$OUT/e2e"
  } 2>&1 | tee "$OUT/train.txt"
  ;;
classifier)
  SECONDS_BUDGET=${3:?training seconds}
  shift 3
  require_corpus
  {
    run_budgeted "$SECONDS_BUDGET" /tmp/cprobe "$OUT/classifier" train-classifier --model models/e2e \
      --reads prediction "$@"
    # At most 8 files come back: the optimizer state and the plot stay; the run's record is
    # shipped as training.json (train_state.json would make a checkout resume from it).
    mv "$OUT/classifier"/train_state.*.safetensors "$OUT/classifier/.lock" "$OUT/classifier/loss.png" /tmp/ 2>/dev/null
    # The record without the name of the state tensors file, which does not travel.
    python3 -c "import json, sys; d = json.load(open(sys.argv[1])); d.pop('tensors_file', None); json.dump(d, open(sys.argv[2], 'w'), indent=2)" \
      "$OUT/classifier/train_state.json" "$OUT/classifier/training.json" && rm "$OUT/classifier/train_state.json"
    ls -la "$OUT/classifier"
  } 2>&1 | tee "$OUT/classifier.txt"
  ;;
pretrained)
  {
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    for arch in llada-8b dream-7b; do
      echo "== $arch: candle, bf16, random weights =="
      run_bin "$DIR/pretrained_timing" "benches/gpu/pretrained/$arch" --random-weights --device cuda:0 \
        --dtype bf16 --forward 128,256,512 --reps 5 --length 256 --steps 64
      echo "== $arch: PyTorch eager, bf16 =="
      PYTHONUNBUFFERED=1 python3 benches/pytorch_pretrained_reference.py time --preset "$arch" \
        --device cuda --dtype bf16 --seqs 128,256,512 --reps 5
    done
    echo "== the masked engine's text: cuda:0 against the CPU, same seeds =="
    for dev in cpu cuda:0; do
      run_bin "$DIR/diffusion-lm" generate --model models/e2e-masked --device "$dev" --samples 16 --seed 3 \
        --schema examples/schemas/restaurant.json > "/tmp/masked-$dev.txt"
      run_bin "$DIR/diffusion-lm" generate --model models/e2e-masked --device "$dev" --samples 16 --seed 3 \
        >> "/tmp/masked-$dev.txt"
    done
    if cmp -s /tmp/masked-cpu.txt /tmp/masked-cuda:0.txt; then echo "identical (32 samples)"; else
      echo "DIFFERENT:"; diff /tmp/masked-cpu.txt /tmp/masked-cuda:0.txt | head -20; fi
  } 2>&1 | tee "$OUT/pretrained.txt"
  ;;
*)
  echo "unknown mode $MODE (check, train, classifier or pretrained)"
  exit 2
  ;;
esac
