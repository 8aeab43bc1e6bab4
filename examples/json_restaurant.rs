//! E2E-style restaurant records from a JSON Schema (name, eatType and food enums, price range,
//! customer rating, area, familyFriendly boolean, near), each valid under the schema.
//!
//! ```text
//! cargo run --release -p diffusion-lm --example json_restaurant -- [N]
//! ```

use anyhow::Result;
use candle_core::Device;
use diffusion_lm::{DiffusionLm, Generator};
use diffusion_lm_controllers::JsonSchema;

const SCHEMA: &str = include_str!("schemas/restaurant.json");

fn main() -> Result<()> {
    diffusion_lm::tune_runtime();
    let n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(6);
    let schema = JsonSchema::from_json(SCHEMA)?;
    let lm = DiffusionLm::load(DiffusionLm::default_dir(), &Device::Cpu)?;
    let records = Generator::new(&lm)
        .constrain(schema.clone())
        .steps(200)
        .seed(0)
        .progress(true)
        .generate(n)?;
    for r in records {
        // The generator already validated each record; show it parsed.
        let v = schema.check_text(&r.text).map_err(anyhow::Error::msg)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}
