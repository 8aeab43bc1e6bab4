#!/usr/bin/env bash
# Run a CUDA binary built here (with cuda-env.sh) on the lent GPU machine.
# Usage there, from the project root:   bash benches/gpu/device-run.sh path/to/binary [args...]
#   (the script is tracked, so it travels with the working tree; benches/gpu_run.sh also accepts
#    a copy next to the binaries in the git-ignored folder you name in `carry`.)
# It finds the machine's CUDA 13 libraries (PyTorch's cu13 wheels) and the driver's libcuda,
# sets LD_LIBRARY_PATH, and runs the binary; output is also written to $OUT/run.txt.
set -uo pipefail
B=${1:?binary}; shift; chmod +x "$B"
nvidia-smi -L
L=
for n in libcublas.so.13 libcublasLt.so.13 libcudart.so.13 libcurand.so.10; do
  f=$(find /opt/torch/.venv /usr/local/cuda/ /usr /opt -name $n -not -path '*/stubs/*' -not -path '*/compat/*' -print -quit 2>/dev/null)
  [ -n "$f" ] && L=$L:${f%/*} || echo "MISSING $n"
done
ldconfig -p | grep -q 'libcuda\.so\.1 ' || { f=$(find / -xdev -name libcuda.so.1 -not -path '*/stubs/*' -not -path '*/compat/*' -print -quit 2>/dev/null); [ -n "$f" ] && L=$L:${f%/*}; }
export LD_LIBRARY_PATH=$(echo "${L#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" | tr : '\n' | awk 'NF&&!s[$0]++' | paste -sd:)
"$B" "$@" 2>&1 | tee "${OUT:-/tmp}/run.txt"
