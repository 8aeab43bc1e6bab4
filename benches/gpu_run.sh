#!/usr/bin/env bash
# Runs the GPU checks (and optionally a training run) on a lent GPU machine; see the README's
# "GPU" section for how the folder is prepared on a CPU-only machine.
#
#   bash benches/gpu_run.sh check DIR            # gpu_check + the PyTorch reference
#   bash benches/gpu_run.sh train DIR SECONDS [train options...]
#
# DIR holds gpu_check.gz and diffusion-lm.gz (the `cuda` builds, gzipped: their PTX compresses
# well), device-run.sh from ../shared/gpu, and e2e/*.csv (the corpus, for `train`). Results go
# to $OUT (at most 8 files come back from the device machine, so logs are merged):
#   check: gpu_check.json, pytorch.json, check.txt
#   train: train.txt and the checkpoint's small files under e2e/ (the optimizer state stays).
set -uo pipefail
MODE=${1:?check or train}
DIR=${2:?folder with the binaries}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
THREADS=${THREADS:-8}
run_bin() { # device-run.sh sets the library paths; its own copy of the output is not kept
  OUT=/tmp bash "$DIR/device-run.sh" "$@"
}
for f in "$DIR"/*.gz; do gunzip -kf "$f"; done
case "$MODE" in
check)
  {
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv
    echo "== gpu_check (Rust, candle) =="
    run_bin "$DIR/gpu_check" --device cuda:0 --model models/e2e --threads "$THREADS" --short-cpu \
      --out "$OUT/gpu_check.json" --dump /tmp/rust_io.safetensors
    echo "== PyTorch reference =="
    PYTHONUNBUFFERED=1 python3 benches/pytorch_reference.py --model models/e2e \
      --dump /tmp/rust_io.safetensors --threads "$THREADS" --short-cpu --out "$OUT/pytorch.json"
  } 2>&1 | tee "$OUT/check.txt"
  ;;
train)
  SECONDS_BUDGET=${3:?training seconds}
  shift 3
  mkdir -p ../shared/data && cp -r "$DIR/e2e" ../shared/data/ || exit 1
  CORPUS=(--corpus ../shared/data/e2e/devset.csv ../shared/data/e2e/testset_w_refs.csv)
  {
    # A short probe of the same configuration gives the step time, so the real run's step
    # budget (and with it the learning-rate schedule) fits the time it has.
    # Timed between its log lines at steps 50 and 250, past the first kernels' compilation.
    run_bin "$DIR/diffusion-lm" train "${CORPUS[@]}" --out /tmp/probe --device cuda:0 \
      --steps 250 --checkpoint-every 100000 --no-progress --log-every 50 "$@" >/tmp/probe.txt 2>&1
    grep -E "^step (50|250)/" /tmp/probe.txt
    STEP_S=$(python3 -c "
import re
t = {int(m[0]): float(m[1]) for m in re.findall(r'^step (\d+)/\d+ .*\| ([0-9.]+)s$', open('/tmp/probe.txt').read(), re.M)}
print((t[250] - t[50]) / 200)")
    STEPS=$(python3 -c "print(int($SECONDS_BUDGET / $STEP_S) // 100 * 100)")
    echo "probe: $STEP_S s/step; training $STEPS steps in about $SECONDS_BUDGET s"
    run_bin "$DIR/diffusion-lm" train "${CORPUS[@]}" --out "$OUT/e2e" --device cuda:0 \
      --steps "$STEPS" --checkpoint-every 100000 --no-progress --log-every 500 "$@"
    mv "$OUT/e2e/train_state.safetensors" "$OUT/e2e/data.json" /tmp/ 2>/dev/null
    ls -la "$OUT/e2e"
  } 2>&1 | tee "$OUT/train.txt"
  ;;
*)
  echo "unknown mode $MODE (check or train)"
  exit 2
  ;;
esac
