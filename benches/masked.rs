//! Masked-engine benchmarks (`cargo bench -p diffusion-lm --bench masked`), with the shipped
//! masked model (`models/e2e-masked`):
//!
//! * `masked_forward/{1,64}`: the denoiser's forward pass at batch 1 and 64;
//! * `masked_constrained_draw/{schema,template}`: the constraints' work in the first step (every
//!   position masked, the costliest step) for one sequence: the lattice over (position ×
//!   automaton state), one sampled sequence and the low-confidence key of every position, under
//!   the restaurant JSON Schema and the sentence-template regex;
//! * `masked_run_draws/{none,schema,template}`: the draws of a whole 64-step run (the score
//!   tables of each step recorded once, then only the draw timed: the lattice, one sampled
//!   sequence and the low-confidence keys of the open positions; without constraints the
//!   per-position softmax and draw, as the sampler does), reported per run: divided by 64, the
//!   per-step cost averaged over a run, and the difference from `none` the constraints' overhead;
//! * `masked_sample_64_tokens/{none,schema,template}`: one 64-token sample, 64 steps, batch 1,
//!   without a constraint and under each; the difference from `none`, over 64 steps, is the
//!   constraints' overhead per step, to compare with `masked_forward/1`.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use diffusion_lm::masked::{MaskedGenerator, MaskedLm};
use diffusion_lm::nn::Mode;
use diffusion_lm::steer::lattice::Lattice;
use diffusion_lm::steer::{ConstraintContext, Stack};
use diffusion_lm_controllers::{JsonSchema, Regex};
use rand::{Rng, SeedableRng};

const TEMPLATE: &str = r"[A-Z][A-Za-z ]+ is a (pub|restaurant|coffee shop)[a-z ,]* near [A-Z][A-Za-z ]+\.";

fn load() -> MaskedLm {
    diffusion_lm::tune_runtime();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/e2e-masked");
    MaskedLm::load(dir, &Device::Cpu).expect("the shipped masked model in models/e2e-masked")
}

fn forward(c: &mut Criterion) {
    let lm = load();
    let mut group = c.benchmark_group("masked_forward");
    group.sample_size(10);
    for batch in [1usize, 64] {
        let ids = Tensor::from_vec(
            vec![lm.config.mask_id(); batch * lm.config.seq_len],
            (batch, lm.config.seq_len),
            &Device::Cpu,
        )
        .unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, _| {
            b.iter(|| lm.model.forward(&ids, &mut Mode::Infer).unwrap())
        });
    }
    group.finish();
}

fn draw(c: &mut Criterion) {
    let lm = load();
    let (len, v) = (lm.config.seq_len, lm.config.vocab_size);
    let ctx = ConstraintContext {
        tokenizer: &lm.tokenizer,
        index: lm.token_index(),
        seq_len: len,
    };
    // The model's log-probabilities for an all-mask sequence: the scores of a first step.
    let ids = Tensor::from_vec(vec![lm.config.mask_id(); len], (1, len), &Device::Cpu).unwrap();
    let logits = lm.model.forward(&ids, &mut Mode::Infer).unwrap();
    let scores = candle_nn::ops::log_softmax(&logits, candle_core::D::Minus1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let schema = format!("{}/examples/schemas/restaurant.json", env!("CARGO_MANIFEST_DIR"));
    let stacks = [
        (
            "schema",
            Stack::new().constrain(JsonSchema::from_file(&schema).unwrap()),
        ),
        ("template", Stack::new().constrain(Regex::new(TEMPLATE).unwrap())),
    ];
    let mut group = c.benchmark_group("masked_constrained_draw");
    group.sample_size(10);
    let pad = lm.config.pad_id;
    for (name, stack) in stacks {
        let prepared = stack.prepare(&ctx).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let row = prepared.masked(scores.clone());
                let lattice = Lattice::new(&row, len, v, &prepared.automaton, pad, 1.0).unwrap();
                let s = lattice.sample(&mut rng);
                let keys: Vec<f32> = (0..len).map(|p| lattice.marginal(p, s[p])).collect();
                (s, keys)
            })
        });
    }
    group.finish();
}

/// The sampler's unconstrained draw: per position, the softmax and one token from it.
fn independent(scores: &[f32], len: usize, v: usize, rng: &mut impl Rng) -> (Vec<u32>, Vec<f32>) {
    let mut marginals = vec![0f32; len * v];
    let mut sample = Vec::with_capacity(len);
    for p in 0..len {
        let row = &scores[p * v..(p + 1) * v];
        let out = &mut marginals[p * v..(p + 1) * v];
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0f64;
        for (o, &x) in out.iter_mut().zip(row) {
            *o = (x - m).exp();
            total += *o as f64;
        }
        for o in out.iter_mut() {
            *o = (*o as f64 / total) as f32;
        }
        let mut u = rng.gen::<f64>();
        let mut pick = v - 1;
        for (i, &q) in out.iter().enumerate() {
            if u < q as f64 {
                pick = i;
                break;
            }
            u -= q as f64;
        }
        sample.push(pick as u32);
    }
    (sample, marginals)
}

fn run_draws(c: &mut Criterion) {
    let lm = load();
    let (len, v, mask, pad) = (
        lm.config.seq_len,
        lm.config.vocab_size,
        lm.config.mask_id(),
        lm.config.pad_id,
    );
    let ctx = ConstraintContext {
        tokenizer: &lm.tokenizer,
        index: lm.token_index(),
        seq_len: len,
    };
    let schema = format!("{}/examples/schemas/restaurant.json", env!("CARGO_MANIFEST_DIR"));
    let stacks = [
        ("none", Stack::new()),
        (
            "schema",
            Stack::new().constrain(JsonSchema::from_file(&schema).unwrap()),
        ),
        ("template", Stack::new().constrain(Regex::new(TEMPLATE).unwrap())),
    ];
    let mut group = c.benchmark_group("masked_run_draws");
    group.sample_size(10);
    for (name, stack) in stacks {
        let prepared = stack.prepare(&ctx).unwrap();
        let draw = |scores: &[f32], open: &[usize], rng: &mut rand::rngs::StdRng| -> (Vec<u32>, Vec<f32>) {
            if prepared.has_hard {
                let lattice = Lattice::new(scores, len, v, &prepared.automaton, pad, 1.0).unwrap();
                let s = lattice.sample(rng);
                let keys = open.iter().map(|&p| lattice.marginal(p, s[p])).collect();
                (s, keys)
            } else {
                let (s, m) = independent(scores, len, v, rng);
                let keys = open.iter().map(|&p| m[p * v + s[p] as usize]).collect();
                (s, keys)
            }
        };
        // One low-confidence run, one token per step, recording each step's score table.
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let mut row = vec![mask; len];
        let mut tables = Vec::with_capacity(len);
        for _ in 0..len {
            let ids = Tensor::from_vec(row.clone(), (1, len), &Device::Cpu).unwrap();
            let logits = lm.model.forward(&ids, &mut Mode::Infer).unwrap();
            let logp = candle_nn::ops::log_softmax(&logits, candle_core::D::Minus1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let mut scores = vec![f32::NEG_INFINITY; len * v];
            for p in 0..len {
                if row[p] == mask {
                    scores[p * v..(p + 1) * v].copy_from_slice(&logp[p * v..(p + 1) * v]);
                } else {
                    scores[p * v + row[p] as usize] = 0.0;
                }
            }
            let scores = prepared.masked(scores);
            let open: Vec<usize> = (0..len).filter(|&p| row[p] == mask).collect();
            let (s, keys) = draw(&scores, &open, &mut rng);
            let best = (0..open.len()).max_by(|&a, &b| keys[a].total_cmp(&keys[b])).unwrap();
            row[open[best]] = s[open[best]];
            tables.push((scores, open));
        }
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                for (scores, open) in &tables {
                    std::hint::black_box(draw(scores, open, &mut rng));
                }
            })
        });
    }
    group.finish();
}

fn sample(c: &mut Criterion) {
    let lm = load();
    let schema = format!("{}/examples/schemas/restaurant.json", env!("CARGO_MANIFEST_DIR"));
    let mut group = c.benchmark_group("masked_sample_64_tokens");
    group.sample_size(10);
    let stacks = [
        ("none", Stack::new()),
        (
            "schema",
            Stack::new().constrain(JsonSchema::from_file(&schema).unwrap()),
        ),
        ("template", Stack::new().constrain(Regex::new(TEMPLATE).unwrap())),
    ];
    for (name, stack) in stacks {
        let generator = MaskedGenerator::new(&lm).stack(stack).steps(64).batch_size(1);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| generator.generate(1).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, forward, draw, run_draws, sample);
criterion_main!(benches);
