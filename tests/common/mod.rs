//! Helpers shared by the integration tests: a toy corpus and a tiny model trained on it.

#![allow(dead_code)]

use std::path::Path;

use candle_core::{Device, Tensor};
use diffusion_lm::scoring::classifier::{ClassifierConfig, FieldSpec};
use diffusion_lm::train::TrainConfig;
use diffusion_lm::{DiffusionLm, ModelConfig, TextTokenizer};

pub const TOY: [&str; 4] = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "the bird sang a song",
    "my fish swims all day",
];

pub fn toy_tokenizer() -> TextTokenizer {
    // Repeat the corpus so every word is frequent enough to become one token.
    let texts: Vec<&str> = TOY.iter().cycle().take(40).copied().collect();
    TextTokenizer::train(texts.into_iter(), 300).expect("toy tokenizer")
}

pub fn toy_config(tok: &TextTokenizer) -> ModelConfig {
    ModelConfig {
        vocab_size: tok.vocab_size(),
        pad_id: tok.pad_id(),
        seq_len: 12,
        embed_dim: 8,
        hidden: 64,
        layers: 2,
        heads: 2,
        ffn_hidden: 128,
        dropout: 0.0,
        diffusion_steps: 200,
        schedule: diffusion_lm::engine::ScheduleKind::Sqrt,
        x0_head: diffusion_lm::engine::X0Head::Direct,
        clean_context: false,
    }
}

pub fn toy_train_config(steps: usize) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 32,
        lr: 3e-3,
        warmup_steps: 50,
        weight_decay: 0.0,
        ema_decay: 0.99,
        grad_clip: Some(1.0),
        seed: 1,
        checkpoint_every: 10_000,
        log_every: 50,
    }
}

/// Trains the toy model into `dir` (a few seconds in release mode).
pub fn train_toy(dir: &Path, steps: usize) -> DiffusionLm {
    let tok = toy_tokenizer();
    let cfg = toy_config(&tok);
    diffusion_lm::train::train_diffusion(cfg, tok, &TOY, toy_train_config(steps), dir, &Device::Cpu)
        .expect("toy training")
}

/// Largest absolute elementwise difference of two f32 tensors of one shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// A standard-normal f64 tensor of `dims` drawn from a seeded generator, so a test that
/// probes a function at it sees the same point on every run (candle's `randn` is unseeded).
pub fn seeded_normal_f64(dims: &[usize], seed: u64) -> Tensor {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = dims.iter().product();
    let values: Vec<f64> = (0..n).map(|_| rand_distr::StandardNormal.sample(&mut rng)).collect();
    Tensor::from_vec(values, dims, &Device::Cpu).expect("shape matches the values")
}

/// A one-layer classifier of the toy corpus's animal (`none` for texts without one).
pub fn animal_config(embed_dim: usize, seq_len: usize, diffusion_steps: usize) -> ClassifierConfig {
    ClassifierConfig {
        hidden: 32,
        layers: 1,
        heads: 2,
        ffn_hidden: 64,
        dropout: 0.0,
        fields: vec![FieldSpec {
            name: "animal".into(),
            values: ["none", "bird", "cat", "dog", "fish"].map(String::from).to_vec(),
        }],
        ..ClassifierConfig::small(embed_dim, seq_len, diffusion_steps)
    }
}
