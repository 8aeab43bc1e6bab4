//! Infilling with the shipped E2E model: fixed text around holes (`___`) that the model fills.
//!
//! ```text
//! cargo run --release -p diffusion-lm --example infill -- ['TEMPLATE'] [N]
//! ```

use anyhow::Result;
use candle_core::Device;
use diffusion_lm::{DiffusionLm, Generator};
use diffusion_lm_controllers::{Infill, Length};

fn main() -> Result<()> {
    diffusion_lm::tune_runtime();
    let mut args = std::env::args().skip(1);
    let template = args.next().unwrap_or_else(|| "The Eagle ___ riverside ___".into());
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let lm = DiffusionLm::load(DiffusionLm::default_dir(), &Device::Cpu)?;
    println!("template: {template}");
    let samples = Generator::new(&lm)
        .constrain(Infill::new(&template)?)
        .constrain(Length::between(8, 40)?)
        .steps(200)
        .seed(0)
        .generate(n)?;
    for s in samples {
        println!("{}", s.text);
    }
    Ok(())
}
