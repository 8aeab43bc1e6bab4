//! The guidance update moves samples toward what a controller's gradient prefers.

mod common;

use candle_core::Tensor;
use common::*;
use diffusion_lm::steer::{Guide, GuideContext, GuideInput};
use diffusion_lm::{Generator, GuidanceConfig, GuidanceRule};

/// log p(c | x) = −Σ‖x_p − E_target‖²: prefers the target token everywhere.
struct Toward {
    target: u32,
}

impl Guide for Toward {
    fn name(&self) -> String {
        format!("toward token {}", self.target)
    }
    fn reads(&self) -> GuideInput {
        GuideInput::Latent
    }
    fn log_prob(&self, x: &Tensor, ctx: &GuideContext) -> diffusion_lm::Result<Tensor> {
        let e = ctx.embeddings.get(self.target as usize)?;
        Ok(x.broadcast_sub(&e)?.sqr()?.sum((1, 2))?.neg()?)
    }
}

#[test]
fn guidance_pulls_samples_toward_the_preferred_token_with_every_rule() {
    let dir = tempfile::tempdir().unwrap();
    let lm = train_toy(dir.path(), 100);
    let target = lm.tokenizer.encode(" cat").unwrap()[0];
    let count =
        |samples: &[diffusion_lm::Sample]| samples.iter().flat_map(|s| &s.ids).filter(|&&t| t == target).count();
    let plain = Generator::new(&lm).steps(20).seed(5).generate(4).unwrap();
    let positions = 4 * lm.config.seq_len;
    for rule in [
        GuidanceRule::SignNormalized,
        GuidanceRule::Normalized,
        GuidanceRule::Adam { lr: 1.0 },
        GuidanceRule::Adagrad { lr: 1.0 },
    ] {
        // Guidance also after the last denoising step (skip_last 0), with a strong step, so the
        // final latent sits next to the preferred embedding.
        let cfg = GuidanceConfig {
            rule,
            step_size: 1.0,
            steps: 5,
            skip_last: 0,
            ..GuidanceConfig::default()
        };
        // Without the doubled-word drop, which would cut "cat cat cat ..." to one "cat".
        let guided = Generator::new(&lm)
            .guide(Toward { target })
            .guidance(cfg)
            .drop_doubled_words(false)
            .steps(20)
            .seed(5)
            .generate(4)
            .unwrap();
        assert!(
            count(&guided) * 10 >= positions * 9 && count(&plain) * 2 < positions,
            "{rule:?}: {} of {positions} positions are the target with guidance, {} without",
            count(&guided),
            count(&plain)
        );
    }
}

/// Best-of weighs the guides too: per sample, the kept candidate's naturalness plus the guide's
/// `w · log p(c | text)` (read on the text's clean embeddings at time 0) is at least the first
/// draw's, which is the best-of-1 output.
#[test]
fn best_of_weighs_the_guides_term_with_the_naturalness() {
    let dir = tempfile::tempdir().unwrap();
    let lm = train_toy(dir.path(), 100);
    let target = lm.tokenizer.encode(" cat").unwrap()[0];
    let draw = |k: usize| {
        Generator::new(&lm)
            .guide(Toward { target })
            .steps(10)
            .seed(5)
            .best_of(k)
            .generate(4)
            .unwrap()
    };
    let judged = |samples: &[diffusion_lm::Sample]| -> Vec<f64> {
        let rows: Vec<Vec<u32>> = samples.iter().map(|s| s.ids.clone()).collect();
        let natural = Generator::new(&lm).seed(5).naturalness(&rows).unwrap();
        let ids = Tensor::from_vec(
            rows.concat(),
            (rows.len(), lm.config.seq_len),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let ctx = GuideContext {
            step: 0,
            num_steps: 10,
            t: 0,
            latent_t: 0,
            embeddings: lm.model.embeddings(),
            masked_fraction: 0.0,
        };
        let guide = Toward { target }
            .log_prob(&lm.model.embed(&ids).unwrap(), &ctx)
            .unwrap();
        let guide = guide
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        natural.iter().zip(guide).map(|(n, g)| n + g).collect()
    };
    let (first, best) = (judged(&draw(1)), judged(&draw(3)));
    for (i, (f, b)) in first.iter().zip(&best).enumerate() {
        assert!(b >= f, "sample {i}: kept {b}, first draw {f}");
    }
}

mod attribute {
    use std::sync::Arc;

    use candle_core::{DType, Device, Tensor};
    use diffusion_lm::generate::guidance_gradient;
    use diffusion_lm::nn::init_varmap;
    use diffusion_lm::nn::Mode;
    use diffusion_lm::scoring::classifier::{classifier_trainer, ClassifierConfig, LatentClassifier};
    use diffusion_lm::steer::{Guide, GuideContext, GuideInput};
    use diffusion_lm::text::corpus::{Example, Labels};
    use diffusion_lm::train::TrainConfig;
    use diffusion_lm::Generator;
    use diffusion_lm::{Denoiser, ModelConfig};
    use diffusion_lm_controllers::Attribute;
    use rand::SeedableRng;

    use super::common::*;

    /// A var builder handing out `specs`' random initial weights as f64.
    fn f64_weights(specs: &[diffusion_lm::nn::ParamSpec], seed: u64) -> candle_nn::VarBuilder<'static> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let vars = init_varmap(specs, &mut rng, &Device::Cpu).unwrap();
        let weights = vars
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        candle_nn::VarBuilder::from_tensors(weights, DType::F64, &Device::Cpu)
    }

    /// Asserts that `grad` (a guidance gradient at `x`) matches central differences of
    /// `Σ_b log_prob(x)_b` to a relative 1e-4 (every fifth coordinate), and is not all zero.
    fn assert_matches_finite_differences(what: &str, grad: Tensor, x: &Tensor, log_prob: &dyn Fn(&Tensor) -> Tensor) {
        let grad = grad.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let f = |x: &Tensor| log_prob(x).sum_all().unwrap().to_scalar::<f64>().unwrap();
        let flat = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let eps = 1e-5;
        let mut worst = 0f64;
        for i in (0..flat.len()).step_by(5) {
            let shifted = |d: f64| {
                let mut v = flat.clone();
                v[i] += d;
                Tensor::from_vec(v, x.dims(), &Device::Cpu).unwrap()
            };
            let numeric = (f(&shifted(eps)) - f(&shifted(-eps))) / (2.0 * eps);
            worst = worst.max((numeric - grad[i]).abs() / (1e-6 + numeric.abs().max(grad[i].abs())));
        }
        assert!(worst < 1e-4, "{what}: worst relative difference {worst}");
        assert!(
            grad.iter().any(|g| g.abs() > 1e-6),
            "{what}: the gradient is identically zero"
        );
    }

    /// A guide context at model time `t` whose guided latent is at `latent_t`.
    fn ctx(denoiser: &Denoiser, t: usize, latent_t: usize) -> GuideContext<'_> {
        GuideContext {
            step: 1,
            num_steps: 10,
            t,
            latent_t,
            embeddings: denoiser.embeddings(),
            masked_fraction: 0.0,
        }
    }

    #[test]
    fn prediction_guidance_gradient_matches_finite_differences() {
        // The gradient through the denoiser's prediction, in f64 (candle's fused layer-norm
        // kernel has no f64 form: the value comes from the elementary form, and the backward
        // pass is the hand-written one of `nn::layer_norm`, which this checks too).
        let mcfg = ModelConfig {
            seq_len: 6,
            embed_dim: 4,
            ..ModelConfig::tiny(12)
        };
        let denoiser = Denoiser::new(f64_weights(&Denoiser::param_specs(&mcfg), 5), &mcfg).unwrap();
        for reads in [GuideInput::Prediction, GuideInput::Latent] {
            let cfg = ClassifierConfig {
                reads,
                ..animal_config(4, 6, mcfg.diffusion_steps)
            };
            let clf =
                Arc::new(LatentClassifier::new(f64_weights(&LatentClassifier::param_specs(&cfg), 3), &cfg).unwrap());
            let (f, v) = clf.config().target("animal", "fish").unwrap();
            let guide = Attribute::new(&clf, "animal", "fish", 1.0)
                .unwrap()
                .reading(GuideInput::Prediction)
                .unwrap();
            let guides: Vec<Box<dyn Guide>> = vec![Box::new(guide)];
            // Seeded: the blocks' ReLUs have kinks, and a point within `eps` of one (about
            // one draw in a hundred) breaks central differences.
            let x = seeded_normal_f64(&[2, 6, 4], 11);
            let t = 120;
            let grad = guidance_gradient(&guides, &denoiser, &x, &ctx(&denoiser, t + 1, t))
                .unwrap()
                .unwrap();
            // A classifier of predictions is asked at the latent's t; one of latents at t = 0.
            let score_t = if reads == GuideInput::Prediction { t } else { 0 };
            let log_prob = |x: &Tensor| {
                let x0 = denoiser.forward(x, &[t, t], &mut Mode::Grad).unwrap();
                clf.log_prob(&x0, &[score_t, score_t], f, v).unwrap()
            };
            assert_matches_finite_differences(&format!("{reads:?}"), grad, &x, &log_prob);
        }
    }

    #[test]
    fn guidance_gradient_matches_finite_differences() {
        // In f64, so central differences are accurate to ~1e-8.
        let mcfg = ModelConfig {
            seq_len: 6,
            embed_dim: 4,
            ..ModelConfig::tiny(12)
        };
        let denoiser = Denoiser::new(f64_weights(&Denoiser::param_specs(&mcfg), 5), &mcfg).unwrap();
        let cfg = animal_config(4, 6, 200);
        let clf = Arc::new(LatentClassifier::new(f64_weights(&LatentClassifier::param_specs(&cfg), 3), &cfg).unwrap());
        let (f, v) = clf.config().target("animal", "fish").unwrap();
        let guides: Vec<Box<dyn Guide>> = vec![Box::new(Attribute::new(&clf, "animal", "fish", 1.0).unwrap())];
        let x = seeded_normal_f64(&[2, 6, 4], 13);
        let t = 50;
        // On the latent, the classifier is asked at the step's t.
        let grad = guidance_gradient(&guides, &denoiser, &x, &ctx(&denoiser, t, t - 1))
            .unwrap()
            .unwrap();
        assert_matches_finite_differences("latent", grad, &x, &|x| clf.log_prob(x, &[t, t], f, v).unwrap());
    }

    #[test]
    fn a_toy_classifier_moves_samples_to_the_target_attribute() {
        let dir = tempfile::tempdir().unwrap();
        let lm = train_toy(dir.path(), 300);
        let animals = ["cat", "dog", "bird", "fish"];
        let examples: Vec<Example> = TOY
            .iter()
            .zip(animals)
            .map(|(text, animal)| Example {
                text: text.to_string(),
                labels: Some(Labels {
                    fields: vec![("animal".into(), animal.into())],
                }),
            })
            .collect();
        let n = 24;
        let count = |texts: &[diffusion_lm::Sample]| texts.iter().filter(|s| s.text.contains("fish")).count();
        let plain = Generator::new(&lm).steps(40).seed(11).generate(n).unwrap();
        let mut classifiers = Vec::new();
        for reads in [GuideInput::Latent, GuideInput::Prediction] {
            let cfg = ClassifierConfig {
                reads,
                ..animal_config(lm.config.embed_dim, lm.config.seq_len, lm.config.diffusion_steps)
            };
            let train = TrainConfig {
                steps: 300,
                ..toy_train_config(300)
            };
            let out = dir.path().join(format!("classifier-{reads:?}"));
            let mut trainer = classifier_trainer(
                cfg,
                &lm.model,
                lm.tokenizer.clone(),
                &examples,
                train,
                &out,
                &Device::Cpu,
            )
            .unwrap();
            trainer.run(false).unwrap();
            let clf = Arc::new(LatentClassifier::load(&out, &Device::Cpu).unwrap());
            assert_eq!(clf.config().reads, reads);
            let guided = Generator::new(&lm)
                .guide(Attribute::new(&clf, "animal", "fish", 1.0).unwrap())
                .steps(40)
                .seed(11)
                .generate(n)
                .unwrap();
            let (g, p) = (count(&guided), count(&plain));
            assert!(
                g >= 2 * p.max(3) && g * 3 >= n * 2,
                "{reads:?}: fish in {g}/{n} guided samples, {p}/{n} unguided"
            );
            classifiers.push(clf);
        }
        // Guides on the prediction share one denoiser pass; the gradient of the weighted sum
        // equals the weighted sum of each guide's own gradient.
        let attr = |value: &str, w: f64| -> Box<dyn Guide> {
            Box::new(Attribute::new(&classifiers[1], "animal", value, w).unwrap())
        };
        let stack = vec![attr("fish", 1.0), attr("cat", 0.5)];
        let x = Tensor::randn(0f32, 1.0, (3, lm.config.seq_len, lm.config.embed_dim), &Device::Cpu).unwrap();
        let gctx = GuideContext {
            step: 10,
            num_steps: 40,
            t: 300,
            latent_t: 250,
            embeddings: lm.model.embeddings(),
            masked_fraction: 0.0,
        };
        let shared = guidance_gradient(&stack, &lm.model, &x, &gctx).unwrap().unwrap();
        let mut separate = Tensor::zeros_like(&x).unwrap();
        for g in [attr("fish", 1.0), attr("cat", 0.5)] {
            assert_eq!(g.reads(), GuideInput::Prediction);
            let own = guidance_gradient(&[g], &lm.model, &x, &gctx).unwrap().unwrap();
            separate = (separate + own).unwrap();
        }
        let scale = separate.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let diff = max_abs_diff(&shared, &separate);
        assert!(
            scale > 0.0 && diff <= 1e-5 * scale,
            "shared pass differs by {diff} (scale {scale})"
        );
        // Targets joined in one attribute share the classifier's pass too, with the same gradient.
        let joined = Attribute::new(&classifiers[1], "animal", "fish", 1.0)
            .unwrap()
            .and(Attribute::new(&classifiers[1], "animal", "cat", 0.5).unwrap())
            .unwrap();
        assert_eq!(joined.name(), "attribute animal=fish, animal=cat");
        let one: Vec<Box<dyn Guide>> = vec![Box::new(joined)];
        let together = guidance_gradient(&one, &lm.model, &x, &gctx).unwrap().unwrap();
        let diff = max_abs_diff(&together, &separate);
        assert!(diff <= 1e-5 * scale, "joined targets differ by {diff} (scale {scale})");
        // Targets of different classifiers cannot be joined.
        let err = Attribute::new(&classifiers[1], "animal", "fish", 1.0)
            .unwrap()
            .and(Attribute::new(&classifiers[0], "animal", "cat", 1.0).unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("must share the classifier"), "{err}");
        // A classifier of predictions cannot guide on the noisy latent: a clear error.
        let err = Attribute::new(&classifiers[1], "animal", "fish", 1.0)
            .unwrap()
            .reading(GuideInput::Latent)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cannot guide on the noisy latent"), "{err}");
        let clf = &classifiers[0];
        // Unknown targets are clear errors.
        let err = Attribute::new(clf, "animal", "horse", 1.0).err().unwrap().to_string();
        assert!(err.contains("bird, cat, dog, fish"), "{err}");
        assert!(Attribute::parse(clf, "colour=red").is_err());
        assert!(Attribute::parse(clf, "animal").is_err());
        assert!(Attribute::new(clf, "animal", "fish", -1.0).is_err());
    }
}
