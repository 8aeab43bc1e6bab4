//! Grammar-constrained generation: every output of the shipped model is a sentence of a GBNF
//! grammar, checked afterwards by an independent Earley recogniser (and, for JSON, by serde_json).
//!
//! ```text
//! cargo run --release -p diffusion-lm --example grammar -- [GRAMMAR.gbnf] [N]
//! cargo run --release -p diffusion-lm --example grammar -- grammars/sql_select.gbnf 4
//! ```

mod common;

use std::time::Instant;

use anyhow::Result;
use candle_core::Device;
use diffusion_lm::{DiffusionLm, Generator};
use diffusion_lm_controllers::Grammar;

fn main() -> Result<()> {
    diffusion_lm::tune_runtime();
    let mut args = std::env::args().skip(1);
    let files: Vec<String> = match args.next() {
        Some(f) => vec![f],
        None => ["json", "arithmetic", "sql_select", "statements"]
            .iter()
            .map(|g| format!("{}/grammars/{g}.gbnf", env!("CARGO_MANIFEST_DIR")))
            .collect(),
    };
    let n: usize = common::positional(&mut args, "N", 3)?;
    let lm = DiffusionLm::load(DiffusionLm::default_dir(), &Device::Cpu)?;
    for file in files {
        let started = Instant::now();
        let grammar = Grammar::from_file(&file)?;
        println!(
            "{file}: {} automaton states, compiled in {:.0} ms",
            grammar.dfa().num_states(),
            started.elapsed().as_secs_f64() * 1e3
        );
        let samples = Generator::new(&lm)
            .constrain(grammar.clone())
            .steps(100)
            .seed(0)
            .generate(n)?;
        for s in samples {
            // The generator already ran the independent check; show it once more.
            println!("  {}  [parses: {}]", s.text, grammar.recognizes(&s.text));
        }
    }
    Ok(())
}
