#!/usr/bin/env bash
# Same seeds, same text: records (`record`) or checks (`check`, the default) the output of
# `diffusion-lm generate` with the shipped models in every control mode against tests/golden/.
#
#   scripts/golden.sh [check|record]
#
# Run it before and after a change that must not change behaviour (a refactor): `check` prints
# each mode's verdict, a diff for any mode whose output changed, and exits 1 if one did.
# Floating-point results depend on the CPU's vector instructions, so golden files recorded on one
# kind of machine may not match on another; record and check on the same kind.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-check}
DIR=tests/golden
BIN=${CARGO_TARGET_DIR:-target}/release/diffusion-lm
cargo build --release -p diffusion-lm-cli --quiet
mkdir -p "$DIR"

TEMPLATE='[A-Z][A-Za-z ]+ is a (pub|restaurant|coffee shop)[a-z ,]* near [A-Z][A-Za-z ]+\.'
failed=0

# run_case NAME ARGS...: `generate ARGS... --format jsonl` (defaults otherwise, self-correction
# included), recorded to or compared with tests/golden/NAME.jsonl.
run_case() {
  local name=$1 out start secs
  shift
  out=$(mktemp)
  start=$(date +%s.%N)
  "$BIN" generate "$@" --format jsonl >"$out" 2>/dev/null
  secs=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
  if [ "$MODE" = record ]; then
    mv "$out" "$DIR/$name.jsonl"
    echo "$name: recorded $(wc -l <"$DIR/$name.jsonl") samples (${secs}s)"
  elif cmp -s "$out" "$DIR/$name.jsonl"; then
    echo "$name: identical (${secs}s)"
    rm -f "$out"
  else
    echo "$name: CHANGED (${secs}s)"
    diff "$DIR/$name.jsonl" "$out" || true
    rm -f "$out"
    failed=1
  fi
}

# The continuous engine (`--syntax` chooses it without --model).
CONT=(--model models/e2e)
run_case plain --samples 4 --steps 50 --seed 1 "${CONT[@]}"
run_case regex --samples 4 --steps 50 --seed 2 --regex "$TEMPLATE" "${CONT[@]}"
run_case length --samples 4 --steps 50 --seed 3 --length 10..20 "${CONT[@]}"
run_case infill --samples 4 --steps 50 --seed 4 --infill "The Eagle is a ___ near ___." "${CONT[@]}"
run_case schema --samples 4 --steps 50 --seed 5 --schema examples/schemas/restaurant.json "${CONT[@]}"
run_case grammar --samples 4 --steps 50 --seed 6 --grammar grammars/arithmetic.gbnf "${CONT[@]}"
run_case attribute --samples 2 --steps 20 --seed 7 --attribute food=Italian "${CONT[@]}"
run_case syntax --samples 2 --steps 30 --seed 8 --syntax json --rewrite-rounds 1
# The masked engine, `generate`'s default.
run_case masked-plain --samples 4 --seed 1
run_case masked-regex --samples 4 --seed 2 --regex "$TEMPLATE"
run_case masked-length --samples 4 --seed 3 --length 10..20
run_case masked-infill --samples 4 --seed 4 --infill "The Eagle is a ___ near ___."
run_case masked-schema --samples 4 --seed 5 --schema examples/schemas/restaurant.json
run_case masked-grammar --samples 4 --seed 6 --grammar grammars/arithmetic.gbnf
run_case masked-attribute --samples 4 --seed 7 --attribute food=Italian
exit $failed
