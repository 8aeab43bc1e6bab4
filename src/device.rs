//! Device selection: `cpu`, `cuda[:N]` (feature `cuda`) or `metal[:N]` (feature `metal`).
//!
//! ```
//! let dev = diffusion_lm::device::parse_device("cpu").unwrap();
//! assert!(dev.is_cpu());
//! assert!(diffusion_lm::device::parse_device("tpu").is_err());
//! ```

use candle_core::{DType, Device};

use crate::{Error, Result};

/// Parses a device name and opens the device.
pub fn parse_device(name: &str) -> Result<Device> {
    let (kind, index) = match name.split_once(':') {
        Some((k, i)) => {
            let i = i
                .parse::<usize>()
                .map_err(|_| Error::Config(format!("bad device index in {name:?}")))?;
            (k, i)
        }
        None => (name, 0),
    };
    match kind {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(index)
            .map_err(|e| Error::Config(format!("cannot open {name}: {e} (built without the `cuda` feature?)"))),
        "metal" => Device::new_metal(index)
            .map_err(|e| Error::Config(format!("cannot open {name}: {e} (built without the `metal` feature?)"))),
        _ => Err(Error::Config(format!(
            "unknown device {name:?}: expected cpu, cuda[:N] or metal[:N]"
        ))),
    }
}

/// Parses a compute dtype name: `f32`, `bf16` or `f16`.
///
/// ```
/// use candle_core::DType;
/// assert_eq!(diffusion_lm::device::parse_dtype("bf16").unwrap(), DType::BF16);
/// assert!(diffusion_lm::device::parse_dtype("f8").is_err());
/// ```
pub fn parse_dtype(name: &str) -> Result<DType> {
    match name {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        _ => Err(Error::Config(format!(
            "unknown dtype {name:?}: expected f32, bf16 or f16"
        ))),
    }
}

/// Lets f32 matrix products on CUDA use TF32 tensor cores (about 10 mantissa bits in the
/// products, f32 accumulation). Off by default, as in PyTorch. A no-op without the `cuda`
/// feature and on other devices.
pub fn set_tf32(on: bool) {
    candle_core::cuda::set_gemm_reduced_precision_f32(on);
}
