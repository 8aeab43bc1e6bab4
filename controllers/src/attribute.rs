//! Classifier-gradient guidance: soft control of *what* the text says.
//!
//! At every denoising step the generator adds `w · ∇_x log p(c | x_t)` to its update (see
//! `diffusion_lm::controller`), pulling the latent toward regions a classifier on noisy latents
//! assigns to the attribute `c`. Two controllers:
//!
//! - [`Attribute`]: `field = value` under the attribute classifiers that ship with a model
//!   (`models/e2e/classifier`, trained by `diffusion-lm train-classifier`), e.g. `food = Italian`.
//! - [`ClassifierGuidance`]: any differentiable score of the latent. Implement
//!   [`LatentScore`] for your own classifier (its `log_prob` must be built from differentiable
//!   candle ops) and wrap it.
//!
//! What the classifier reads is a choice ([`GuidanceInput`]): the noisy latent (Diffusion-LM's
//! recipe) or the denoiser's clean prediction `x̂0(x)`, with the gradient taken through the
//! denoiser (`∇_x log p(c | x̂0(x))`). A classifier trained on predictions guides on
//! predictions by default; a classifier of latents can be pointed at predictions with
//! [`Attribute::reading`], where it reads them as clean text. Several attributes guided on the
//! prediction share one differentiable denoiser pass per update
//! (`diffusion_lm::controller::guidance_gradient`).
//!
//! Guidance is soft: it makes the attribute likely, not certain. It composes with hard
//! constraints in one stack: the projection keeps every output valid while the gradient moves the
//! content (e.g. `food = Italian` inside the restaurant JSON Schema).
//!
//! ```
//! use std::sync::Arc;
//! use diffusion_lm::classifier::LatentClassifier;
//! use diffusion_lm::{DiffusionLm, Generator};
//! use diffusion_lm_controllers::{Attribute, Length};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let lm = DiffusionLm::load(DiffusionLm::default_dir(), &candle_core::Device::Cpu)?;
//! let classifier = Arc::new(LatentClassifier::load(
//!     DiffusionLm::default_dir().join("classifier"),
//!     lm.device(),
//! )?);
//! let italian = Attribute::new(&classifier, "food", "Italian", 1.0)?;
//! let samples = Generator::new(&lm)
//!     .with(italian)
//!     .with(Length::between(8, 30)?)
//!     .steps(10)
//!     .generate(1)?;
//! assert_eq!(samples.len(), 1);
//! # Ok(()) }
//! ```

//!
//! Your own classifier: implement [`LatentScore`] (a `log p(c | x_t)` per batch row, built from
//! differentiable candle ops) and wrap it in [`ClassifierGuidance`]; the gradient is taken by
//! autograd. Here, a score that prefers latents close to one word's embedding:
//!
//! ```
//! use candle_core::Tensor;
//! use diffusion_lm::classifier::LatentScore;
//! use diffusion_lm::{DiffusionLm, Generator};
//! use diffusion_lm_controllers::ClassifierGuidance;
//!
//! struct NearWord {
//!     embedding: Tensor, // [d]
//! }
//!
//! impl LatentScore for NearWord {
//!     fn describe(&self) -> String {
//!         "near a word".into()
//!     }
//!     fn log_prob(&self, x: &Tensor, _t: usize) -> diffusion_lm::Result<Tensor> {
//!         // −Σ_p ‖x_p − e‖² per row: an unnormalised Gaussian log-likelihood.
//!         Ok(x.broadcast_sub(&self.embedding)?.sqr()?.sum((1, 2))?.neg()?)
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let lm = DiffusionLm::load(DiffusionLm::default_dir(), &candle_core::Device::Cpu)?;
//! let word = lm.tokenizer.encode(" pub")?[0];
//! let score = NearWord { embedding: lm.model.embeddings().get(word as usize)? };
//! let samples = Generator::new(&lm).with(ClassifierGuidance::new(score, 1.0)).steps(10).generate(1)?;
//! assert_eq!(samples.len(), 1);
//! # Ok(()) }
//! ```

use std::sync::Arc;

use candle_core::Tensor;
use diffusion_lm::classifier::{prediction_gradient, score_gradient, FieldScore, LatentClassifier};
pub use diffusion_lm::classifier::{GuidanceInput, LatentScore};
use diffusion_lm::controller::{Controller, GuidanceContext, HardConstraint, PrepareContext};
use diffusion_lm::TextTokenizer;

use crate::ControllerError;

/// Guidance by any [`LatentScore`]: the gradient of its `log p(c | x_t)`, weighted by `weight`.
pub struct ClassifierGuidance<S: LatentScore> {
    score: S,
    weight: f64,
    input: GuidanceInput,
}

impl<S: LatentScore> ClassifierGuidance<S> {
    /// Guidance on what the score reads ([`LatentScore::reads`]): the noisy latent (the paper's
    /// recipe) unless it was trained on the denoiser's predictions.
    pub fn new(score: S, weight: f64) -> Self {
        let input = score.reads();
        ClassifierGuidance { score, weight, input }
    }

    /// Guide on the latent, or on the denoiser's clean prediction of it. A score that reads
    /// latents can do either (on a prediction it is asked at `t = 0`, as on clean text); a score
    /// trained on predictions can only guide on predictions, and asking it for the latent is an
    /// error when the generator prepares its stack, before sampling starts.
    pub fn reading(mut self, input: GuidanceInput) -> Self {
        self.input = input;
        self
    }

    pub fn input(&self) -> GuidanceInput {
        self.input
    }

    pub fn score(&self) -> &S {
        &self.score
    }
}

impl<S: LatentScore> ClassifierGuidance<S> {
    fn check_input(&self) -> diffusion_lm::Result<()> {
        if self.input == GuidanceInput::Latent && self.score.reads() == GuidanceInput::Prediction {
            return Err(diffusion_lm::Error::Sampling(format!(
                "{} reads the denoiser's predictions and cannot guide on the noisy latent",
                self.score.describe()
            )));
        }
        Ok(())
    }
}

impl<S: LatentScore> Controller for ClassifierGuidance<S> {
    fn name(&self) -> String {
        format!("guidance {} (weight {})", self.score.describe(), self.weight)
    }

    /// No constraints; checks, before sampling starts, that the score can read what it is asked
    /// to guide on.
    fn hard_constraints(&self, _ctx: &PrepareContext) -> diffusion_lm::Result<Vec<HardConstraint>> {
        self.check_input()?;
        Ok(Vec::new())
    }

    fn guidance(&self, x: &Tensor, ctx: &GuidanceContext) -> diffusion_lm::Result<Option<Tensor>> {
        self.check_input()?;
        match self.input {
            GuidanceInput::Latent => score_gradient(&self.score, x, ctx.t).map(Some),
            GuidanceInput::Prediction => prediction_gradient(&self.score, ctx.denoiser, x, ctx.latent_t).map(Some),
        }
    }

    fn guidance_weight(&self) -> f64 {
        self.weight
    }

    fn reads_prediction(&self) -> bool {
        self.input == GuidanceInput::Prediction
    }

    fn prediction_log_prob(&self, x0_hat: &Tensor, ctx: &GuidanceContext) -> diffusion_lm::Result<Option<Tensor>> {
        // A classifier of predictions is asked at the latent's noise level; one of latents reads
        // the prediction as clean text (t = 0), as in `prediction_gradient`.
        let t = match self.score.reads() {
            GuidanceInput::Prediction => ctx.latent_t,
            GuidanceInput::Latent => 0,
        };
        self.score.log_prob(x0_hat, t).map(Some)
    }

    fn end_prediction_pass(&self) {
        self.score.end_pass();
    }

    /// Guidance is a preference, not a constraint: there is nothing to verify.
    fn check(&self, _text: &str, _ids: &[u32], _tokenizer: &TextTokenizer) -> Result<(), String> {
        Ok(())
    }
}

/// `field = value` under a model's attribute classifier (see the module docs).
pub struct Attribute {
    inner: ClassifierGuidance<FieldScore>,
}

impl Attribute {
    /// Guidance toward `field = value` with weight `weight`; an unknown field or value is an error
    /// that lists what the classifier knows.
    pub fn new(
        classifier: &Arc<LatentClassifier>,
        field: &str,
        value: &str,
        weight: f64,
    ) -> Result<Self, ControllerError> {
        if !(weight.is_finite() && weight > 0.0) {
            return Err(ControllerError::Attribute(format!(
                "{field}={value}: the weight must be positive, got {weight}"
            )));
        }
        let score = classifier
            .field_score(field, value)
            .map_err(|e| ControllerError::Attribute(e.to_string()))?;
        Ok(Attribute {
            inner: ClassifierGuidance::new(score, weight),
        })
    }

    /// Parses `field=value[:weight]` (the CLI's `--attribute`), e.g. `food=Italian:2`.
    pub fn parse(classifier: &Arc<LatentClassifier>, spec: &str) -> Result<Self, ControllerError> {
        let (field, rest) = spec.split_once('=').ok_or_else(|| {
            ControllerError::Attribute(format!("{spec:?}: expected field=value or field=value:weight"))
        })?;
        // A trailing `:number` is the weight; other colons belong to the value (`5 out of 5`).
        let (value, weight) = rest
            .rsplit_once(':')
            .and_then(|(v, w)| w.trim().parse::<f64>().ok().map(|w| (v, w)))
            .unwrap_or((rest, 1.0));
        Self::new(classifier, field.trim(), value.trim(), weight)
    }

    /// Guide on the latent or on the denoiser's prediction (see [`ClassifierGuidance::reading`]);
    /// by default, what the classifier was trained to read.
    pub fn reading(self, input: GuidanceInput) -> Self {
        Attribute {
            inner: self.inner.reading(input),
        }
    }

    /// The field and value this controller steers toward.
    pub fn target(&self) -> (&str, &str) {
        self.inner.score().target()
    }
}

impl Controller for Attribute {
    fn name(&self) -> String {
        let (f, v) = self.target();
        format!("attribute {f}={v}")
    }

    fn hard_constraints(&self, ctx: &PrepareContext) -> diffusion_lm::Result<Vec<HardConstraint>> {
        self.inner.hard_constraints(ctx)
    }

    fn guidance(&self, x: &Tensor, ctx: &GuidanceContext) -> diffusion_lm::Result<Option<Tensor>> {
        self.inner.guidance(x, ctx)
    }

    fn guidance_weight(&self) -> f64 {
        self.inner.guidance_weight()
    }

    fn reads_prediction(&self) -> bool {
        self.inner.reads_prediction()
    }

    fn prediction_log_prob(&self, x0_hat: &Tensor, ctx: &GuidanceContext) -> diffusion_lm::Result<Option<Tensor>> {
        self.inner.prediction_log_prob(x0_hat, ctx)
    }

    fn end_prediction_pass(&self) {
        self.inner.end_prediction_pass();
    }

    fn check(&self, text: &str, ids: &[u32], tokenizer: &TextTokenizer) -> Result<(), String> {
        self.inner.check(text, ids, tokenizer)
    }
}
