//! GPU check: CPU/GPU parity and throughput, in one program that can be built on a CPU-only
//! machine and run on a GPU machine (`benches/gpu/README.md` and `docs/gpu.md`).
//!
//! ```text
//! cargo run --release --features cuda -p diffusion-lm --example gpu_check -- \
//!     [--device cuda:0] [--model models/e2e] [--out gpu_check.json] [--dump io.safetensors]
//!     [--threads N] [--quick] [--short-cpu] [--gpu-only]
//! ```
//!
//! **Parity** (same weights on both devices, inputs drawn on the host so both see the same
//! numbers):
//! - a denoising step (denoiser forward, clamping, DDPM update) at batch 8;
//! - a training step (loss, backward, AdamW, EMA) from the same initial weights, with dropout 0,
//!   because dropout masks on a GPU come from the device's generator;
//! - a guided, projected step: the clamping scores the JSON-Schema projection reads, the best
//!   sequence it picks, and a guidance gradient computed by autograd on the device; then a whole
//!   20-step guided, schema-constrained generation.
//!
//! Tolerance: every continuous output agrees within `1e-3` relative to its largest magnitude
//! (f32 kernels differ in summation order; the measured differences are printed), and every
//! discrete choice (nearest tokens, projected sequences) is identical.
//!
//! **Timing** on both devices: a denoising step at batch 1, 64 and 256 (f32, f32 with TF32 and
//! bf16 on the GPU), a training step at batch 64 (tokens/s), and a 64-token, 200-step generation at
//! batch 1 and 256 (samples/s). On the CPU the batch-256 generation runs 20 steps (4 with
//! `--short-cpu`) and its samples/s are scaled to 200 steps, which the output says; `--gpu-only`
//! skips the CPU timings. `--threads`
//! sets the CPU thread count (via `RAYON_NUM_THREADS`, read by candle's CPU kernels; set it
//! before start-up).
//!
//! On the GPU it also times each part and each single operation of a batch-256 step (candle's
//! operations and the fused kernels of `diffusion_lm::nn::kernels`; the PyTorch reference times its
//! own), checks the fused dropout mask's statistics, and times the denoising and training steps
//! again with the fused kernels off.
//!
//! Results are printed as a table and written as JSON to `--out`. `--dump` writes the parity
//! step's input and the CPU prediction for `benches/pytorch_reference.py --dump`, which checks that
//! the PyTorch reference computes the same function.
//!
//! With `--device cpu` (no GPU at hand) the program compares the CPU with itself, which checks the
//! harness; CI builds it with the other examples.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use diffusion_lm::generate::guidance_gradient;
use diffusion_lm::nn::Mode;
use diffusion_lm::steer::{Guide, GuideContext, GuideInput};
use diffusion_lm::train::{diffusion_trainer, DiffusionObjective, Objective, TrainConfig, Trainer};
use diffusion_lm::{DiffusionLm, Generator, NoiseSchedule, Sampler, SamplerKind};
use diffusion_lm_controllers::JsonSchema;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};

const SCHEMA: &str = include_str!("schemas/restaurant.json");
/// Relative tolerance of every continuous comparison.
const TOLERANCE: f64 = 1e-3;

struct Args {
    device: String,
    model: std::path::PathBuf,
    out: Option<std::path::PathBuf>,
    dump: Option<std::path::PathBuf>,
    quick: bool,
    /// CPU generation at batch 256 runs 4 steps instead of 20 (scaled to 200 either way).
    short_cpu: bool,
    /// Time the GPU only (parity still runs on both devices).
    gpu_only: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        device: "cuda:0".into(),
        model: DiffusionLm::default_dir(),
        out: None,
        dump: None,
        quick: false,
        short_cpu: false,
        gpu_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--device" => a.device = value()?,
            "--model" => a.model = value()?.into(),
            "--out" => a.out = Some(value()?.into()),
            "--dump" => a.dump = Some(value()?.into()),
            "--threads" => {
                // candle's CPU kernels read this once, on first use.
                std::env::set_var("RAYON_NUM_THREADS", value()?);
            }
            "--quick" => a.quick = true,
            "--short-cpu" => a.short_cpu = true,
            "--gpu-only" => a.gpu_only = true,
            other => bail!("unknown argument {other:?} (see the docs at the top of examples/gpu_check.rs)"),
        }
    }
    Ok(a)
}

/// Largest absolute difference, and the same relative to the largest magnitude of `a`.
fn compare(a: &Tensor, b: &Tensor) -> Result<(f64, f64)> {
    let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.flatten_all()?;
    let b = b.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.flatten_all()?;
    let diff = (&a - &b)?.abs()?.max(0)?.to_scalar::<f32>()? as f64;
    let scale = a.abs()?.max(0)?.to_scalar::<f32>()?.max(1e-12) as f64;
    Ok((diff, diff / scale))
}

fn host_normal(seed: u64, shape: (usize, usize, usize)) -> Result<Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    Ok(diffusion_lm::nn::standard_normal(
        std::slice::from_mut(&mut rng),
        shape,
        &Device::Cpu,
    )?)
}

/// A soft preference for one word at every position: the gradient of
/// `Σ_p log softmax(x_p · Eᵀ)[word]`, computed by autograd on the latent's device.
struct PreferWord {
    word: u32,
}

impl Guide for PreferWord {
    fn name(&self) -> String {
        format!("prefer token {}", self.word)
    }

    fn reads(&self) -> GuideInput {
        GuideInput::Latent
    }

    fn log_prob(&self, x: &Tensor, ctx: &GuideContext) -> diffusion_lm::Result<Tensor> {
        let (b, l, d) = x.dims3()?;
        let logits = x.reshape((b * l, d))?.matmul(&ctx.embeddings.t()?)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        Ok(logp.narrow(1, self.word as usize, 1)?.reshape((b, l))?.sum(1)?)
    }
}

/// Mean seconds per call of `f` over `reps` calls after `warm` calls; the device is synchronised
/// before the clock starts and after the last call, so queued GPU work is counted.
fn time(dev: &Device, warm: usize, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warm {
        f()?;
    }
    dev.synchronize()?;
    let t0 = Instant::now();
    for _ in 0..reps {
        f()?;
    }
    dev.synchronize()?;
    Ok(t0.elapsed().as_secs_f64() / reps as f64)
}

struct Report {
    json: BTreeMap<String, Value>,
    failures: Vec<String>,
}

impl Report {
    fn parity(&mut self, name: &str, rel: f64, abs: f64) {
        let ok = rel <= TOLERANCE;
        println!(
            "  {name:<52} max |diff| {abs:.3e}  relative {rel:.3e}  {}",
            if ok { "ok" } else { "FAIL" }
        );
        if !ok {
            self.failures
                .push(format!("{name}: relative difference {rel:.3e} > {TOLERANCE:.0e}"));
        }
        self.json.insert(
            format!("parity.{name}"),
            json!({ "max_abs": abs, "relative": rel, "ok": ok }),
        );
    }

    fn exact(&mut self, name: &str, same: usize, total: usize) {
        let ok = same == total;
        println!(
            "  {name:<52} {same}/{total} identical  {}",
            if ok { "ok" } else { "FAIL" }
        );
        if !ok {
            self.failures.push(format!("{name}: {same}/{total} identical"));
        }
        self.json.insert(
            format!("parity.{name}"),
            json!({ "identical": same, "total": total, "ok": ok }),
        );
    }

    fn timing(&mut self, name: &str, secs: f64, extra: Value) {
        println!(
            "  {name:<52} {:>10.3} ms  {}",
            secs * 1e3,
            if extra.is_null() {
                String::new()
            } else {
                extra.to_string()
            }
        );
        self.json
            .insert(format!("time.{name}"), json!({ "ms": secs * 1e3, "extra": extra }));
    }
}

fn load(dir: &std::path::Path, dev: &Device) -> Result<DiffusionLm> {
    DiffusionLm::load(dir, dev).with_context(|| format!("loading {} on {dev:?}", dir.display()))
}

fn parity(args: &Args, gpu: &Device, rep: &mut Report) -> Result<()> {
    println!(
        "parity (CPU vs {}; tolerance: relative {TOLERANCE:.0e}, discrete choices identical)",
        args.device
    );
    let cpu_lm = load(&args.model, &Device::Cpu)?;
    let gpu_lm = load(&args.model, gpu)?;
    let cfg = cpu_lm.config.clone();
    let sampler = Sampler::new(
        NoiseSchedule::sqrt(cfg.diffusion_steps)?.respace(200)?,
        SamplerKind::Ddpm,
    );

    // 1. A denoising step.
    let shape = (8, cfg.seq_len, cfg.embed_dim);
    let x = host_normal(1, shape)?;
    let noise = host_normal(2, shape)?;
    let i = 120;
    let t = vec![sampler.schedule().timesteps()[i]; 8];
    let step = |lm: &DiffusionLm| -> Result<(Tensor, Tensor, Tensor)> {
        let dev = lm.device();
        let x0 = lm.model.forward(&x.to_device(dev)?, &t, &mut Mode::Infer)?;
        let (ids, clamped) = lm.model.clamp(&x0)?;
        let next = sampler.step(&clamped, i, &x.to_device(dev)?, Some(&noise.to_device(dev)?))?;
        Ok((x0, ids, next))
    };
    let (x0_c, ids_c, next_c) = step(&cpu_lm)?;
    if let Some(path) = &args.dump {
        // For benches/pytorch_reference.py, which checks that it computes the same denoiser.
        let t_f32: Vec<f32> = t.iter().map(|&v| v as f32).collect();
        let tensors = std::collections::HashMap::from([
            ("x".to_string(), x.clone()),
            ("t".to_string(), Tensor::new(t_f32.as_slice(), &Device::Cpu)?),
            ("x0".to_string(), x0_c.clone()),
        ]);
        candle_core::safetensors::save(&tensors, path).with_context(|| format!("writing {}", path.display()))?;
    }
    let (x0_g, ids_g, next_g) = step(&gpu_lm)?;
    let (abs, rel) = compare(&x0_c, &x0_g)?;
    rep.parity("denoising step: predicted x0", rel, abs);
    let (ids_c, ids_g) = (
        ids_c.flatten_all()?.to_vec1::<u32>()?,
        ids_g.flatten_all()?.to_vec1::<u32>()?,
    );
    let same = ids_c.iter().zip(&ids_g).filter(|(a, b)| a == b).count();
    rep.exact("denoising step: clamped tokens", same, ids_c.len());
    let (abs, rel) = compare(&next_c, &next_g)?;
    rep.parity("denoising step: x_{t-1}", rel, abs);

    // 2. A training step, from the same initial weights; dropout 0 (see the module docs).
    let mut tcfg = cfg.clone();
    tcfg.dropout = 0.0;
    let texts = training_texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let train = TrainConfig {
        steps: 100,
        batch_size: 16,
        ..TrainConfig::default()
    };
    let dir_c = tempfile::tempdir()?;
    let dir_g = tempfile::tempdir()?;
    let mut tr_c = diffusion_trainer(
        tcfg.clone(),
        cpu_lm.tokenizer.clone(),
        &refs,
        train.clone(),
        dir_c.path(),
        &Device::Cpu,
    )?;
    let mut tr_g = diffusion_trainer(tcfg, gpu_lm.tokenizer.clone(), &refs, train, dir_g.path(), gpu)?;
    let parts_c = tr_c.train_step()?;
    let parts_g = tr_g.train_step()?;
    let rel = (parts_c[0] - parts_g[0]).abs() / parts_c[0].abs();
    rep.parity("training step: loss", rel, (parts_c[0] - parts_g[0]).abs());
    let (w_c, w_g) = (tr_c.raw_weights()?, tr_g.raw_weights()?);
    let (mut worst_abs, mut worst_rel, mut worst_name) = (0.0, 0.0, String::new());
    for (name, a) in &w_c {
        let b = w_g.get(name).with_context(|| format!("{name} missing on the GPU"))?;
        let (abs, rel) = compare(a, b)?;
        if rel > worst_rel {
            (worst_abs, worst_rel, worst_name) = (abs, rel, name.clone());
        }
    }
    rep.parity("training step: updated weights (worst tensor)", worst_rel, worst_abs);
    println!("    (worst tensor: {worst_name})");

    // 3. A guided, projected step.
    let schema = JsonSchema::from_json(SCHEMA)?;
    let prepared = Generator::new(&cpu_lm).constrain(schema.clone()).prepare()?;
    let v = cfg.vocab_size;
    let scores_c = cpu_lm.model.clamp_scores(&x0_c)?;
    let scores_g = gpu_lm.model.clamp_scores(&x0_g)?;
    let (abs, rel) = compare(&scores_c, &scores_g)?;
    rep.parity("projection: clamping scores", rel, abs);
    let rows = |s: &Tensor| -> Result<Vec<Vec<u32>>> {
        let flat = s.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        flat.chunks(cfg.seq_len * v)
            .map(|r| {
                diffusion_lm::steer::projection::best_sequence(
                    &prepared.masked(r.to_vec()),
                    cfg.seq_len,
                    v,
                    &prepared.automaton,
                    cfg.pad_id,
                )
                .map(|(ids, _)| ids)
                .context("projection found no sequence")
            })
            .collect()
    };
    let (p_c, p_g) = (rows(&scores_c)?, rows(&scores_g)?);
    let same = p_c.iter().zip(&p_g).filter(|(a, b)| a == b).count();
    rep.exact("projection: projected sequences", same, p_c.len());
    let word = cpu_lm.tokenizer.encode("Italian").map(|ids| ids[0]).unwrap_or(1);
    let guide = PreferWord { word };
    fn ctx(lm: &DiffusionLm, step: usize, t: usize) -> GuideContext<'_> {
        GuideContext {
            step,
            num_steps: 200,
            t,
            latent_t: t.saturating_sub(1),
            embeddings: lm.model.embeddings(),
            masked_fraction: 0.0,
        }
    }
    let guides: Vec<Box<dyn Guide>> = vec![Box::new(guide)];
    let g_c = guidance_gradient(&guides, &cpu_lm.model, &next_c, &ctx(&cpu_lm, i, t[0]))?.context("no CPU gradient")?;
    let g_g = guidance_gradient(&guides, &gpu_lm.model, &next_g.to_device(gpu)?, &ctx(&gpu_lm, i, t[0]))?
        .context("no GPU gradient")?;
    let (abs, rel) = compare(&g_c, &g_g)?;
    rep.parity("guidance: gradient by autograd", rel, abs);
    let run = |lm: &DiffusionLm| -> Result<Vec<Vec<u32>>> {
        Ok(Generator::new(lm)
            .constrain(schema.clone())
            .guide(PreferWord { word })
            .steps(20)
            .seed(3)
            .batch_size(4)
            .generate(4)?
            .into_iter()
            .map(|s| s.ids)
            .collect())
    };
    let (gen_c, gen_g) = (run(&cpu_lm)?, run(&gpu_lm)?);
    let same = gen_c.iter().zip(&gen_g).filter(|(a, b)| a == b).count();
    rep.exact("guided, projected 20-step generation: outputs", same, gen_c.len());
    Ok(())
}

fn training_texts() -> Vec<String> {
    [
        "The Eagle is a cheap coffee shop near Burger King in the riverside area.",
        "{\"name\":\"The Eagle\",\"eatType\":\"coffee shop\",\"food\":\"French\",\"area\":\"riverside\"}",
        "Zizzi is a family-friendly Italian restaurant in the city centre with a high customer rating.",
        "There is a pub called The Cambridge Blue that serves English food for less than £20.",
        "{\"name\":\"Aromi\",\"eatType\":\"pub\",\"food\":\"Italian\",\"customerRating\":\"5 out of 5\"}",
        "Green Man is an expensive Japanese restaurant near All Bar One; it is not family-friendly.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// How far a reduced-precision prediction is from the f32 one, and how many clamped tokens differ.
fn reduced_precision_effect(
    rep: &mut Report,
    lm: &DiffusionLm,
    name: &str,
    full: &Tensor,
    reduced: &Tensor,
) -> Result<()> {
    let (abs, rel) = compare(full, reduced)?;
    let a = lm.model.nearest_tokens(full)?.flatten_all()?.to_vec1::<u32>()?;
    let b = lm.model.nearest_tokens(reduced)?.flatten_all()?.to_vec1::<u32>()?;
    let same = a.iter().zip(&b).filter(|(p, q)| p == q).count();
    println!(
        "  accuracy of {name} vs f32: max |x0 diff| {abs:.3e} (relative {rel:.3e}), clamped tokens identical {same}/{}",
        a.len()
    );
    rep.json.insert(
        format!("accuracy.{name}"),
        json!({ "max_abs": abs, "relative": rel, "tokens_identical": same, "tokens": a.len() }),
    );
    Ok(())
}

fn timings(args: &Args, dev: &Device, label: &str, rep: &mut Report) -> Result<()> {
    let on_gpu = !dev.is_cpu();
    let reps = |n: usize| if args.quick { 2 } else { n };
    println!("timing on {label}");
    let mut lm = load(&args.model, dev)?;
    let cfg = lm.config.clone();
    let sampler = Sampler::new(
        NoiseSchedule::sqrt(cfg.diffusion_steps)?.respace(200)?,
        SamplerKind::Ddpm,
    );
    let i = 100;
    let variants: &[(&str, DType, bool)] = if on_gpu {
        &[
            ("f32", DType::F32, false),
            ("tf32", DType::F32, true),
            ("bf16", DType::BF16, false),
        ]
    } else {
        &[("f32", DType::F32, false)]
    };
    for &(name, dtype, tf32) in variants {
        diffusion_lm::nn::device::set_tf32(tf32);
        lm.set_compute_dtype(dtype)?;
        for batch in [1usize, 64, 256] {
            let n = if on_gpu { 200 } else { (64 / batch).clamp(3, 20) };
            let secs = time_denoising_step(&lm, &sampler, i, dev, batch, reps(n))?;
            rep.timing(
                &format!("{label} denoising step {name} batch {batch}"),
                secs,
                Value::Null,
            );
        }
        if on_gpu && dtype != DType::F32 {
            // Accuracy effect of half precision on the prediction and on the chosen tokens.
            let x = host_normal(7, (64, cfg.seq_len, cfg.embed_dim))?.to_device(dev)?;
            let t = vec![sampler.schedule().timesteps()[i]; 64];
            let half = lm.model.forward(&x, &t, &mut Mode::Infer)?;
            lm.set_compute_dtype(DType::F32)?;
            diffusion_lm::nn::device::set_tf32(false);
            let full = lm.model.forward(&x, &t, &mut Mode::Infer)?;
            reduced_precision_effect(rep, &lm, name, &full, &half)?;
        }
    }
    if on_gpu {
        // The TF32 accuracy effect (bf16's is measured above).
        let x = host_normal(7, (64, cfg.seq_len, cfg.embed_dim))?.to_device(dev)?;
        let t = vec![sampler.schedule().timesteps()[i]; 64];
        lm.set_compute_dtype(DType::F32)?;
        diffusion_lm::nn::device::set_tf32(false);
        let full = lm.model.forward(&x, &t, &mut Mode::Infer)?;
        diffusion_lm::nn::device::set_tf32(true);
        let reduced = lm.model.forward(&x, &t, &mut Mode::Infer)?;
        diffusion_lm::nn::device::set_tf32(false);
        reduced_precision_effect(rep, &lm, "tf32", &full, &reduced)?;
    }
    diffusion_lm::nn::device::set_tf32(false);
    lm.set_compute_dtype(DType::F32)?;
    components(args, dev, label, rep, &lm)?;

    // A training step at batch 64 with the shipped model's config (dropout included).
    let dir = tempfile::tempdir()?;
    let mut trainer = batch_64_trainer(&lm, dir.path(), dev)?;
    let n = if on_gpu { 100 } else { 5 };
    let secs = time(dev, 3, reps(n), || {
        trainer.train_step()?;
        Ok(())
    })?;
    let tokens = (64 * cfg.seq_len) as f64;
    rep.timing(
        &format!("{label} training step batch 64"),
        secs,
        json!({ "tokens_per_s": (tokens / secs).round() }),
    );
    // Where the step's time goes: the loss alone, then loss and backward (the rest of a step is
    // the optimizer and the EMA). Each part reads its loss back, as the step does.
    let ids: Vec<u32> = (0..64 * cfg.seq_len)
        .map(|i| 1 + (i * 7919 % (cfg.vocab_size - 1)) as u32)
        .collect();
    let batch = Tensor::from_vec(ids, (64, cfg.seq_len), dev)?;
    let mut rng = StdRng::seed_from_u64(9);
    let forward = time(dev, 3, reps(n), || {
        trainer.objective.loss(&batch, &mut rng)?;
        Ok(())
    })?;
    let backward = time(dev, 3, reps(n), || {
        let (loss, _) = trainer.objective.loss(&batch, &mut rng)?;
        loss.backward()?;
        Ok(())
    })?;
    rep.timing(
        &format!("{label} training step batch 64: loss only"),
        forward,
        Value::Null,
    );
    rep.timing(
        &format!("{label} training step batch 64: loss and backward"),
        backward,
        Value::Null,
    );

    // Whole generations: 64 tokens, 200 steps.
    for (name, dtype) in [("f32", DType::F32), ("bf16", DType::BF16)] {
        if !on_gpu && dtype != DType::F32 {
            continue;
        }
        lm.set_compute_dtype(dtype)?;
        for batch in [1usize, 256] {
            let steps = match (on_gpu, batch > 1, args.short_cpu) {
                (false, true, true) => 4,
                (false, true, false) => 20,
                _ => 200,
            };
            let steps = if args.quick { steps.min(10) } else { steps };
            let gen = Generator::new(&lm).steps(steps).seed(0).batch_size(batch);
            gen.generate(batch)?; // warm-up
            let secs = time(dev, 0, 1, || {
                gen.generate(batch)?;
                Ok(())
            })?;
            let per_200 = secs * 200.0 / steps as f64;
            rep.timing(
                &format!("{label} generation 64 tokens x 200 steps {name} batch {batch}"),
                per_200,
                json!({
                    "samples_per_s": batch as f64 / per_200,
                    "measured_steps": steps,
                }),
            );
        }
    }
    Ok(())
}

/// Mean time of one denoising step (denoiser forward, clamping, DDPM update) at `batch`, at step
/// `i` of `sampler`'s schedule, from host-drawn inputs.
fn time_denoising_step(
    lm: &DiffusionLm,
    sampler: &Sampler,
    i: usize,
    dev: &Device,
    batch: usize,
    reps: usize,
) -> Result<f64> {
    let cfg = &lm.config;
    let x = host_normal(5, (batch, cfg.seq_len, cfg.embed_dim))?.to_device(dev)?;
    let noise = host_normal(6, (batch, cfg.seq_len, cfg.embed_dim))?.to_device(dev)?;
    let t = vec![sampler.schedule().timesteps()[i]; batch];
    time(dev, 3, reps, || {
        let x0 = lm.model.forward(&x, &t, &mut Mode::Infer)?;
        let (_, x0) = lm.model.clamp(&x0)?;
        sampler.step(&x0, i, &x, Some(&noise))?;
        Ok(())
    })
}

/// A trainer of the shipped model's config at batch 64 (dropout included) on a few texts.
fn batch_64_trainer(lm: &DiffusionLm, dir: &std::path::Path, dev: &Device) -> Result<Trainer<DiffusionObjective>> {
    let texts = training_texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let train = TrainConfig {
        steps: 1_000_000,
        batch_size: 64,
        ..TrainConfig::default()
    };
    Ok(diffusion_trainer(
        lm.config.clone(),
        lm.tokenizer.clone(),
        &refs,
        train,
        dir,
        dev,
    )?)
}

/// The denoising and training steps again with the fused CUDA kernels off
/// (`diffusion_lm::nn::kernels::set_enabled(false)`): candle's own operations, as before the kernels;
/// compare with the same figures under `timings`.
fn unfused_effect(args: &Args, dev: &Device, rep: &mut Report) -> Result<()> {
    diffusion_lm::nn::kernels::set_enabled(false);
    let result = unfused_timings(args, dev, rep);
    diffusion_lm::nn::kernels::set_enabled(true);
    result
}

fn unfused_timings(args: &Args, dev: &Device, rep: &mut Report) -> Result<()> {
    let label = format!("{} without fused kernels", args.device);
    println!("timing on {label}");
    let lm = load(&args.model, dev)?;
    let cfg = lm.config.clone();
    let sampler = Sampler::new(
        NoiseSchedule::sqrt(cfg.diffusion_steps)?.respace(200)?,
        SamplerKind::Ddpm,
    );
    let i = 100;
    let reps = |n: usize| if args.quick { 2 } else { n };
    for batch in [1usize, 64, 256] {
        let secs = time_denoising_step(&lm, &sampler, i, dev, batch, reps(200))?;
        rep.timing(&format!("{label} denoising step f32 batch {batch}"), secs, Value::Null);
    }
    let dir = tempfile::tempdir()?;
    let mut trainer = batch_64_trainer(&lm, dir.path(), dev)?;
    let secs = time(dev, 3, reps(100), || {
        trainer.train_step()?;
        Ok(())
    })?;
    rep.timing(
        &format!("{label} training step batch 64"),
        secs,
        json!({ "tokens_per_s": ((64 * cfg.seq_len) as f64 / secs).round() }),
    );
    Ok(())
}

/// The parts of a batch-256 denoising step, each timed alone (f32, random weights of the model's
/// sizes), so a device where the whole step is slow shows which part is;
/// `benches/pytorch_reference.py` times the same parts.
fn components(args: &Args, dev: &Device, label: &str, rep: &mut Report, lm: &DiffusionLm) -> Result<()> {
    use diffusion_lm::nn::{block_specs, init_varmap, Block, LayerNorm, SelfAttention};
    let cfg = &lm.config;
    let (b, l, h, f) = (256, cfg.seq_len, cfg.hidden, cfg.ffn_hidden);
    let n = if args.quick {
        2
    } else if dev.is_cpu() {
        5
    } else {
        200
    };
    let varmap = init_varmap(&block_specs("b", h, f), &mut StdRng::seed_from_u64(3), dev)?;
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, dev);
    let block = Block::new(h, cfg.heads, f, 0.0, false, vb.pp("b"))?;
    let attn = SelfAttention::new(h, cfg.heads, false, vb.pp("b.attn"))?;
    let norm = LayerNorm::new(h, vb.pp("b.norm1"))?;
    let fc1 = candle_nn::linear(h, f, vb.pp("b.ffn.fc1"))?;
    let fc2 = candle_nn::linear(f, h, vb.pp("b.ffn.fc2"))?;
    let x = host_normal(11, (b, l, h))?.to_device(dev)?;
    let x0 = host_normal(12, (b, l, cfg.embed_dim))?.to_device(dev)?;
    let mut parts: Vec<(&str, Box<dyn FnMut() -> Result<()>>)> = vec![
        ("layer norm", Box::new(|| Ok(drop(norm.forward(&x, &Mode::Infer)?)))),
        ("attention", Box::new(|| Ok(drop(attn.forward(&x, &Mode::Infer)?)))),
        (
            "feed-forward",
            Box::new(|| {
                use diffusion_lm::nn::kernels::{linear, Activation};
                let hidden = linear(&fc1, &x, Activation::Relu, None)?;
                Ok(drop(linear(&fc2, &hidden, Activation::None, None)?))
            }),
        ),
        ("block", Box::new(|| Ok(drop(block.forward(&x, &mut Mode::Infer)?)))),
        (
            "block, forward and backward",
            Box::new(|| {
                let var = Var::from_tensor(&x)?;
                let y = block.forward(var.as_tensor(), &mut Mode::Grad)?;
                Ok(drop(y.sum_all()?.backward()?))
            }),
        ),
        (
            "clamping (nearest tokens)",
            Box::new(|| Ok(drop(lm.model.nearest_tokens(&x0)?))),
        ),
    ];
    for (name, f) in parts.iter_mut() {
        let secs = time(dev, 3, n, f)?;
        rep.timing(&format!("{label} part, batch 256: {name}"), secs, Value::Null);
    }
    drop(parts);
    kernels(dev, label, rep, n, lm, (b, l, h, f, cfg.heads))?;
    Ok(())
}

/// The single operations inside those parts, each timed alone, the way the model issues them
/// (`src/nn.rs`); the PyTorch reference times its own forms of the same operations, so a slow
/// kernel shows by name.
fn kernels(
    dev: &Device,
    label: &str,
    rep: &mut Report,
    n: usize,
    lm: &DiffusionLm,
    (b, l, h, f, heads): (usize, usize, usize, usize, usize),
) -> Result<()> {
    let hd = h / heads;
    let rows = b * l;
    let x2 = host_normal(21, (1, rows, h))?.to_device(dev)?.squeeze(0)?;
    let w_qkv = (host_normal(22, (1, 3 * h, h))?.to_device(dev)?.squeeze(0)? * 0.05)?;
    let bias = host_normal(23, (1, 1, 3 * h))?.to_device(dev)?.flatten_all()?;
    let y2 = x2.matmul(&w_qkv.t()?)?;
    let hid = host_normal(24, (b, l, f))?.to_device(dev)?;
    let x = x2.reshape((b, l, h))?;
    let qkv = y2.reshape((b, l, 3, heads, hd))?.permute((2, 0, 3, 1, 4))?;
    let (q, k, v) = (
        qkv.get(0)?.contiguous()?,
        qkv.get(1)?.contiguous()?,
        qkv.get(2)?.contiguous()?,
    );
    let scores = q.matmul(&k.t()?)?;
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let att = probs.matmul(&v)?;
    let x0 = host_normal(25, (b, l, lm.config.embed_dim))?.to_device(dev)?;
    let dots = x0
        .reshape((rows, lm.config.embed_dim))?
        .matmul(&lm.model.embeddings().t()?)?;
    let v_size = lm.config.vocab_size;
    use diffusion_lm::nn::kernels::{bias_act, softmax_last_dim, split_heads, Activation};
    let hid2 = hid.reshape((rows, f))?;
    let bias_f = host_normal(26, (1, 1, f))?.to_device(dev)?.flatten_all()?;
    let qkv_layer = candle_nn::Linear::new(w_qkv.clone(), Some(bias.clone()));
    let ones = Tensor::ones((1, rows), DType::F32, dev)?;
    let mut ops: Vec<(String, Box<dyn FnMut() -> Result<()>>)> = vec![
        (
            format!("linear {h} -> {}, product only", 3 * h),
            Box::new(|| Ok(drop(x2.matmul(&w_qkv.t()?)?))),
        ),
        (
            format!("bias add [{rows}, {}]", 3 * h),
            Box::new(|| Ok(drop(y2.broadcast_add(&bias)?))),
        ),
        (
            "split heads: q (scaled), k, v copies".into(),
            Box::new(|| {
                let qkv = y2.reshape((b, l, 3, heads, hd))?.permute((2, 0, 3, 1, 4))?;
                drop((qkv.get(0)? * 0.5)?);
                drop(qkv.get(1)?.contiguous()?);
                Ok(drop(qkv.get(2)?.contiguous()?))
            }),
        ),
        (
            format!("scores q k^T [{}, {l}, {l}]", b * heads),
            Box::new(|| Ok(drop(q.matmul(&k.t()?)?))),
        ),
        (
            format!("softmax [{b}, {heads}, {l}, {l}]"),
            Box::new(|| Ok(drop(candle_nn::ops::softmax_last_dim(&scores)?))),
        ),
        (
            format!("probs v [{}, {l}, {hd}]", b * heads),
            Box::new(|| Ok(drop(probs.matmul(&v)?))),
        ),
        (
            "merge heads (transpose copy)".into(),
            Box::new(|| Ok(drop(att.transpose(1, 2)?.reshape((b, l, h))?))),
        ),
        (
            format!("residual add [{b}, {l}, {h}]"),
            Box::new(|| Ok(drop((&x + &x)?))),
        ),
        (format!("relu [{b}, {l}, {f}]"), Box::new(|| Ok(drop(hid.relu()?)))),
        (
            format!("clamping: product [{rows}, {v_size}]"),
            Box::new(|| {
                let e = lm.model.embeddings();
                Ok(drop(x0.reshape((rows, e.dim(1)?))?.matmul(&e.t()?)?))
            }),
        ),
        (
            format!("clamping: argmin over {v_size}"),
            Box::new(|| Ok(drop(dots.argmin(D::Minus1)?))),
        ),
        // The fused kernels (diffusion_lm::nn::kernels) that replace some of the above on CUDA.
        (
            format!("fused: bias add [{rows}, {}]", 3 * h),
            Box::new(|| Ok(drop(bias_act(&y2, &bias, Activation::None, None)?))),
        ),
        (
            format!("fused: bias, ReLU [{rows}, {f}]"),
            Box::new(|| Ok(drop(bias_act(&hid2, &bias_f, Activation::Relu, None)?))),
        ),
        (
            "fused: projection to heads (product, bias, split, q scaled)".into(),
            Box::new(|| Ok(drop(split_heads(&qkv_layer, &x, heads, 0.5)?))),
        ),
        (
            "fused: merge heads".into(),
            Box::new(|| Ok(drop(diffusion_lm::nn::kernels::merge_heads(&att)?))),
        ),
        (
            format!("fused: softmax [{b}, {heads}, {l}, {l}]"),
            Box::new(|| Ok(drop(softmax_last_dim(&scores)?))),
        ),
        (
            format!("fused: clamping, nearest over {v_size}"),
            Box::new(|| Ok(drop(lm.model.nearest_tokens(&x0)?))),
        ),
        // A bias's gradient in training: candle's sum over rows against a product with ones.
        (
            format!("bias gradient: sum over {rows} rows"),
            Box::new(|| Ok(drop(y2.sum(0)?))),
        ),
        (
            format!("bias gradient: ones [1, {rows}] product"),
            Box::new(|| Ok(drop(ones.matmul(&y2)?))),
        ),
    ];
    for (name, op) in ops.iter_mut() {
        let secs = time(dev, 3, n, op)?;
        rep.timing(&format!("{label} kernel, batch 256: {name}"), secs, Value::Null);
    }
    drop(ops);
    // The fused dropout mask (training on CUDA): its share of zeros must be p and its mean 1.
    if let Some(mask) = diffusion_lm::nn::kernels::dropout_mask(&x, 0.1, 12345)? {
        let zeros = mask.eq(0f32)?.to_dtype(DType::F32)?.mean_all()?.to_scalar::<f32>()? as f64;
        let mean = mask.mean_all()?.to_scalar::<f32>()? as f64;
        // Five standard deviations of a share over this many independent draws.
        let sigma = (0.1f64 * 0.9 / mask.elem_count() as f64).sqrt();
        let ok = (zeros - 0.1).abs() < 5.0 * sigma && (mean - 1.0).abs() < 5.0 * sigma / 0.9;
        println!(
            "  {:<52} zeros {zeros:.5}, mean {mean:.5} (5 sigma: {:.1e})  {}",
            "dropout mask, p 0.1",
            5.0 * sigma,
            if ok { "ok" } else { "FAIL" }
        );
        if !ok {
            rep.failures.push(format!("dropout mask: zeros {zeros}, mean {mean}"));
        }
        rep.json.insert(
            "parity.dropout mask".into(),
            json!({ "zeros": zeros, "mean": mean, "ok": ok }),
        );
        let again = diffusion_lm::nn::kernels::dropout_mask(&x, 0.1, 12345)?.context("same mask")?;
        let same = mask.eq(&again)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? as usize;
        rep.exact("dropout mask: same seed, same mask", same, mask.elem_count());
    }
    Ok(())
}

fn main() -> Result<()> {
    diffusion_lm::tune_runtime();
    let args = parse_args()?;
    let gpu = diffusion_lm::nn::device::parse_device(&args.device)?;
    let mut rep = Report {
        json: BTreeMap::new(),
        failures: Vec::new(),
    };
    rep.json.insert("device".into(), json!(args.device));
    rep.json.insert(
        "cpu_threads".into(),
        json!(std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into())),
    );
    parity(&args, &gpu, &mut rep)?;
    if !gpu.is_cpu() {
        timings(&args, &gpu, &args.device, &mut rep)?;
        unfused_effect(&args, &gpu, &mut rep)?;
    }
    if !args.gpu_only || gpu.is_cpu() {
        timings(&args, &Device::Cpu, "cpu", &mut rep)?;
    }
    rep.json.insert("failures".into(), json!(rep.failures));
    if let Some(path) = &args.out {
        std::fs::write(path, serde_json::to_string_pretty(&rep.json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if rep.failures.is_empty() {
        println!("parity: all checks within tolerance");
        Ok(())
    } else {
        bail!("parity failures:\n  {}", rep.failures.join("\n  "))
    }
}
