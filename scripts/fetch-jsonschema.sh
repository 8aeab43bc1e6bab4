#!/usr/bin/env bash
# Fetches the JSONSchemaBench evaluation set (schemas with labelled valid and invalid instances)
# that `diffusion-lm eval-schemas` and `cargo bench -p diffusion-lm --bench json_schema` read, into
# data/jsonschema/ (git-ignored), one folder per subset, one file per schema:
#
#   data/jsonschema/Github_easy/Github_easy---o10008.json
#   data/jsonschema/BFCL/BFCL_java_0.json
#   each file: {"description", "meta", "schema", "tests": [{"description", "valid", "data"}, ...]}
#
# Usage, from the repository root:
#
#   scripts/fetch-jsonschema.sh                 # download from GitHub (best-effort, see below)
#   scripts/fetch-jsonschema.sh SOURCE_DIR      # copy from a local folder (no network)
#
# SOURCE_DIR may be
#   - a folder already in the layout above (one folder per subset), which is copied; or
#   - a checkout of github.com/guidance-ai/jsonschemabench, or its `maskbench/data` folder (one
#     flat folder of `<Subset>---<id>.json` / `BFCL_<...>.json` / `JME_<n>.json` files), which is
#     sorted into one folder per subset.
#
# Without SOURCE_DIR the script downloads the archive of github.com/guidance-ai/jsonschemabench at
# $JSONSCHEMABENCH_REF (default `main`) and sorts its `maskbench/data` folder the same way. The
# files are not changed, only grouped. This path is best-effort: the project's measured tables
# used a copy whose files match upstream's `maskbench/data` (spot-checked), but upstream may have
# changed the files since, which shifts the numbers; pin JSONSCHEMABENCH_REF to a commit to
# reproduce a run. (The Hugging Face dataset epfl-dlab/JSONSchemaBench holds the schemas without
# the labelled instances, so it cannot stand in for this set.)
#
# Environment:
#   SUBSETS              subsets to keep, separated by spaces, or `all` (default: the seven that
#                        docs/results.md's table covers: Glaiveai2K Github_trivial Github_easy BFCL JME
#                        Handwritten Synthesized)
#   JSONSCHEMABENCH_REF  branch, tag or commit to download (default: main)
#   DEST                 where to write (default: data/jsonschema); an existing folder is replaced
#
# Source: JSONSchemaBench / MaskBench (guidance-ai/jsonschemabench; Geng et al., arXiv:2501.10868),
# curated from json-schema-corpus, GlaiveAI function calls, BFCL and others; see that repository
# for its license and the licenses of its sources.
set -euo pipefail

SUBSETS=${SUBSETS:-"Glaiveai2K Github_trivial Github_easy BFCL JME Handwritten Synthesized"}
REF=${JSONSCHEMABENCH_REF:-main}
DEST=${DEST:-data/jsonschema}
REPO_URL=https://github.com/guidance-ai/jsonschemabench
SRC=${1:-}

die() {
  echo "fetch-jsonschema: $*" >&2
  exit 1
}
wanted() { # wanted SUBSET: whether SUBSETS keeps it
  [ "$SUBSETS" = all ] && return 0
  local s
  for s in $SUBSETS; do [ "$s" = "$1" ] && return 0; done
  return 1
}
# subset_of NAME sets SUBSET to the subset of a flat file name: the part before `---`, else the
# part before the first `_` (BFCL_java_0.json, JME_0.json).
subset_of() {
  case $1 in
  *---*) SUBSET=${1%%---*} ;;
  *_*) SUBSET=${1%%_*} ;;
  *) SUBSET=other ;;
  esac
}
# flush copies the batch of files of subset $batch_subset (one cp per run of a subset).
flush() {
  if [ "${#batch[@]}" -gt 0 ]; then
    mkdir -p "$OUT_DIR/$batch_subset"
    cp -p "${batch[@]}" "$OUT_DIR/$batch_subset/"
    copied=$((copied + ${#batch[@]}))
  fi
  batch=()
}

[ "$#" -le 1 ] || die "usage: $0 [SOURCE_DIR]"
if [ -e "$DEST" ] && [ ! -d "$DEST" ]; then die "$DEST exists and is not a folder"; fi
mkdir -p "$(dirname "$DEST")"
WORK=$(mktemp -d "${DEST%/}.partial.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
OUT_DIR=$WORK/out
mkdir -p "$OUT_DIR"

if [ -z "$SRC" ]; then
  URL=$REPO_URL/archive/$REF.tar.gz
  echo "downloading $URL (best-effort; pass a local folder to copy instead)"
  if command -v curl >/dev/null; then
    curl -fL --retry 3 --progress-bar -o "$WORK/archive.tar.gz" "$URL" || die "download failed: $URL"
  elif command -v wget >/dev/null; then
    wget -O "$WORK/archive.tar.gz" "$URL" || die "download failed: $URL"
  else
    die "neither curl nor wget found; download $URL yourself and pass the unpacked folder"
  fi
  mkdir -p "$WORK/src"
  tar -xzf "$WORK/archive.tar.gz" -C "$WORK/src" || die "cannot unpack $URL"
  rm -f "$WORK/archive.tar.gz"
  SRC=$(find "$WORK/src" -mindepth 1 -maxdepth 1 -type d | head -n 1)
  [ -n "$SRC" ] || die "the archive of $URL is empty"
fi

[ -d "$SRC" ] || die "$SRC is not a folder"
[ -d "$SRC/maskbench/data" ] && SRC=$SRC/maskbench/data

shopt -s nullglob
flat=("$SRC"/*.json)
copied=0
if [ "${#flat[@]}" -gt 0 ]; then
  # One flat folder (upstream's maskbench/data): sort the files into one folder per subset.
  echo "sorting ${#flat[@]} files of $SRC into subsets"
  batch=()
  batch_subset=
  for f in "${flat[@]}"; do
    subset_of "${f##*/}"
    wanted "$SUBSET" || continue
    [ "$SUBSET" = "$batch_subset" ] || { flush; batch_subset=$SUBSET; }
    batch+=("$f")
  done
  flush
else
  # Already one folder per subset: copy the wanted ones.
  for d in "$SRC"/*/; do
    s=$(basename "$d")
    wanted "$s" || continue
    files=("$d"*.json)
    [ "${#files[@]}" -gt 0 ] || continue
    mkdir -p "$OUT_DIR/$s"
    cp -p "${files[@]}" "$OUT_DIR/$s/"
    copied=$((copied + ${#files[@]}))
  done
fi
[ "$copied" -gt 0 ] || die "no schema files of the subsets '$SUBSETS' found in $SRC"

# Every subset asked for by name should be there.
if [ "$SUBSETS" != all ]; then
  for s in $SUBSETS; do
    [ -d "$OUT_DIR/$s" ] || echo "warning: subset $s not found in $SRC" >&2
  done
fi
{
  echo "# JSONSchemaBench evaluation set (fetched, not tracked)"
  echo
  echo "Written by scripts/fetch-jsonschema.sh on $(date -u +%Y-%m-%d) from ${1:-$REPO_URL at $REF}."
  echo "Source: JSONSchemaBench / MaskBench (guidance-ai/jsonschemabench; Geng et al., arXiv:2501.10868)."
  echo "The files are unchanged, only grouped into one folder per subset."
  echo
  for d in "$OUT_DIR"/*/; do
    n=("$d"*.json)
    echo "- $(basename "$d"): ${#n[@]} schemas"
  done
} >"$OUT_DIR/README.md"

rm -rf "$DEST"
mv "$OUT_DIR" "$DEST"
echo "wrote $copied schema files to $DEST:"
sed -n 's/^- /  /p' "$DEST/README.md"
