//! Timings of the masked engine on a pretrained snapshot: the token index and the constraints'
//! token automata at the snapshot's vocabulary size, the constrained draw of a step against the
//! unconstrained one, and the forward pass.
//!
//! ```text
//! cargo run --release --example pretrained_timing -- SNAPSHOT [--length 256] [--steps 64]
//!     [--forward 128,256,512] [--dtype f32] [--device cpu|cuda:0] [--reps 3] [--random-weights]
//!     [--no-constraints] [--no-draws] [--only NAME]
//! ```
//!
//! `--random-weights` reads only `config.json` and the tokenizer and draws the weights: a
//! full-size LLaDA-8B or Dream-7B can be timed from a directory holding those two files. On a
//! GPU, the forward timings synchronise by reading the result back.
//!
//! ```text
//! ```
//!
//! With random weights the draws see near-uniform scores, the hardest case for a lattice (every
//! token of an allowed set carries weight). Prints one line per figure.

use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use diffusion_lm::masked::MaskedModel;
use diffusion_lm::pretrained::PretrainedLm;
use diffusion_lm::steer::lattice::Lattice;
use diffusion_lm::steer::{ConstraintContext, Stack};
use diffusion_lm_controllers::{JsonSchema, Regex};
use rand::{Rng, SeedableRng};

const TEMPLATE: &str = r"[A-Z][A-Za-z ]+ is a (pub|restaurant|coffee shop)[a-z ,]* near [A-Z][A-Za-z ]+\.";

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn main() -> Result<()> {
    diffusion_lm::tune_runtime();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().context("usage: pretrained_timing SNAPSHOT [options]")?;
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let len: usize = opt("--length").map_or(Ok(256), |s| s.parse())?;
    let steps: usize = opt("--steps").map_or(Ok(64), |s| s.parse())?;
    let reps: usize = opt("--reps").map_or(Ok(3), |s| s.parse())?;
    let dtype = diffusion_lm::nn::device::parse_dtype(opt("--dtype").map_or("f32", |s| s.as_str()))?;
    let device = diffusion_lm::nn::device::parse_device(opt("--device").map_or("cpu", |s| s.as_str()))?;
    let t = Instant::now();
    let lm = if args.iter().any(|a| a == "--random-weights") {
        PretrainedLm::with_random_weights(dir, &device, dtype)?
    } else {
        PretrainedLm::load(dir, &device, dtype)?
    };
    println!(
        "load: {:.0} ms ({:?}, vocabulary {})",
        ms(t),
        lm.architecture(),
        lm.vocab_size()
    );

    if let Some(lengths) = opt("--forward") {
        for l in lengths.split(',') {
            let l: usize = l.parse()?;
            let ids = Tensor::from_vec(vec![lm.mask_id(); l], (1, l), &device)?;
            lm.logits(&ids)?; // warm-up
            let mut best = f64::INFINITY;
            for _ in 0..reps {
                let t = Instant::now();
                lm.logits(&ids)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
                best = best.min(ms(t));
            }
            println!("forward batch 1, length {l}: {best:.1} ms (min of {reps})");
        }
    }
    if args.iter().any(|a| a == "--no-constraints") {
        return Ok(());
    }

    let t = Instant::now();
    let index = lm.token_index();
    println!(
        "token index: {:.0} ms ({} content tokens of {}, {} trie nodes)",
        ms(t),
        (0..index.vocab_size() as u32)
            .filter(|&i| !index.bytes(i).is_empty())
            .count(),
        index.vocab_size(),
        index.trie_size()
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let stacks = [
        ("none", Stack::new()),
        (
            "restaurant schema",
            Stack::new().constrain(JsonSchema::from_file(root.join("examples/schemas/restaurant.json"))?),
        ),
        (
            "function-call schema",
            Stack::new().constrain(JsonSchema::from_file(root.join("examples/schemas/function_call.json"))?),
        ),
        ("sentence template", Stack::new().constrain(Regex::new(TEMPLATE)?)),
    ];
    let (v, mask, pad) = (lm.vocab_size(), lm.mask_id(), lm.pad_id());
    // The scores of a run: the model's log-probabilities for the span after a short prompt.
    let prompt = lm.prompt("Give me a JSON object.", None)?;
    let log_probs = |row: &[u32]| -> Result<Vec<f32>> {
        let ids: Vec<u32> = prompt.iter().chain(row).copied().collect();
        let ids = Tensor::from_vec(ids, (1, prompt.len() + len), &device)?;
        let logits = lm.logits(&ids)?.narrow(1, prompt.len(), len)?.to_dtype(DType::F32)?;
        Ok(candle_nn::ops::log_softmax(&logits, candle_core::D::Minus1)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    };
    let ctx = ConstraintContext {
        tokenizer: lm.tokenizer(),
        index,
        seq_len: len,
    };
    let only = opt("--only");
    for (name, stack) in stacks {
        if only.is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        let t = Instant::now();
        let prepared = stack.prepare(&ctx)?;
        let build = ms(t);
        if prepared.has_hard {
            println!(
                "{name}: constraint build {build:.0} ms ({} automaton states)",
                prepared.automaton.num_states()
            );
        }
        if args.iter().any(|a| a == "--no-draws") {
            continue;
        }
        // One run: `steps` steps committing len/steps tokens each (low confidence); each
        // step's draw timed alone (scores in hand, as after the forward pass).
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let mut row = vec![mask; len];
        let per_step = len.div_ceil(steps);
        let (mut first, mut total, mut count) = (0.0, 0.0, 0);
        while row.contains(&mask) {
            let logp = log_probs(&row)?;
            let t = Instant::now();
            let open: Vec<usize> = (0..len).filter(|&p| row[p] == mask).collect();
            // As the sampler: without constraints the open positions' softmax from the
            // log-probabilities; with them the score table (committed tokens pinned) and the lattice.
            let (sample, keys): (Vec<u32>, Vec<f32>) = if prepared.has_hard {
                let mut scores = vec![f32::NEG_INFINITY; len * v];
                for p in 0..len {
                    if row[p] == mask {
                        scores[p * v..(p + 1) * v].copy_from_slice(&logp[p * v..(p + 1) * v]);
                    } else {
                        scores[p * v + row[p] as usize] = 0.0;
                    }
                }
                let scores = prepared.masked(scores);
                let lattice =
                    Lattice::new(&scores, len, v, &prepared.automaton, pad, 1.0).context("no valid sequence")?;
                let s = lattice.sample(&mut rng);
                let keys = open.iter().map(|&p| lattice.marginal(p, s[p])).collect();
                (s, keys)
            } else {
                independent(&logp, len, v, &open, &mut rng)
            };
            let took = ms(t);
            if count == 0 {
                first = took;
            }
            total += took;
            count += 1;
            let mut keyed: Vec<(f32, usize)> = keys.into_iter().zip(open).collect();
            keyed.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for &(_, p) in keyed.iter().take(per_step) {
                row[p] = sample[p];
            }
        }
        println!(
            "{name}: draw per step at length {len}: first {first:.1} ms, mean {:.1} ms over {count} steps",
            total / count as f64
        );
    }
    Ok(())
}

/// The sampler's unconstrained draw: per open position, the softmax and one token from it.
fn independent(scores: &[f32], len: usize, v: usize, open: &[usize], rng: &mut impl Rng) -> (Vec<u32>, Vec<f32>) {
    let mut sample = vec![0u32; len];
    let mut keys = Vec::with_capacity(open.len());
    for &p in open {
        let row = &scores[p * v..(p + 1) * v];
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let total: f64 = row.iter().map(|&x| ((x - m).exp()) as f64).sum();
        let mut u = rng.gen::<f64>() * total;
        let mut pick = v - 1;
        for (i, &x) in row.iter().enumerate() {
            let q = (x - m).exp() as f64;
            if u < q {
                pick = i;
                break;
            }
            u -= q;
        }
        sample[p] = pick as u32;
        keys.push(((row[pick] - m).exp() as f64 / total) as f32);
    }
    (sample, keys)
}
