//! Arguments for a function call (Glaive/BFCL style): the function's parameter schema constrains
//! generation, so the arguments always validate and can be passed straight to the function.
//!
//! ```text
//! cargo run --release -p diffusion-lm --example function_call -- [N]
//! ```

use anyhow::Result;
use candle_core::Device;
use diffusion_lm::{DiffusionLm, Generator};
use diffusion_lm_controllers::JsonSchema;
use serde::Deserialize;

const SCHEMA: &str = include_str!("schemas/function_call.json");

/// The function's arguments, as the application would deserialize them.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct BookTable {
    restaurant: String,
    area: Option<String>,
    party_size: u32,
    date: String,
    time: String,
    family_friendly: Option<bool>,
}

fn book_table(args: &BookTable) -> String {
    format!(
        "booked a table for {} at {} on {} at {}",
        args.party_size, args.restaurant, args.date, args.time
    )
}

fn main() -> Result<()> {
    diffusion_lm::tune_runtime();
    let n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(4);
    let schema = JsonSchema::from_json(SCHEMA)?;
    let lm = DiffusionLm::load(DiffusionLm::default_dir(), &Device::Cpu)?;
    let calls = Generator::new(&lm)
        .constrain(schema)
        .steps(200)
        .seed(0)
        .progress(true)
        .generate(n)?;
    for c in calls {
        let args: BookTable = serde_json::from_str(&c.text)?;
        println!("book_table({}) -> {}", c.text, book_table(&args));
    }
    Ok(())
}
