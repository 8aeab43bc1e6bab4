//! Unconditional generation with the shipped E2E model.
//!
//! ```text
//! cargo run --release -p diffusion-lm --example generate -- [N] [SEED]
//! ```

use anyhow::Result;
use candle_core::Device;
use diffusion_lm::{DiffusionLm, Generator};

fn main() -> Result<()> {
    diffusion_lm::tune_runtime();
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let seed: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(0);
    let lm = DiffusionLm::load(DiffusionLm::default_dir(), &Device::Cpu)?;
    for sample in Generator::new(&lm).steps(200).seed(seed).generate(n)? {
        println!("{}", sample.text);
    }
    Ok(())
}
