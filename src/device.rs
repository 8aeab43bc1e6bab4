//! Device selection: `cpu`, `cuda[:N]` (feature `cuda`) or `metal[:N]` (feature `metal`).
//!
//! ```
//! let dev = diffusion_lm::device::parse_device("cpu").unwrap();
//! assert!(dev.is_cpu());
//! assert!(diffusion_lm::device::parse_device("tpu").is_err());
//! ```

use candle_core::Device;

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
