//! Any JSON Schema file → N documents, each valid under it (checked again here with `jsonschema`).
//!
//! ```text
//! cargo run --release -p diffusion-lm --example json_schema -- path/to/schema.json [N] [STEPS]
//! ```

use anyhow::{bail, Result};
use candle_core::Device;
use diffusion_lm::{DiffusionLm, Generator};
use diffusion_lm_controllers::JsonSchema;

fn main() -> Result<()> {
    diffusion_lm::tune_runtime();
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        bail!("usage: json_schema SCHEMA.json [N] [STEPS]");
    };
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(4);
    let steps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(100);
    let schema = JsonSchema::from_file(&path)?;
    eprintln!("{path}: automaton of {} states", schema.dfa().num_states());
    let lm = DiffusionLm::load(DiffusionLm::default_dir(), &Device::Cpu)?;
    let docs = Generator::new(&lm)
        .constrain(schema.clone())
        .steps(steps)
        .seed(0)
        .progress(true)
        .generate(n)?;
    for d in docs {
        let ok = schema.check_text(&d.text).is_ok();
        println!("{} {}", if ok { "✓" } else { "✗" }, d.text);
    }
    Ok(())
}
