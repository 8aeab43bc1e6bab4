//! Engine benchmarks (`cargo bench -p diffusion-lm --bench engine`):
//! one denoising step of the shipped model at batch 1 and 64 (denoiser forward + clamping +
//! sampler update), one attribute-guidance gradient through the denoiser with the shipped
//! classifier at batch 8 and 64 (what a guided step adds to an unguided one), and one training
//! step of a model of the shipped size (reported as tokens/s).

use std::sync::Arc;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use diffusion_lm::generate::guidance_gradient;
use diffusion_lm::nn::Mode;
use diffusion_lm::scoring::classifier::LatentClassifier;
use diffusion_lm::steer::{Guide, GuideContext};
use diffusion_lm::train::{diffusion_trainer, TrainConfig};
use diffusion_lm::{DiffusionLm, NoiseSchedule, Sampler, SamplerKind};
use diffusion_lm_controllers::Attribute;

fn load() -> DiffusionLm {
    diffusion_lm::tune_runtime();
    DiffusionLm::load(DiffusionLm::default_dir(), &Device::Cpu).expect("the shipped model in models/e2e")
}

fn denoising_step(c: &mut Criterion) {
    let lm = load();
    let cfg = &lm.config;
    let sampler = Sampler::new(
        NoiseSchedule::sqrt(cfg.diffusion_steps).unwrap().respace(200).unwrap(),
        SamplerKind::Ddpm,
    );
    let mut group = c.benchmark_group("denoising_step");
    for batch in [1usize, 64] {
        let x = Tensor::randn(0f32, 1.0, (batch, cfg.seq_len, cfg.embed_dim), &Device::Cpu).unwrap();
        let noise = x.randn_like(0.0, 1.0).unwrap();
        let i = 100;
        let t = vec![sampler.schedule().timesteps()[i]; batch];
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, _| {
            b.iter(|| {
                let x0 = lm.model.forward(&x, &t, &mut Mode::Infer).unwrap();
                let (_, x0) = lm.model.clamp(&x0).unwrap();
                sampler.step(&x0, i, &x, Some(&noise)).unwrap()
            })
        });
    }
    group.finish();
}

fn guidance_step(c: &mut Criterion) {
    let lm = load();
    let cfg = &lm.config;
    let classifier = Arc::new(
        LatentClassifier::load(DiffusionLm::default_dir().join("classifier"), &Device::Cpu)
            .expect("the shipped classifier in models/e2e/classifier"),
    );
    let guides: Vec<Box<dyn Guide>> = vec![Box::new(Attribute::parse(&classifier, "food=Italian").unwrap())];
    let mut group = c.benchmark_group("guidance_step");
    group.sample_size(10);
    for batch in [8usize, 64] {
        let x = Tensor::randn(0f32, 1.0, (batch, cfg.seq_len, cfg.embed_dim), &Device::Cpu).unwrap();
        let ctx = GuideContext {
            step: 100,
            num_steps: 200,
            t: 1000,
            latent_t: 995,
            embeddings: lm.model.embeddings(),
            masked_fraction: 0.0,
        };
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, _| {
            b.iter(|| guidance_gradient(&guides, &lm.model, &x, &ctx).unwrap().unwrap())
        });
    }
    group.finish();
}

fn training_step(c: &mut Criterion) {
    let lm = load();
    let texts: Vec<String> = [
        "The Eagle is a cheap coffee shop near Burger King in the riverside area.",
        "{\"name\":\"The Eagle\",\"eatType\":\"coffee shop\",\"food\":\"French\",\"area\":\"riverside\"}",
        "Zizzi is a family-friendly Italian restaurant in the city centre with a high customer rating.",
        "There is a pub called The Cambridge Blue that serves English food for less than £20.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let dir = tempfile::tempdir().unwrap();
    let train = TrainConfig {
        steps: 1_000_000,
        batch_size: 64,
        ..TrainConfig::default()
    };
    let mut trainer = diffusion_trainer(
        lm.config.clone(),
        lm.tokenizer.clone(),
        &refs,
        train,
        dir.path(),
        &Device::Cpu,
    )
    .unwrap();
    let mut group = c.benchmark_group("training_step");
    group.sample_size(10);
    group.throughput(Throughput::Elements((64 * lm.config.seq_len) as u64));
    group.bench_function("batch64_tokens", |b| b.iter(|| trainer.train_step().unwrap()));
    group.finish();
}

criterion_group!(benches, denoising_step, guidance_step, training_step);
criterion_main!(benches);
