//! Regex-constrained generation with the shipped E2E model: every output fully matches.
//!
//! ```text
//! cargo run --release -p diffusion-lm --example regex -- ['PATTERN'] [N]
//! ```

use anyhow::Result;
use candle_core::Device;
use diffusion_lm::{DiffusionLm, Generator};
use diffusion_lm_controllers::Regex;

fn main() -> Result<()> {
    diffusion_lm::tune_runtime();
    let mut args = std::env::args().skip(1);
    let pattern = args
        .next()
        .unwrap_or_else(|| r"[A-Z][A-Za-z ]+ is a (pub|restaurant|coffee shop) [a-z ,]+\.".into());
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let lm = DiffusionLm::load(DiffusionLm::default_dir(), &Device::Cpu)?;
    let check = regex::Regex::new(&format!("^(?:{pattern})$"))?;
    println!("pattern: {pattern}");
    for s in Generator::new(&lm)
        .constrain(Regex::new(&pattern)?)
        .steps(200)
        .seed(0)
        .generate(n)?
    {
        println!("{} {}", if check.is_match(&s.text) { "✓" } else { "✗" }, s.text);
    }
    Ok(())
}
