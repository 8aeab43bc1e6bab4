#!/usr/bin/env bash
# Both engines side by side on the same tasks (issue 19's comparison): for the continuous model
# (models/e2e) and the masked model (models/e2e-masked), `diffusion-lm eval` on
#   plain, the sentence template regex, the infill template, --length 10..20, the restaurant schema
# with the reference LM of models/e2e/ar (both models share its tokenizer). Writes each report to
# runs/compare/ENGINE-TASK.json and the samples, one per line, to runs/compare/ENGINE-TASK.txt.
#
#   scripts/compare-engines.sh [SAMPLES] [ENGINES]     # defaults: 32 "continuous masked"
#
# Each engine runs with its defaults, except the masked engine's commit order, which is
# semi-autoregressive here ($MASKED_FLAGS, default "--block-size 8 --temperature 0.7": with the
# shipped masked model, one block at temperature 1 writes JSON keys into sentences).
set -euo pipefail
cd "$(dirname "$0")/.."
SAMPLES=${1:-32}
ENGINES=${2:-continuous masked}
BIN=${CARGO_TARGET_DIR:-target}/release/diffusion-lm
cargo build --release -p diffusion-lm-cli --quiet
OUT=runs/compare
mkdir -p "$OUT"
TEMPLATE='[A-Z][A-Za-z ]+ is a (pub|restaurant|coffee shop)[a-z ,]* near [A-Z][A-Za-z ]+\.'
for engine in $ENGINES; do
  case $engine in
    continuous) model=models/e2e; steps=200; extra=() ;;
    masked) model=models/e2e-masked; steps=64; extra=(${MASKED_FLAGS:---block-size 8 --temperature 0.7}) ;;
    *) echo "unknown engine $engine" >&2; exit 1 ;;
  esac
  run() {
    local task=$1
    shift
    "$BIN" eval --model "$model" --ar-model models/e2e/ar --samples "$SAMPLES" --steps "$steps" --seed 1 \
      --samples-out "$OUT/$engine-$task.txt" "${extra[@]}" "$@" > "$OUT/$engine-$task.json" 2>/dev/null
    python3 -c "import json,sys; r=json.load(open('$OUT/$engine-$task.json')); print(f\"$engine $task: ppl {r['sample_perplexity']:.2f} (held-out {r['heldout_perplexity']:.2f}), {r['samples']} samples, {r['seconds_sampling']/r['samples']:.2f} s/sample\")"
  }
  run plain
  run template --regex "$TEMPLATE"
  run infill --infill 'The Eagle is a ___ near ___.'
  run length --length 10..20
  run schema --schema examples/schemas/restaurant.json
done
