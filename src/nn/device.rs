//! Device selection: `cpu`, `cuda[:N]` (feature `cuda`) or `metal[:N]` (feature `metal`).
//!
//! ```
//! let dev = diffusion_lm::nn::device::parse_device("cpu").unwrap();
//! assert!(dev.is_cpu());
//! assert!(diffusion_lm::nn::device::parse_device("tpu").is_err());
//! ```

use candle_core::{DType, Device};

use crate::{Error, Result};

/// Parses a device name ([`DeviceSpec`]) and opens the device.
pub fn parse_device(name: &str) -> Result<Device> {
    name.parse::<DeviceSpec>()?.open()
}

/// Parses a compute dtype name: `f32`, `bf16` or `f16`.
///
/// ```
/// use candle_core::DType;
/// assert_eq!(diffusion_lm::nn::device::parse_dtype("bf16").unwrap(), DType::BF16);
/// assert!(diffusion_lm::nn::device::parse_dtype("f8").is_err());
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

/// Where a model runs: `cpu`, `cuda[:N]` or `metal[:N]` (the typed form of [`parse_device`]).
///
/// ```
/// use diffusion_lm::nn::device::DeviceSpec;
/// let spec: DeviceSpec = "cuda:1".parse().unwrap();
/// assert_eq!(spec, DeviceSpec::Cuda(1));
/// assert_eq!(spec.to_string(), "cuda:1");
/// assert!("tpu".parse::<DeviceSpec>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// The CPU.
    #[default]
    Cpu,
    /// CUDA GPU number N (feature `cuda`).
    Cuda(usize),
    /// Metal GPU number N (feature `metal`).
    Metal(usize),
}

impl DeviceSpec {
    /// Opens the device.
    pub fn open(self) -> Result<Device> {
        let opened = match self {
            DeviceSpec::Cpu => return Ok(Device::Cpu),
            DeviceSpec::Cuda(i) => Device::new_cuda(i),
            DeviceSpec::Metal(i) => Device::new_metal(i),
        };
        opened.map_err(|e| {
            let feature = if matches!(self, DeviceSpec::Cuda(_)) {
                "cuda"
            } else {
                "metal"
            };
            Error::Config(format!(
                "cannot open {self}: {e} (built without the `{feature}` feature?)"
            ))
        })
    }
}

impl std::str::FromStr for DeviceSpec {
    type Err = Error;
    fn from_str(name: &str) -> Result<Self> {
        let (kind, index) = match name.split_once(':') {
            Some((k, i)) => {
                let i = i
                    .parse::<usize>()
                    .map_err(|_| Error::Config(format!("bad device index in {name:?}")))?;
                (k, Some(i))
            }
            None => (name, None),
        };
        match (kind, index) {
            ("cpu", _) => Ok(DeviceSpec::Cpu),
            ("cuda", i) => Ok(DeviceSpec::Cuda(i.unwrap_or(0))),
            ("metal", i) => Ok(DeviceSpec::Metal(i.unwrap_or(0))),
            _ => Err(Error::Config(format!(
                "unknown device {name:?}: expected cpu, cuda[:N] or metal[:N]"
            ))),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::Metal(i) => write!(f, "metal:{i}"),
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = String;
    /// For serde: the bare message, which the config reader puts in its own context.
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse().map_err(|e: Error| e.bare_message())
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

/// The dtype a denoiser's transformer computes in (the typed form of [`parse_dtype`]).
///
/// ```
/// use diffusion_lm::nn::device::ComputeDtype;
/// assert_eq!("bf16".parse::<ComputeDtype>().unwrap(), ComputeDtype::Bf16);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeDtype {
    /// 32-bit floats.
    #[default]
    F32,
    /// bfloat16 (GPUs).
    Bf16,
    /// IEEE half precision (GPUs).
    F16,
}

impl ComputeDtype {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            ComputeDtype::F32 => DType::F32,
            ComputeDtype::Bf16 => DType::BF16,
            ComputeDtype::F16 => DType::F16,
        }
    }
}

impl std::str::FromStr for ComputeDtype {
    type Err = Error;
    fn from_str(name: &str) -> Result<Self> {
        Ok(match parse_dtype(name)? {
            DType::BF16 => ComputeDtype::Bf16,
            DType::F16 => ComputeDtype::F16,
            _ => ComputeDtype::F32,
        })
    }
}
