#!/usr/bin/env bash
# A long fuzz run of the parsers users feed: JSON Schema, GBNF and regex compilation
# (controllers/tests/fuzz.rs), config.json / tokenizer.json / checkpoint loading
# (tests/fuzz_loading.rs) and the CLI's value parsers (cli/src/fuzz_tests.rs).
#
#   benches/fuzz.sh [CASES]      # CASES per property, default 20000
#
# Each property runs CASES cases (the slow ones a fraction: see the `cases(default, divisor)`
# calls in each file) and writes a `FUZZ` line with the inputs it tried to the file named by
# `FUZZ_REPORT`; a panic, or a wrong result on a well-formed input, fails the property with
# proptest's minimal failing input. This script sums the inputs per target and exits non-zero if
# any property failed. Logs are kept in a temporary directory (printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

cases="${1:-20000}"
logs=$(mktemp -d "${TMPDIR:-/tmp}/diffusion-lm-fuzz.XXXXXX")
status=0

echo "building the fuzz targets (release)..."
cargo test --release -p diffusion-lm-controllers --test fuzz --no-run >"$logs/build.log" 2>&1
cargo test --release -p diffusion-lm --test fuzz_loading --no-run >>"$logs/build.log" 2>&1
cargo test --release -p diffusion-lm-cli --bin diffusion-lm --no-run >>"$logs/build.log" 2>&1

# run NAME CARGO-TEST-ARGS...: one target, summarised.
run() {
    local name=$1
    shift
    local log="$logs/$name.log" report="$logs/$name.report"
    local start=$SECONDS ok=1
    : >"$report"
    FUZZ_CASES=$cases FUZZ_REPORT="$report" cargo test --release "$@" -- --nocapture >"$log" 2>&1 || ok=0
    local took=$((SECONDS - start))
    cut -c1-160 "$report" | sed 's/^/    /'
    local tried props
    tried=$(grep -a '^FUZZ .* inputs tried' "$report" | sed -E 's/^FUZZ [^:]*: ([0-9]+) inputs tried.*/\1/' |
        awk '{ s += $1 } END { print s + 0 }')
    props=$(grep -ac '^FUZZ .* inputs tried' "$report" || true)
    if [ "$ok" = 1 ]; then
        echo "$name: $tried inputs tried over $props properties, 0 panics, all properties held (${took} s)"
    else
        status=1
        echo "$name: FAILED after ${took} s; $tried inputs tried by the properties that passed. Failures:"
        grep -a -E "^fuzz .*Test failed|minimal failing input" -A3 "$log" | cut -c1-400 | sed 's/^/    /' || true
        echo "    (full log: $log)"
    fi
}

echo "FUZZ_CASES=$cases"
run controllers -p diffusion-lm-controllers --test fuzz
run engine -p diffusion-lm --test fuzz_loading
run cli -p diffusion-lm-cli --bin diffusion-lm fuzz_tests
echo "logs: $logs"
exit $status
