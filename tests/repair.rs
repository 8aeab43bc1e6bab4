//! Rewriting after sampling ([`Generator::rewrite`]): positions a repairing controller names are
//! rewritten by inpainting, everything else is held, and a rewrite is kept only when it has fewer
//! faults.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use candle_core::Device;
use diffusion_lm::steer::{Repair, RepairContext, RepairPhase};
use diffusion_lm::{DiffusionLm, Generator};

/// Names every token that holds a digit, after sampling only; counts the rounds it is asked in.
struct NoDigits {
    rounds_seen: Arc<AtomicUsize>,
}

impl Repair for NoDigits {
    fn name(&self) -> String {
        "no digits".into()
    }

    fn faulty_positions(&self, ctx: &RepairContext, _text: &str, ids: &[u32]) -> diffusion_lm::Result<Vec<usize>> {
        let RepairPhase::Rewrite { round } = ctx.phase else {
            return Ok(Vec::new());
        };
        self.rounds_seen.fetch_max(round + 1, Ordering::Relaxed);
        let pad = ctx.index.pad_id();
        Ok((0..ids.len())
            .filter(|&p| ids[p] != pad && ctx.index.bytes(ids[p]).iter().any(u8::is_ascii_digit))
            .collect())
    }
}

fn digit_positions(lm: &DiffusionLm, ids: &[u32]) -> Vec<usize> {
    let index = lm.token_index();
    (0..ids.len())
        .filter(|&p| ids[p] != lm.tokenizer.pad_id() && index.bytes(ids[p]).iter().any(u8::is_ascii_digit))
        .collect()
}

#[test]
fn rewriting_mends_named_positions_and_holds_the_rest() {
    let lm = DiffusionLm::load(DiffusionLm::default_dir(), &Device::Cpu).unwrap();
    let (n, steps, rounds) = (48, 30, 3);
    let rounds_seen = Arc::new(AtomicUsize::new(0));
    let run = |rounds: usize| {
        Generator::new(&lm)
            .repair(NoDigits {
                rounds_seen: rounds_seen.clone(),
            })
            .steps(steps)
            .seed(3)
            .rewrite(rounds, 0.3)
            .self_correct(0, 0.3)
            .best_of(1) // the same draw with and without rewriting
            .generate(n)
            .unwrap()
    };
    let plain = run(0);
    assert_eq!(rounds_seen.load(Ordering::Relaxed), 0, "0 rounds: never asked");
    let rewritten = run(rounds);
    let seen = rounds_seen.load(Ordering::Relaxed);
    assert!((1..=rounds).contains(&seen), "asked in {seen} rounds");
    let before: usize = plain.iter().map(|s| digit_positions(&lm, &s.ids).len()).sum();
    let after: usize = rewritten.iter().map(|s| digit_positions(&lm, &s.ids).len()).sum();
    assert!(before >= 6, "too few digits to measure: {before}");
    eprintln!("digit tokens: {before} without rewriting, {after} with");
    assert!(after * 2 <= before, "digits before {before}, after rewriting {after}");
    // Tokens farther than `rounds` positions from every originally named one are held.
    for (a, b) in plain.iter().zip(&rewritten) {
        let named = digit_positions(&lm, &a.ids);
        for p in 0..a.ids.len() {
            if named.iter().all(|&q| p.abs_diff(q) > rounds) {
                assert_eq!(a.ids[p], b.ids[p], "position {p} changed:\n{}\n{}", a.text, b.text);
            }
        }
        // A rewrite is kept only with fewer faults.
        assert!(digit_positions(&lm, &b.ids).len() <= named.len());
    }
}

#[test]
fn self_correction_keeps_hard_constraints_and_is_seeded_per_sample() {
    use diffusion_lm_controllers::{Length, Regex};
    let lm = DiffusionLm::load(DiffusionLm::default_dir(), &Device::Cpu).unwrap();
    let pattern = "The [A-Za-z ]+ is [a-z ,]+\\.";
    let run = |batch: usize, rounds: usize| {
        Generator::new(&lm)
            .constrain(Regex::new(pattern).unwrap())
            .constrain(Length::between(8, 20).unwrap())
            .steps(20)
            .seed(5)
            .batch_size(batch)
            .self_correct(rounds, 0.5)
            .generate(4)
            .unwrap()
    };
    let corrected = run(4, 3);
    let re = regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
    for s in &corrected {
        assert!(re.is_match(&s.text), "{:?}", s.text);
        let len = s
            .ids
            .iter()
            .position(|&t| t == lm.tokenizer.pad_id())
            .unwrap_or(s.ids.len());
        assert!((8..=20).contains(&len), "{len} tokens: {:?}", s.text);
    }
    // The same per-sample seeds whatever the batch size.
    assert_eq!(corrected, run(1, 3));
    // It did something on these samples (a test of the test: the comparison above is not vacuous).
    assert_ne!(corrected, run(4, 0));
}
