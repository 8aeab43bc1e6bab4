//! End-to-end tests of the engine: schedule, clamping, gradients, training, checkpoints, sampling.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::*;
use diffusion_lm::engine::schedule::sqrt_alpha_bar;
use diffusion_lm::engine::X0Head;
use diffusion_lm::nn::{init_varmap, Mode};
use diffusion_lm::train::{diffusion_trainer, DiffusionObjective, Objective};
use diffusion_lm::{Denoiser, DiffusionLm, Error, Generator, ModelConfig, NoiseSchedule, SamplerKind};
use rand::SeedableRng;

#[test]
fn sqrt_schedule_matches_the_formulas() {
    let t = 2000;
    let s = NoiseSchedule::sqrt(t).unwrap();
    assert_eq!(s.len(), t);
    let mut cum = 1.0f64;
    for i in 0..t {
        let expected_beta =
            (1.0 - sqrt_alpha_bar((i + 1) as f64 / t as f64) / sqrt_alpha_bar(i as f64 / t as f64)).min(0.999);
        assert!((s.betas()[i] - expected_beta).abs() < 1e-12, "beta_{i}");
        cum *= 1.0 - expected_beta;
        assert!((s.alphas_cumprod()[i] - cum).abs() < 1e-12, "alpha_bar_{i}");
    }
    // alpha_bar_i equals the continuous alpha_bar((i+1)/T) / alpha_bar(0) wherever no clipping happened.
    let ab0 = sqrt_alpha_bar(0.0);
    for i in [0, 10, 500, 1500] {
        assert!((s.alphas_cumprod()[i] - sqrt_alpha_bar((i + 1) as f64 / t as f64) / ab0).abs() < 1e-9);
    }
    // The last steps are clipped at 0.999 (alpha_bar(1) < 0).
    assert_eq!(s.betas()[t - 1], 0.999);
    assert!(s.alphas_cumprod()[t - 1] < 1e-4);
    assert!(NoiseSchedule::sqrt(1).is_err());
}

#[test]
fn respacing_picks_the_right_subsequence() {
    let full = NoiseSchedule::sqrt(2000).unwrap();
    let idx = NoiseSchedule::respaced_indices(2000, 5).unwrap();
    // round(i * 1999 / 4) = 0, 499.75→500, 999.5→1000 (round half away from zero), 1499.25→1499, 1999
    assert_eq!(idx, vec![0, 500, 1000, 1499, 1999]);
    let r = full.respace(5).unwrap();
    assert_eq!(r.timesteps(), idx.as_slice());
    for (k, &i) in idx.iter().enumerate() {
        assert_eq!(r.alphas_cumprod()[k], full.alphas_cumprod()[i]);
    }
    // New betas reproduce the kept alpha_bar by cumulative product.
    let mut cum = 1.0;
    for k in 0..5 {
        cum *= 1.0 - r.betas()[k];
        assert!((cum - r.alphas_cumprod()[k]).abs() < 1e-12);
    }
    // Respacing to T is the identity.
    let same = full.respace(2000).unwrap();
    assert_eq!(same.timesteps(), full.timesteps());
    assert_eq!(same.alphas_cumprod(), full.alphas_cumprod());
    assert!(matches!(full.respace(0), Err(Error::Sampling(_))));
    assert!(matches!(full.respace(2001), Err(Error::Sampling(_))));
}

/// A two-row standard-normal latent of `cfg`'s shape, seeded so every run probes the same point.
fn random_latent(cfg: &ModelConfig, seed: u64) -> Tensor {
    seeded_normal_f64(&[2, cfg.seq_len, cfg.embed_dim], seed)
        .to_dtype(DType::F32)
        .unwrap()
}

fn random_model(cfg: &ModelConfig, seed: u64) -> (Denoiser, HashMap<String, Tensor>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let specs = Denoiser::param_specs(cfg);
    let weights: HashMap<String, Tensor> = specs
        .iter()
        .map(|s| (s.name.clone(), s.sample(&mut rng, &Device::Cpu).unwrap()))
        .collect();
    let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
    (Denoiser::new(vb, cfg).unwrap(), weights)
}

#[test]
fn clamping_returns_exact_embedding_rows_of_the_nearest_words() {
    let cfg = ModelConfig::tiny(50);
    let (model, _) = random_model(&cfg, 3);
    let x = Tensor::randn(0f32, 1.0, (3, 7, cfg.embed_dim), &Device::Cpu).unwrap();
    let (ids, clamped) = model.clamp(&x).unwrap();
    let ids = ids.to_vec2::<u32>().unwrap();
    let emb = model.embeddings().to_vec2::<f32>().unwrap();
    let xs = x.to_vec3::<f32>().unwrap();
    let cl = clamped.to_vec3::<f32>().unwrap();
    for b in 0..3 {
        for l in 0..7 {
            let id = ids[b][l] as usize;
            assert_eq!(cl[b][l], emb[id], "clamped vector is exactly row {id}");
            // Brute force: no other row is closer.
            let dist = |row: &Vec<f32>| row.iter().zip(&xs[b][l]).map(|(a, b)| (a - b) * (a - b)).sum::<f32>();
            let best = emb.iter().map(dist).fold(f32::INFINITY, f32::min);
            assert!((dist(&emb[id]) - best).abs() < 1e-4);
        }
    }
}

#[test]
fn every_parameter_receives_a_nonzero_gradient() {
    let tok = toy_tokenizer();
    for (x0_head, freeze, clean_context) in [
        (X0Head::Direct, false, false),
        (X0Head::Softmax, false, false),
        (X0Head::Softmax, true, false),
        (X0Head::Softmax, false, true),
        (X0Head::Direct, false, true),
    ] {
        let cfg = ModelConfig {
            dropout: 0.1,
            x0_head,
            clean_context,
            ..toy_config(&tok)
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let specs = Denoiser::param_specs(&cfg);
        let varmap = init_varmap(&specs, &mut rng, &Device::Cpu).unwrap();
        let mut obj =
            DiffusionObjective::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu), &cfg).unwrap();
        if freeze {
            obj.freeze_embeddings();
        }
        let rows: Vec<u32> = TOY
            .iter()
            .flat_map(|t| tok.encode_padded(t, cfg.seq_len).unwrap())
            .collect();
        let batch = Tensor::from_vec(rows, (4, cfg.seq_len), &Device::Cpu).unwrap();
        let (loss, parts) = obj.loss(&batch, &mut rng).unwrap();
        assert_eq!(parts.len(), obj.component_names().len());
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        assert_eq!(data.len(), specs.len());
        for (name, var) in data.iter() {
            let frozen = freeze && (name == "word_embedding.weight" || name == "lm_head.bias");
            match grads.get(var.as_tensor()) {
                None if frozen => {}
                Some(_) if frozen => panic!("{x0_head:?}: frozen {name} has a gradient"),
                None => panic!("{x0_head:?}: no gradient for {name}"),
                Some(g) => {
                    let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
                    assert!(
                        norm > 0.0 && norm.is_finite(),
                        "{x0_head:?}: gradient of {name} is {norm}"
                    );
                }
            }
        }
    }
}

/// 16 samples at seed 11, at least 12 of them a toy sentence verbatim.
fn samples_reproduce_the_toy_corpus(lm: &DiffusionLm) -> Vec<diffusion_lm::Sample> {
    let samples = Generator::new(lm).steps(50).seed(11).generate(16).unwrap();
    let exact = samples.iter().filter(|s| TOY.contains(&s.text.as_str())).count();
    assert!(
        exact >= 12,
        "only {exact}/16 samples reproduce a toy sentence: {:?}",
        samples.iter().map(|s| &s.text).collect::<Vec<_>>()
    );
    samples
}

#[test]
fn a_softmax_head_trained_in_anothers_frozen_embeddings_learns_and_projects_by_its_logits() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let direct = train_toy(d1.path(), 300);
    let tok = toy_tokenizer();
    let cfg = ModelConfig {
        x0_head: X0Head::Softmax,
        ..toy_config(&tok)
    };
    let mut trainer =
        diffusion_trainer(cfg.clone(), tok, &TOY, toy_train_config(300), d2.path(), &Device::Cpu).unwrap();
    trainer.objective.freeze_embeddings();
    let mut start: HashMap<String, Tensor> = trainer
        .raw_weights()
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, t.copy().unwrap()))
        .collect();
    let (e, b) = ("word_embedding.weight", "lm_head.bias");
    start.insert(e.into(), direct.weights()[e].clone());
    start.insert(b.into(), direct.weights()[b].clone());
    trainer.init_from(&start).unwrap();
    trainer.run(false).unwrap();
    let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_ne!(
        values(&trainer.raw_weights().unwrap()["x0_head.weight"]),
        values(&start["x0_head.weight"])
    );

    let lm = DiffusionLm::load(d2.path(), &Device::Cpu).unwrap();
    assert_eq!(lm.config.x0_head, X0Head::Softmax, "config.json records the head");
    for name in [e, b] {
        // Frozen: only the EMA's rounding (an average of equal values in f32) moves them.
        let diff = max_abs_diff(&lm.weights()[name], &direct.weights()[name]);
        assert!(diff < 1e-4, "{name} moved by {diff}");
    }
    assert!(!lm.weights().contains_key("output_down.0.weight"));
    samples_reproduce_the_toy_corpus(&lm);
    // The logits score the projection under a hard constraint as well.
    let held = Generator::new(&lm)
        .steps(50)
        .seed(3)
        .constrain(diffusion_lm_controllers::Regex::new("the (cat|bird) .*").unwrap())
        .generate(8)
        .unwrap();
    for s in &held {
        assert!(
            s.text.starts_with("the cat ") || s.text.starts_with("the bird "),
            "{:?}",
            s.text
        );
    }
    assert!(
        held.iter().filter(|s| TOY.contains(&s.text.as_str())).count() >= 6,
        "{:?}",
        held.iter().map(|s| &s.text).collect::<Vec<_>>()
    );
}

#[test]
fn clean_positions_change_the_prediction_only_through_the_time_given_them() {
    let cfg = ModelConfig::tiny(40);
    let (model, _) = random_model(&cfg, 7);
    let x = random_latent(&cfg, 21);
    let plain = model.forward(&x, &[3, 150], &mut Mode::Infer).unwrap();
    let none = Tensor::zeros((2, cfg.seq_len, 1), DType::F32, &Device::Cpu).unwrap();
    let (unmarked, _) = model
        .forward_with_context(&x, &[3, 150], Some(&none), &mut Mode::Infer)
        .unwrap();
    assert!(max_abs_diff(&plain, &unmarked) < 1e-5, "an empty mask changes nothing");
    // Row 0 is at time 0 already: marking its positions clean gives them the same time.
    let mut mask = vec![0f32; 2 * cfg.seq_len];
    mask[..cfg.seq_len].fill(1.0);
    mask[cfg.seq_len + 2] = 1.0;
    let mask = Tensor::from_vec(mask, (2, cfg.seq_len, 1), &Device::Cpu).unwrap();
    let (marked, _) = model
        .forward_with_context(&x, &[0, 150], Some(&mask), &mut Mode::Infer)
        .unwrap();
    let at_zero = model
        .forward(&x.narrow(0, 0, 1).unwrap(), &[0], &mut Mode::Infer)
        .unwrap();
    assert!(max_abs_diff(&marked.narrow(0, 0, 1).unwrap(), &at_zero) < 1e-5);
    let row1 = model
        .forward(&x.narrow(0, 1, 1).unwrap(), &[150], &mut Mode::Infer)
        .unwrap();
    assert!(
        max_abs_diff(&marked.narrow(0, 1, 1).unwrap(), &row1) > 1e-4,
        "a position marked clean in row 1 changes its prediction"
    );
}

#[test]
fn a_clean_context_model_commits_tokens_progressively_and_keeps_constraints_exact() {
    let dir = tempfile::tempdir().unwrap();
    let tok = toy_tokenizer();
    let cfg = ModelConfig {
        x0_head: X0Head::Softmax,
        clean_context: true,
        ..toy_config(&tok)
    };
    diffusion_lm::train::train_diffusion(cfg, tok, &TOY, toy_train_config(300), dir.path(), &Device::Cpu).unwrap();
    let mut lm = DiffusionLm::load(dir.path(), &Device::Cpu).unwrap();
    assert!(lm.config.clean_context, "config.json records clean context");
    // Commitment is on by default for such a model.
    samples_reproduce_the_toy_corpus(&lm);
    // Every commit comes from a projected sequence holding the earlier ones, so no sample
    // needs a redraw to pass the check.
    for pattern in ["the (cat|bird) .*", "a .* (sat|flew)"] {
        let held = Generator::new(&lm)
            .steps(50)
            .seed(5)
            .constrain(diffusion_lm_controllers::Regex::new(pattern).unwrap())
            .generate(16)
            .unwrap();
        for s in &held {
            assert_eq!(s.redraws, 0, "{pattern}: {:?} needed a redraw", s.text);
        }
    }
    best_of_keeps_the_most_natural_candidate(&lm);
    best_of_prefers_the_corpus_phrases_when_asked(&mut lm);
    lexicon_keeps_constrained_words_to_it(lm);
}

/// With phrases of one toy sentence, not the model's favourite, and `phrases` on, best of 8
/// keeps that sentence wherever a candidate is it; off (the library default), the phrases are
/// ignored.
fn best_of_prefers_the_corpus_phrases_when_asked(lm: &mut DiffusionLm) {
    use diffusion_lm::text::phrases::Phrases;
    let phrases = Phrases::from_texts([TOY[3]]);
    lm.set_phrases(Some(phrases.clone()));
    let draw = |lm: &DiffusionLm, on: bool| {
        let texts: Vec<String> = Generator::new(lm)
            .steps(30)
            .seed(4)
            .best_of(8)
            .phrases(on)
            .generate(12)
            .unwrap()
            .into_iter()
            .map(|s| s.text)
            .collect();
        texts.iter().filter(|t| phrases.covers(t)).count()
    };
    let (on, off) = (draw(lm, true), draw(lm, false));
    // Off, the model's favourite, "the bird sang a song", wins 10 of 12 (seed 4).
    assert!(on >= 9, "{on} of 12 outputs are {:?} with phrases on", TOY[3]);
    assert!(off <= 4, "{off} of 12 are, with phrases off");
    lm.set_phrases(None);
}

/// With a lexicon, a constraint that leaves the words free gets only lexicon words; a
/// constraint that needs a word outside it is still met (the lexicon steps aside); turned off,
/// the model's other words come back.
fn lexicon_keeps_constrained_words_to_it(mut lm: DiffusionLm) {
    use diffusion_lm::text::lexicon::Lexicon;
    let lexicon = Lexicon::from_texts(["the cat sat on the mat"]);
    lm.set_lexicon(Some(lexicon.clone()));
    let draw = |lm: &DiffusionLm, pattern: &str, on: Option<bool>| {
        let cfg = diffusion_lm::GenerationConfig {
            steps: Some(30),
            seed: 3,
            lexicon: on,
            ..Default::default()
        };
        Generator::with_config(lm, cfg)
            .constrain(diffusion_lm_controllers::Regex::new(pattern).unwrap())
            .generate(12)
            .unwrap()
    };
    for s in draw(&lm, "[a-z]+( [a-z]+)+", None) {
        assert!(lexicon.accepts(&s.text), "{:?} has a word outside the lexicon", s.text);
    }
    for s in draw(&lm, "my fish [a-z ]+", None) {
        assert!(s.text.starts_with("my fish "), "{:?}", s.text);
    }
    let off = draw(&lm, "[a-z]+( [a-z]+)+", Some(false));
    assert!(
        off.iter().any(|s| !lexicon.accepts(&s.text)),
        "without the lexicon the toy corpus's other words appear: {:?}",
        off.iter().map(|s| &s.text).collect::<Vec<_>>()
    );
}

/// Best-of on a trained clean-context model: the model reads its corpus as more natural than
/// the same words scrambled; each best-of-3 output passes the check and is at least as natural
/// as the first draw (candidate 0), and the choice does not depend on the batch size.
fn best_of_keeps_the_most_natural_candidate(lm: &DiffusionLm) {
    let len = lm.config.seq_len;
    let rows = |texts: &[&str]| -> Vec<Vec<u32>> {
        texts
            .iter()
            .map(|t| lm.tokenizer.encode_padded(t, len).unwrap())
            .collect()
    };
    let judge = Generator::new(lm).seed(9);
    let real = judge.naturalness(&rows(&TOY)).unwrap();
    let scrambled = judge
        .naturalness(&rows(&[
            "mat the on sat cat the",
            "park the ran in dog a",
            "song bird a sang the",
            "day swims fish all my",
        ]))
        .unwrap();
    assert!(
        real.iter().sum::<f64>() > scrambled.iter().sum::<f64>() + 1.0,
        "corpus {real:?} against scrambled {scrambled:?}"
    );
    let regex = || diffusion_lm_controllers::Regex::new("(the|a) .*").unwrap();
    let draw = |k: usize, batch: usize| {
        Generator::new(lm)
            .steps(20)
            .seed(4)
            .batch_size(batch)
            .best_of(k)
            .constrain(regex())
            .generate(8)
            .unwrap()
    };
    let (first, best) = (draw(1, 8), draw(3, 8));
    let ids = |s: &[diffusion_lm::Sample]| s.iter().map(|s| s.ids.clone()).collect::<Vec<_>>();
    let judge = Generator::new(lm).seed(4).constrain(regex());
    let (n_first, n_best) = (
        judge.naturalness(&ids(&first)).unwrap(),
        judge.naturalness(&ids(&best)).unwrap(),
    );
    use diffusion_lm::scoring::quality::repeats_within_sentence as repeats;
    for (i, s) in best.iter().enumerate() {
        assert!(s.text.starts_with("the ") || s.text.starts_with("a "), "{:?}", s.text);
        // Less natural only where it avoids a repeated word the first draw has.
        let avoided = repeats(&first[i].text) && !repeats(&s.text);
        assert!(
            n_best[i] >= n_first[i] || avoided,
            "sample {i}: {} < {}",
            n_best[i],
            n_first[i]
        );
    }
    assert_eq!(ids(&best), ids(&draw(3, 3)), "best of 3 depends on the batch size");
    best_of_avoids_repeated_words(lm);
}

/// Best-of passes over a candidate that holds a word twice in a sentence where another
/// candidate passes the checks ([`GenerationConfig::avoid_repeats`]); turned off, such texts
/// come back.
fn best_of_avoids_repeated_words(lm: &DiffusionLm) {
    use diffusion_lm::scoring::quality::repeats_within_sentence as repeats;
    let draw = |avoid: bool| {
        let cfg = diffusion_lm::GenerationConfig {
            steps: Some(20),
            seed: 6,
            best_of: Some(6),
            avoid_repeats: avoid,
            ..Default::default()
        };
        Generator::with_config(lm, cfg)
            .constrain(diffusion_lm_controllers::Regex::new("the (bird|fish) and the (bird|fish)").unwrap())
            .generate(12)
            .unwrap()
    };
    let (off, on) = (draw(false), draw(true));
    let count = |s: &[diffusion_lm::Sample]| s.iter().filter(|s| repeats(&s.text)).count();
    let texts = |s: &[diffusion_lm::Sample]| s.iter().map(|s| s.text.clone()).collect::<Vec<_>>();
    assert!(
        count(&on) < count(&off),
        "no repeat avoided: {:?} against {:?}",
        texts(&on),
        texts(&off)
    );
    // Where the most natural candidate repeats nothing, it is kept either way.
    for (a, b) in off.iter().zip(&on) {
        assert!(repeats(&a.text) || a == b, "{:?} became {:?}", a.text, b.text);
    }
}

#[test]
fn fused_inference_kernels_match_the_differentiable_training_forms() {
    let cfg = ModelConfig::tiny(40);
    let (model, _) = random_model(&cfg, 5);
    let x = random_latent(&cfg, 22);
    let a = model.forward(&x, &[3, 150], &mut Mode::Infer).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let b = model.forward(&x, &[3, 150], &mut Mode::Train(&mut rng)).unwrap(); // dropout is 0 in tiny
    let diff = max_abs_diff(&a, &b);
    assert!(diff < 1e-4, "max difference {diff}");
}

#[test]
fn half_precision_compute_keeps_f32_inputs_outputs_and_stays_close() {
    let cfg = ModelConfig::tiny(40);
    let (_, weights) = random_model(&cfg, 9);
    let x = random_latent(&cfg, 23);
    let full = {
        let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
        Denoiser::new(vb, &cfg)
            .unwrap()
            .forward(&x, &[3, 150], &mut Mode::Infer)
            .unwrap()
    };
    for dtype in [DType::BF16, DType::F16] {
        let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
        let model = Denoiser::with_compute_dtype(vb, &cfg, dtype).unwrap();
        assert_eq!(model.compute_dtype(), dtype);
        assert_eq!(model.embeddings().dtype(), DType::F32, "clamping stays in f32");
        let half = model.forward(&x, &[3, 150], &mut Mode::Infer).unwrap();
        assert_eq!(half.dtype(), DType::F32);
        let diff = max_abs_diff(&full, &half);
        let scale = full.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        // bf16 keeps 8 mantissa bits: a few percent of the largest value at most.
        assert!(
            diff > 0.0 && diff < 0.05 * scale,
            "{dtype:?}: max difference {diff} (scale {scale})"
        );
    }
}

#[test]
fn set_compute_dtype_rejects_integer_types() {
    let mut lm = DiffusionLm::load(DiffusionLm::default_dir(), &Device::Cpu).unwrap();
    let err = lm.set_compute_dtype(DType::U32).unwrap_err().to_string();
    assert!(err.contains("f32, bf16 or f16"), "{err}");
    assert!(diffusion_lm::nn::device::parse_dtype("int8").is_err());
}

#[test]
fn batched_noise_does_not_depend_on_batch_size_or_threads() {
    use rand::rngs::StdRng;
    // 40 rows × 64 × 32 values: large enough for the parallel path.
    let rngs = |n: usize| (0..n).map(|i| StdRng::seed_from_u64(i as u64)).collect::<Vec<_>>();
    let big = diffusion_lm::nn::standard_normal(&mut rngs(40), (40, 64, 32), &Device::Cpu).unwrap();
    let big = big.to_vec3::<f32>().unwrap();
    for row in [0usize, 17, 39] {
        let mut one = vec![StdRng::seed_from_u64(row as u64)];
        let single = diffusion_lm::nn::standard_normal(&mut one, (1, 64, 32), &Device::Cpu).unwrap();
        assert_eq!(single.to_vec3::<f32>().unwrap()[0], big[row], "row {row}");
    }
}

#[test]
fn a_tiny_model_learns_the_toy_corpus_and_save_load_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let lm = train_toy(dir.path(), 500);
    let samples = samples_reproduce_the_toy_corpus(&lm);
    let distinct: std::collections::HashSet<&str> = samples.iter().map(|s| s.text.as_str()).collect();
    assert!(distinct.len() >= 3, "samples collapsed to {distinct:?}");

    // The checkpoint written by training loads back and gives bit-identical samples.
    let loaded = DiffusionLm::load(dir.path(), &Device::Cpu).unwrap();
    for (name, t) in lm.weights() {
        let u = &loaded.weights()[name];
        assert_eq!(
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            u.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
    let again = Generator::new(&loaded).steps(50).seed(11).generate(16).unwrap();
    assert_eq!(samples, again);
    // Same seed, different batch size: same samples. DDIM works too.
    let batched = Generator::new(&loaded)
        .steps(50)
        .seed(11)
        .batch_size(5)
        .generate(16)
        .unwrap();
    assert_eq!(
        samples.iter().map(|s| &s.text).collect::<Vec<_>>(),
        batched.iter().map(|s| &s.text).collect::<Vec<_>>()
    );
    let ddim = Generator::new(&loaded)
        .steps(50)
        .seed(2)
        .sampler(SamplerKind::Ddim { eta: 0.0 })
        .generate(8)
        .unwrap();
    assert!(ddim.iter().filter(|s| TOY.contains(&s.text.as_str())).count() >= 6);
    let renoise = Generator::new(&loaded)
        .steps(50)
        .seed(2)
        .sampler(SamplerKind::Renoise)
        .generate(8)
        .unwrap();
    assert!(renoise.iter().filter(|s| TOY.contains(&s.text.as_str())).count() >= 6);
}

#[test]
fn samples_handed_out_batch_by_batch_equal_the_collected_ones() {
    let dir = tempfile::tempdir().unwrap();
    let lm = train_toy(dir.path(), 5);
    for (mbr, best_of) in [(1, 1), (2, 1), (1, 2)] {
        let g = Generator::new(&lm)
            .steps(4)
            .seed(3)
            .batch_size(3)
            .mbr(mbr)
            .best_of(best_of);
        let all = g.generate(5).unwrap();
        let mut batches = Vec::new();
        g.generate_each(5, |batch| {
            batches.push(batch);
            Ok::<(), diffusion_lm::Error>(())
        })
        .unwrap();
        let streamed: Vec<Vec<u32>> = batches.iter().flatten().map(|s| s.ids.clone()).collect();
        assert_eq!(
            streamed,
            all.iter().map(|s| s.ids.clone()).collect::<Vec<_>>(),
            "mbr {mbr}, best of {best_of}"
        );
        assert!(batches.len() > 1, "mbr {mbr}, best of {best_of}: one batch only");
    }
    // An error from the consumer stops the run and comes back.
    let mut calls = 0;
    let r = Generator::new(&lm).steps(2).batch_size(1).generate_each(4, |_| {
        calls += 1;
        Err::<(), _>(diffusion_lm::Error::Config("stop".into()))
    });
    assert!(r.is_err() && calls == 1);
}

#[test]
fn training_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let tok = toy_tokenizer();
    let cfg = toy_config(&tok);
    let train = |steps| diffusion_lm::train::TrainConfig {
        log_every: 5,
        ..toy_train_config(steps)
    };
    let mut first = diffusion_trainer(cfg.clone(), tok.clone(), &TOY, train(20), dir.path(), &Device::Cpu).unwrap();
    first.run(false).unwrap();
    assert!(dir.path().join("loss.png").exists());
    assert!(dir.path().join("train_state.json").exists());
    let raw = first.raw_weights().unwrap();
    let ema = first.ema_weights().clone();
    // While the first trainer holds the directory, no other run may write it.
    let msg = diffusion_trainer(cfg.clone(), tok.clone(), &TOY, train(30), dir.path(), &Device::Cpu)
        .err()
        .expect("the directory is locked")
        .to_string();
    assert!(msg.contains("another training run is writing this directory"), "{msg}");
    drop(first);
    // One state tensors file, named by the state; no temporary files left.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let state = diffusion_lm::train::checkpoint::read_json::<diffusion_lm::train::TrainState>(
        &dir.path().join("train_state.json"),
    )
    .unwrap();
    let tensors_file = state.tensors_file.unwrap();
    assert_eq!(tensors_file, "train_state.00000020.safetensors");
    let state_files: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("train_state.") && n.ends_with(".safetensors"))
        .collect();
    assert_eq!(state_files, vec![&tensors_file], "{names:?}");
    assert!(!names.iter().any(|n| n.contains(".tmp.")), "{names:?}");
    // A new trainer on the same directory with a larger budget continues at step 20 with the same weights.
    let mut second = diffusion_trainer(cfg, tok, &TOY, train(30), dir.path(), &Device::Cpu).unwrap();
    assert_eq!(second.step_count(), 20);
    let resumed = second.raw_weights().unwrap();
    for (name, t) in &raw {
        let a = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = resumed[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b, "{name} differs after resume");
        let a = ema[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = second.ema_weights()[name]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(a, b, "the EMA of {name} differs after resume");
    }
    let summary = second.run(false).unwrap();
    assert_eq!(summary.steps, 10);
    assert_eq!(second.state().history.last().unwrap().step, 30);
}

#[test]
fn a_fresh_run_never_writes_over_files_and_clearing_removes_only_a_runs_files() {
    let dir = tempfile::tempdir().unwrap();
    let tok = toy_tokenizer();
    let cfg = toy_config(&tok);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("config.json"), "{}").unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    // An interrupted write's leftover does not count as content.
    std::fs::write(out.join(".123.tmp.model.safetensors"), "half").unwrap();
    let msg = diffusion_trainer(cfg.clone(), tok.clone(), &TOY, toy_train_config(2), &out, &Device::Cpu)
        .err()
        .expect("refused")
        .to_string();
    assert!(msg.contains("holds config.json but no training state"), "{msg}");
    assert_eq!(std::fs::read_to_string(out.join("config.json")).unwrap(), "{}");
    assert!(!out.join(".123.tmp.model.safetensors").exists());
    let removed = diffusion_lm::train::clear_output_dir(&out).unwrap();
    assert_eq!(removed, vec![out.join("config.json")]);
    // A file no run writes stays and does not stop a run.
    let mut t = diffusion_trainer(cfg, tok, &TOY, toy_train_config(2), &out, &Device::Cpu).unwrap();
    t.run(false).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
    // Clearing while a run holds the directory is refused.
    let msg = diffusion_lm::train::clear_output_dir(&out).unwrap_err().to_string();
    assert!(msg.contains("another training run is writing this directory"), "{msg}");
}

#[test]
fn a_run_can_start_from_trained_weights_but_not_after_a_step() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let tok = toy_tokenizer();
    let cfg = toy_config(&tok);
    let mut first = diffusion_trainer(
        cfg.clone(),
        tok.clone(),
        &TOY,
        toy_train_config(10),
        d1.path(),
        &Device::Cpu,
    )
    .unwrap();
    first.run(false).unwrap();
    let trained = first.raw_weights().unwrap();
    let mut second = diffusion_trainer(cfg, tok, &TOY, toy_train_config(5), d2.path(), &Device::Cpu).unwrap();
    let w = "word_embedding.weight";
    let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_ne!(
        values(&second.raw_weights().unwrap()[w]),
        values(&trained[w]),
        "another seed's start"
    );
    // A wrong shape or a missing parameter is refused with its name.
    let mut bad = trained.clone();
    bad.insert(
        w.to_string(),
        Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    assert!(second.init_from(&bad).unwrap_err().to_string().contains(w));
    bad.remove(w);
    assert!(second.init_from(&bad).unwrap_err().to_string().contains(w));
    second.init_from(&trained).unwrap();
    for (name, t) in &trained {
        assert_eq!(values(&second.raw_weights().unwrap()[name]), values(t), "{name}");
        assert_eq!(
            values(&second.ema_weights()[name]),
            values(t),
            "the EMA of {name} starts there too"
        );
    }
    second.train_step().unwrap();
    assert!(second
        .init_from(&trained)
        .unwrap_err()
        .to_string()
        .contains("already took 1 steps"));
}

#[test]
fn same_seed_same_training() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = train_toy(d1.path(), 15);
    let b = train_toy(d2.path(), 15);
    let w = "word_embedding.weight";
    assert_eq!(
        a.weights()[w].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        b.weights()[w].flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
}

#[test]
fn optimizer_state_and_ema_hold_no_graph_between_steps() {
    // A tensor that records its op keeps the whole step's graph alive; chained across steps that
    // was an unbounded memory leak (a long run grew to 24 GB).
    let dir = tempfile::tempdir().unwrap();
    let tok = toy_tokenizer();
    let cfg = toy_config(&tok);
    let mut trainer = diffusion_trainer(cfg, tok, &TOY, toy_train_config(3), dir.path(), &Device::Cpu).unwrap();
    for _ in 0..3 {
        trainer.train_step().unwrap();
    }
    for (name, t) in trainer.ema_weights() {
        assert!(!t.track_op(), "EMA tensor {name} records its op");
    }
    assert!(!trainer.optimizer_state_records_ops(), "AdamW moments record their ops");
}
