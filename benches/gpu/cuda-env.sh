#!/usr/bin/env bash
# Prepare this CPU-only machine to BUILD candle's `cuda` feature (no GPU needed to build).
# Usage, from the project root:   source benches/gpu/cuda-env.sh
# Then e.g.:                       cargo build --release --features cuda --example gpu_check
# Installs the CUDA 13.0 toolkit pieces from PyPI (same pins as torch 2.11's cu130 build) into
# $CUDA_VENV (default ~/.cache/cuda13-venv), adds unversioned .so links and a link-time-only libcuda
# stub, and exports PATH, CUDA_ROOT, CUDA_HOME, CUDA_COMPUTE_CAP=90 (H100/H200), CUDARC_CUDA_VERSION.
# Keep the toolkit at 13.0: the lent GPU's driver (580, CUDA 13.0) JIT-compiles PTX ISA <= 9.0 only.
_gpu_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CUDA_VENV=${CUDA_VENV:-$HOME/.cache/cuda13-venv}
[ -x "$CUDA_VENV/bin/python" ] || python3 -m venv "$CUDA_VENV"
"$CUDA_VENV/bin/pip" install -q 'cuda-toolkit[nvcc,crt,cccl,nvvm,cudart,cublas,curand,nvrtc]==13.0.2' || return 1 2>/dev/null || exit 1
CU=$("$CUDA_VENV/bin/python" -c 'import os,nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
for l in cublas cublasLt cudart nvrtc; do ln -sf "lib$l.so.13" "$CU/lib/lib$l.so"; done
ln -sf libcurand.so.10 "$CU/lib/libcurand.so"
if [ ! -e "$CU/lib/stubs/libcuda.so" ]; then
  cargo fetch -q 2>/dev/null
  CUDARC_SRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-* 2>/dev/null | sort -V | tail -1)
  [ -n "$CUDARC_SRC" ] || { echo "cudarc source not found: add candle-core with the cuda feature to Cargo.toml first"; return 1 2>/dev/null || exit 1; }
  "$_gpu_dir/make_libcuda_stub.sh" "$CUDARC_SRC" "$CU/lib/stubs"
fi
export PATH="$CU/bin:$PATH" CUDA_ROOT="$CU" CUDA_HOME="$CU" CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} CUDARC_CUDA_VERSION=13000
nvcc --version | grep release
