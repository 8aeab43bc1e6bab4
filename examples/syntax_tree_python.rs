//! Repair by parsing on code: the small model in `models/python-toy` (trained on synthetic Python
//! functions), sampled with and without `SyntaxTree::python()`, and with a tree-sitter query that
//! asks for structure: a function named `add` with exactly two parameters
//! ([`PYTHON_ADD_TWO`]). About 6% of the training functions are such.
//!
//! ```text
//! cargo run --release -p diffusion-lm --example syntax_tree_python -- [N] [STEPS] [OUT_DIR]
//! ```
//!
//! With `OUT_DIR`, each run's outputs are written there as JSON Lines (`{"text": ...}`), for an
//! independent check such as Python's own parser.

mod common;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use diffusion_lm::{DiffusionLm, Generator};
use diffusion_lm_controllers::syntax_tree::PYTHON_ADD_TWO;
use diffusion_lm_controllers::SyntaxTree;

fn main() -> Result<()> {
    diffusion_lm::tune_runtime();
    let mut args = std::env::args().skip(1);
    let n: usize = common::positional(&mut args, "N", 64)?;
    let steps: usize = common::positional(&mut args, "STEPS", 100)?;
    let out_dir = args.next().map(PathBuf::from);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/python-toy");
    let lm = DiffusionLm::load(&dir, &Device::Cpu)?;
    let parses = SyntaxTree::python();
    let add_two = SyntaxTree::python().with_query(PYTHON_ADD_TWO)?;
    let never = |tree: SyntaxTree| tree.schedule(1, 1.0, 1.0);
    let runs: [(&str, Generator); 5] = [
        ("unconstrained", Generator::new(&lm)),
        (
            "SyntaxTree, re-noising during sampling only",
            Generator::new(&lm).repair(SyntaxTree::python()).rewrite(0, 0.0),
        ),
        (
            "SyntaxTree, rewriting after sampling only",
            Generator::new(&lm).repair(never(SyntaxTree::python())),
        ),
        (
            "SyntaxTree, both (the defaults)",
            Generator::new(&lm).repair(SyntaxTree::python()),
        ),
        (
            "SyntaxTree with the add/2 query, both, 10 rewrite rounds",
            Generator::new(&lm)
                .repair(SyntaxTree::python().with_query(PYTHON_ADD_TWO)?)
                .rewrite(10, 0.3),
        ),
    ];
    if let Some(d) = &out_dir {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    for (k, (name, g)) in runs.into_iter().enumerate() {
        let (texts, seconds) = common::timed_texts(g, n, steps)?;
        let parsed = texts.iter().filter(|t| parses.parses(t)).count();
        let add = texts.iter().filter(|t| add_two.parses(t)).count();
        println!("{name}: {parsed}/{n} parse; {add}/{n} define add(x, y) ({seconds:.1} s)");
        for t in texts.iter().take(2) {
            println!("  {}", t.replace('\n', "⏎"));
        }
        if let Some(d) = &out_dir {
            let lines: Vec<String> = texts
                .iter()
                .map(|t| serde_json::json!({ "run": name, "text": t }).to_string())
                .collect();
            let path = d.join(format!("run{k}.jsonl"));
            std::fs::write(&path, lines.join("\n") + "\n").with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}
