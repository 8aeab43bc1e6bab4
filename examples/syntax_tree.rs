//! Repair by parsing: how often outputs parse as JSON under tree-sitter, with and without the
//! `SyntaxTree` controller, and with a structural query. A regex (hard) makes every output start
//! with `{` and end with `}`; what lies between is free, so the parse rate measures the repair.
//!
//! The controller repairs in two phases (see `Controller::repair`): *during* sampling it
//! re-noises the tokens inside parse errors; *after* it, the generator rewrites the faulty spans
//! by inpainting with every other token fixed (`Generator::rewrite`). The runs below separate
//! the two.
//!
//! ```text
//! cargo run --release -p diffusion-lm --example syntax_tree -- [N] [STEPS]
//! ```

mod common;

use anyhow::Result;
use candle_core::Device;
use diffusion_lm::{DiffusionLm, Generator};
use diffusion_lm_controllers::{Regex, SyntaxTree};

fn main() -> Result<()> {
    diffusion_lm::tune_runtime();
    let mut args = std::env::args().skip(1);
    let n: usize = common::positional(&mut args, "N", 32)?;
    let steps: usize = common::positional(&mut args, "STEPS", 100)?;
    let lm = DiffusionLm::load(DiffusionLm::default_dir(), &Device::Cpu)?;
    let braces = || Regex::new(r"\{[^\n]*\}");
    let query = r#"(pair key: (string (string_content) @k (#eq? @k "near")))"#;
    let parse = SyntaxTree::json();
    let with_near = SyntaxTree::json().with_query(query)?;
    let never = |tree: SyntaxTree| tree.schedule(1, 1.0, 1.0);
    let runs: [(&str, Generator); 5] = [
        ("braces only", Generator::new(&lm).constrain(braces()?)),
        (
            "+ SyntaxTree, re-noising during sampling only",
            Generator::new(&lm)
                .constrain(braces()?)
                .repair(SyntaxTree::json())
                .rewrite(0, 0.0),
        ),
        (
            "+ SyntaxTree, rewriting after sampling only",
            Generator::new(&lm)
                .constrain(braces()?)
                .repair(never(SyntaxTree::json())),
        ),
        (
            "+ SyntaxTree, both (the defaults)",
            Generator::new(&lm).constrain(braces()?).repair(SyntaxTree::json()),
        ),
        (
            "+ SyntaxTree with a query (a \"near\" key), both",
            Generator::new(&lm)
                .constrain(braces()?)
                .repair(SyntaxTree::json().with_query(query)?),
        ),
    ];
    for (name, g) in runs {
        let (texts, seconds) = common::timed_texts(g, n, steps)?;
        let parsed = texts.iter().filter(|t| parse.parses(t)).count();
        let near = texts.iter().filter(|t| with_near.parses(t)).count();
        println!("{name}: {parsed}/{n} parse as JSON; {near}/{n} also have a \"near\" key ({seconds:.1} s)");
        for t in texts.iter().take(3) {
            println!("  {t}");
        }
    }
    Ok(())
}
