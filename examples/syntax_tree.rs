//! Repair by parsing: how often outputs parse as JSON under tree-sitter, with and without the
//! `SyntaxTree` controller, and with a structural query. A regex (hard) makes every output start
//! with `{` and end with `}`; what lies between is free, so the parse rate measures the repair.
//!
//! ```text
//! cargo run --release --example syntax_tree -- [N] [STEPS] [FROM UNTIL]
//! ```

use anyhow::{Context, Result};
use candle_core::Device;
use diffusion_lm::{DiffusionLm, Generator};
use diffusion_lm_controllers::{Regex, SyntaxTree};

fn main() -> Result<()> {
    diffusion_lm::tune_allocator();
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()
        .context("N must be a number")?
        .unwrap_or(32);
    let steps: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()
        .context("STEPS must be a number")?
        .unwrap_or(100);
    let lm = DiffusionLm::load(DiffusionLm::default_dir(), &Device::Cpu)?;
    let braces = || Regex::new(r"\{[^\n]*\}");
    let query = r#"(pair key: (string (string_content) @k (#eq? @k "near")))"#;
    let parse = SyntaxTree::json();
    let with_near = SyntaxTree::json().with_query(query)?;
    let (from, until) = match (args.next(), args.next()) {
        (Some(a), Some(b)) => (a.parse()?, b.parse()?),
        _ => (0.4, 0.85),
    };
    let runs: [(&str, Generator); 3] = [
        ("braces only", Generator::new(&lm).with(braces()?)),
        (
            "braces + SyntaxTree(json)",
            Generator::new(&lm)
                .with(braces()?)
                .with(SyntaxTree::json().schedule(5, from, until)),
        ),
        (
            "braces + SyntaxTree(json, query: a \"near\" key)",
            Generator::new(&lm)
                .with(braces()?)
                .with(SyntaxTree::json().with_query(query)?.schedule(5, from, until)),
        ),
    ];
    for (name, g) in runs {
        let texts: Vec<String> = g
            .steps(steps)
            .seed(0)
            .progress(true)
            .generate(n)?
            .into_iter()
            .map(|s| s.text)
            .collect();
        let parsed = texts.iter().filter(|t| parse.parses(t)).count();
        let near = texts.iter().filter(|t| with_near.parses(t)).count();
        println!("{name}: {parsed}/{n} parse as JSON; {near}/{n} also have a \"near\" key");
        for t in texts.iter().take(3) {
            println!("  {t}");
        }
    }
    Ok(())
}
