//! Masked-engine benchmarks (`cargo bench -p diffusion-lm --bench masked`), with the shipped
//! masked model (`models/e2e-masked`):
//!
//! * `masked_forward/{1,64}`: the denoiser's forward pass at batch 1 and 64;
//! * `masked_constrained_draw/{schema,template}`: the constraints' work in the first step (every
//!   position masked, the costliest step) for one sequence: the lattice over (position ×
//!   automaton state), one sampled sequence and the low-confidence key of every position, under
//!   the restaurant JSON Schema and the sentence-template regex;
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
use rand::SeedableRng;

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

criterion_group!(benches, forward, draw, sample);
criterion_main!(benches);
