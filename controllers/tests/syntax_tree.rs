//! The SyntaxTree controller: tree-sitter error nodes map to the tokens holding them, the repair
//! schedule and the structural query are honoured, and generation runs with it.

use diffusion_lm::steer::{Repair, RepairContext, RepairPhase};
use diffusion_lm::{DiffusionLm, Generator};
use diffusion_lm_controllers::{Regex, SyntaxTree};

fn padded(lm: &DiffusionLm, text: &str) -> Vec<u32> {
    lm.tokenizer.encode_padded(text, lm.config.seq_len).unwrap()
}

#[test]
fn error_nodes_map_to_the_tokens_that_hold_them() {
    let lm = DiffusionLm::load(DiffusionLm::default_dir(), &candle_core::Device::Cpu).unwrap();
    let ctx = |step: usize| RepairContext {
        phase: RepairPhase::Denoising,
        step,
        num_steps: 100,
        index: lm.token_index(),
        tokenizer: &lm.tokenizer,
    };
    let json = SyntaxTree::json();
    // Step 49 of 100 counting down: half the steps done, inside the default window.
    let mid = ctx(49);
    let good = r#"{"name": "Aromi", "near": "Café Rouge"}"#;
    assert!(json
        .faulty_positions(&mid, good, &padded(&lm, good))
        .unwrap()
        .is_empty());
    let bad = r#"{"name": "Aromi" "near" 12 }"#;
    let ids = padded(&lm, bad);
    let positions = json.faulty_positions(&mid, bad, &ids).unwrap();
    assert!(!positions.is_empty());
    let content = ids.iter().position(|&t| t == lm.tokenizer.pad_id()).unwrap();
    assert!(
        positions.iter().all(|&p| p < content),
        "{positions:?} beyond {content} content tokens"
    );
    // Every error byte range lies inside the tokens named.
    for (start, end) in json.error_ranges(bad) {
        let first = mid.position_of_byte(&ids, start);
        let last = mid.position_of_byte(&ids, end - 1);
        assert!((first..=last).all(|p| positions.contains(&p)));
    }
    // Outside the schedule's window nothing is repaired.
    assert!(json.faulty_positions(&ctx(99), bad, &ids).unwrap().is_empty());
    assert!(json.faulty_positions(&ctx(2), bad, &ids).unwrap().is_empty());
    // After sampling (the rewrite phase) the schedule does not apply.
    let rewrite = RepairContext {
        phase: RepairPhase::Rewrite { round: 0 },
        step: 0,
        ..ctx(0)
    };
    assert_eq!(json.faulty_positions(&rewrite, bad, &ids).unwrap(), positions);
    // Without the queried structure, every position is rewritten after sampling; during
    // sampling only inside the query window, which is off by default.
    let near = SyntaxTree::json()
        .with_query(r#"(pair key: (string (string_content) @k (#eq? @k "near")))"#)
        .unwrap();
    let no_near = r#"{"name": "Aromi"}"#;
    let ids = padded(&lm, no_near);
    let every = (0..ids.len()).collect::<Vec<_>>();
    assert_eq!(near.faulty_positions(&rewrite, no_near, &ids).unwrap(), every);
    assert!(near.faulty_positions(&ctx(59), no_near, &ids).unwrap().is_empty());
    let windowed = SyntaxTree::json()
        .with_query(r#"(pair key: (string (string_content) @k (#eq? @k "near")))"#)
        .unwrap()
        .query_window(0.1, 0.5);
    assert_eq!(windowed.faulty_positions(&ctx(59), no_near, &ids).unwrap(), every); // 40% done
    assert!(windowed.faulty_positions(&ctx(29), no_near, &ids).unwrap().is_empty()); // 70% done
    assert!(near
        .faulty_positions(&mid, good, &padded(&lm, good))
        .unwrap()
        .is_empty());
    // Faults rank a missing match above any number of slips.
    let slip = r#"{"near": "Aromi" "name": 1}"#;
    let slip_faults = near.fault_score(&rewrite, slip, &padded(&lm, slip)).unwrap();
    assert!(slip_faults > 0.0 && slip_faults < ids.len() as f64, "{slip_faults}");
    assert_eq!(near.fault_score(&rewrite, good, &padded(&lm, good)).unwrap(), 0.0);
    assert!(near.fault_score(&rewrite, no_near, &ids).unwrap() >= ids.len() as f64);
    // A malformed query is a clear error.
    let err = SyntaxTree::json().with_query("(pair key: ").err().unwrap().to_string();
    assert!(err.contains("tree-sitter query"), "{err}");
}

#[test]
fn generation_with_repair_keeps_hard_constraints() {
    let lm = DiffusionLm::load(DiffusionLm::default_dir(), &candle_core::Device::Cpu).unwrap();
    let braces = Regex::new(r"\{[^\n]*\}").unwrap();
    let samples = Generator::new(&lm)
        .constrain(braces)
        .repair(SyntaxTree::json().schedule(1, 0.0, 1.0))
        .length(32)
        .steps(20)
        .seed(2)
        .generate(2)
        .unwrap();
    for s in samples {
        assert!(s.text.starts_with('{') && s.text.ends_with('}'), "{:?}", s.text);
    }
}

#[test]
fn repair_raises_the_parse_rate_of_the_python_model() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/python-toy");
    let lm = DiffusionLm::load(dir, &candle_core::Device::Cpu).unwrap();
    let python = SyntaxTree::python();
    let n = 32;
    // Re-noising named tokens pays under DDPM, whose latent carries each step's guesses forward;
    // under the default `renoise` every step re-writes the whole sequence anyway.
    let count = |g: Generator| {
        g.sampler(diffusion_lm::SamplerKind::Ddpm)
            .steps(50)
            .seed(1)
            .generate(n)
            .unwrap()
            .iter()
            .filter(|s| python.parses(&s.text))
            .count()
    };
    let plain = count(Generator::new(&lm));
    let repaired = count(Generator::new(&lm).repair(SyntaxTree::python()));
    eprintln!("parse: {plain}/{n} plain, {repaired}/{n} with SyntaxTree");
    assert!(repaired >= plain + n / 8, "{plain}/{n} plain, {repaired}/{n} repaired");
}
