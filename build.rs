//! With the `cuda` feature, compiles `src/cuda/kernels.cu` to PTX with nvcc (the toolkit candle's
//! own kernels need; see `benches/gpu/README.md`). The target is `CUDA_COMPUTE_CAP` (e.g. 90 for
//! an H100), else the first GPU `nvidia-smi` reports, else 80. Without the feature nothing runs.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/cuda/kernels.cu");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let cap = std::env::var("CUDA_COMPUTE_CAP")
        .ok()
        .or_else(|| {
            let out = Command::new("nvidia-smi")
                .args(["--query-gpu=compute_cap", "--format=csv,noheader"])
                .output()
                .ok()?;
            let text = String::from_utf8(out.stdout).ok()?;
            Some(text.lines().next()?.trim().replace('.', ""))
        })
        .unwrap_or_else(|| "80".into());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("kernels.ptx");
    let status = Command::new("nvcc")
        .args(["--ptx", "-O3", "-std=c++17", &format!("-arch=compute_{cap}"), "-o"])
        .arg(&out)
        .arg("src/cuda/kernels.cu")
        .status()
        .unwrap_or_else(|e| panic!("running nvcc for src/cuda/kernels.cu: {e} (is the CUDA toolkit on PATH?)"));
    assert!(status.success(), "nvcc failed on src/cuda/kernels.cu");
}
