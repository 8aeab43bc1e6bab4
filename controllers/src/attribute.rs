//! Classifier-gradient guidance: soft control of *what* the text says.
//!
//! [`Attribute`] is a [`Guide`]: at every denoising step the generator ascends
//! `w · log p(field = value | ·)` under the attribute classifier that ships with a model
//! (`models/e2e/classifier`, trained by `diffusion-lm train-classifier`), pulling the latent
//! toward regions the classifier assigns to the target, e.g. `food = Italian`.
//!
//! What the classifier reads is a choice ([`GuideInput`]): the noisy latent (Diffusion-LM's
//! recipe) or the denoiser's clean prediction `x̂0(x)`, with the gradient taken through the
//! denoiser. A classifier trained on predictions guides on predictions; a classifier of latents
//! guides on latents by default and can be pointed at predictions with [`Attribute::reading`],
//! where it reads them as clean text (`t = 0`). Every guide of a stack shares one differentiable
//! denoiser pass per update; the targets of one attribute ([`Attribute::and`]) share one
//! classifier pass.
//!
//! On the masked engine the classifier is one of masked text (`train-classifier --reads masked`;
//! the shipped masked model's `classifier/`), which reads the text as it stands, committed
//! tokens and masks ([`GuideInput::Masked`]): each step's first commit is drawn from its likely
//! tokens weighted by the classifier with each in place
//! (`diffusion_lm::masked::MaskedGenerator::guide`).
//!
//! ```
//! use std::sync::Arc;
//! use diffusion_lm::masked::{MaskedGenerator, MaskedLm};
//! use diffusion_lm::scoring::classifier::LatentClassifier;
//! use diffusion_lm_controllers::Attribute;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = candle_core::Device::Cpu;
//! let lm = MaskedLm::load(MaskedLm::default_dir(), &device)?;
//! let classifier = Arc::new(LatentClassifier::load(MaskedLm::default_dir().join("classifier"), &device)?);
//! let italian = Attribute::new(&classifier, "food", "Italian", 1.0)?; // a classifier of masked text
//! let samples = MaskedGenerator::new(&lm).guide(italian).steps(16).generate(1)?;
//! assert_eq!(samples.len(), 1);
//! # Ok(()) }
//! ```
//!
//! Guidance is soft: it makes the attribute likely, not certain. It composes with hard
//! constraints in one stack: the projection keeps every output valid while the gradient moves the
//! content (e.g. `food = Italian` inside the restaurant JSON Schema).
//!
//! ```
//! use std::sync::Arc;
//! use diffusion_lm::scoring::classifier::LatentClassifier;
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
//!     .guide(italian)
//!     .constrain(Length::between(8, 30)?)
//!     .steps(10)
//!     .self_correct(0, 0.3)
//!     .generate(1)?;
//! assert_eq!(samples.len(), 1);
//! # Ok(()) }
//! ```
//!
//! Your own objective: implement [`Guide`] (a `log p(c | ·)` per batch row, built from
//! differentiable candle ops); the engine takes the gradient by autograd. Here, a guide that
//! prefers latents close to one word's embedding:
//!
//! ```
//! use candle_core::Tensor;
//! use diffusion_lm::steer::{Guide, GuideContext, GuideInput};
//! use diffusion_lm::{DiffusionLm, Generator};
//!
//! struct NearWord {
//!     embedding: Tensor, // [d]
//! }
//!
//! impl Guide for NearWord {
//!     fn name(&self) -> String {
//!         "near a word".into()
//!     }
//!     fn reads(&self) -> GuideInput {
//!         GuideInput::Latent
//!     }
//!     fn log_prob(&self, x: &Tensor, _ctx: &GuideContext) -> diffusion_lm::Result<Tensor> {
//!         // −Σ_p ‖x_p − e‖² per row: an unnormalised Gaussian log-likelihood.
//!         Ok(x.broadcast_sub(&self.embedding)?.sqr()?.sum((1, 2))?.neg()?)
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let lm = DiffusionLm::load(DiffusionLm::default_dir(), &candle_core::Device::Cpu)?;
//! let word = lm.tokenizer.encode(" pub")?[0];
//! let guide = NearWord { embedding: lm.model.embeddings().get(word as usize)? };
//! let samples = Generator::new(&lm).guide(guide).steps(10).self_correct(0, 0.3).generate(1)?;
//! assert_eq!(samples.len(), 1);
//! # Ok(()) }
//! ```

use std::sync::Arc;

use candle_core::Tensor;
use diffusion_lm::scoring::classifier::LatentClassifier;
pub use diffusion_lm::steer::GuideInput;
use diffusion_lm::steer::{Guide, GuideContext};

use crate::ControllerError;

/// `field = value` targets under a model's attribute classifier (see the module docs). One
/// attribute may hold several targets of the same classifier ([`Attribute::and`]); they share one
/// classifier pass per guidance update.
pub struct Attribute {
    classifier: Arc<LatentClassifier>,
    /// `(field, value, weight)` indices and weights.
    targets: Vec<(usize, usize, f64)>,
    reads: GuideInput,
}

impl Attribute {
    /// Guidance toward `field = value` with weight `weight`, on what the classifier was trained
    /// to read; an unknown field or value is an error that lists what the classifier knows.
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
        let (f, v) = classifier
            .config()
            .target(field, value)
            .map_err(|e| ControllerError::Attribute(e.to_string()))?;
        Ok(Attribute {
            classifier: Arc::clone(classifier),
            targets: vec![(f, v, weight)],
            reads: classifier.config().reads,
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

    /// Guide on the latent or on the denoiser's prediction. A classifier of latents can do
    /// either (on a prediction it is asked at `t = 0`, as on clean text); a classifier trained on
    /// predictions can only guide on predictions, and asking it for the latent is an error.
    pub fn reading(mut self, input: GuideInput) -> Result<Self, ControllerError> {
        match (input, self.classifier.config().reads) {
            (GuideInput::Latent, GuideInput::Prediction) => {
                return Err(ControllerError::Attribute(format!(
                    "{}: this classifier was trained on the denoiser's predictions and cannot guide on the noisy latent",
                    self.describe()
                )))
            }
            (GuideInput::Masked, GuideInput::Latent | GuideInput::Prediction) => {
                return Err(ControllerError::Attribute(format!(
                    "{}: this classifier reads a continuous model's latents; the masked engine guides with a classifier of masked text (`train-classifier --reads masked`)",
                    self.describe()
                )))
            }
            (GuideInput::Latent | GuideInput::Prediction, GuideInput::Masked) => {
                return Err(ControllerError::Attribute(format!(
                    "{}: this classifier reads masked text; only the masked engine guides with it",
                    self.describe()
                )))
            }
            _ => {}
        }
        self.reads = input;
        Ok(self)
    }

    /// This attribute's targets and `other`'s in one guide, sharing one classifier pass. Both
    /// must use the same classifier (the same `Arc`) and read the same input.
    pub fn and(mut self, other: Attribute) -> Result<Self, ControllerError> {
        if !Arc::ptr_eq(&self.classifier, &other.classifier) || self.reads != other.reads {
            return Err(ControllerError::Attribute(format!(
                "{} and {}: targets joined in one attribute must share the classifier and what it reads",
                self.describe(),
                other.describe()
            )));
        }
        self.targets.extend(other.targets);
        Ok(self)
    }

    /// The field and value of the first target.
    pub fn target(&self) -> (&str, &str) {
        let (f, v, _) = self.targets[0];
        self.names(f, v)
    }

    /// Every target: field, value and weight.
    pub fn targets(&self) -> impl Iterator<Item = (&str, &str, f64)> + '_ {
        self.targets.iter().map(|&(f, v, w)| {
            let (field, value) = self.names(f, v);
            (field, value, w)
        })
    }

    fn names(&self, f: usize, v: usize) -> (&str, &str) {
        let spec = &self.classifier.config().fields[f];
        (&spec.name, &spec.values[v])
    }

    /// `field=value, field=value`.
    fn describe(&self) -> String {
        self.targets()
            .map(|(f, v, _)| format!("{f}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Guide for Attribute {
    fn name(&self) -> String {
        format!("attribute {}", self.describe())
    }

    fn reads(&self) -> GuideInput {
        self.reads
    }

    /// A single target's weight; with several, each target's log-probability is weighted inside
    /// [`Guide::log_prob`] and this is 1.
    fn weight(&self) -> f64 {
        match self.targets.as_slice() {
            [(_, _, w)] => *w,
            _ => 1.0,
        }
    }

    /// The classifier's `log p(field = value | input)` (summed with the weights over several
    /// targets), from one classifier pass. The time index it is asked at: the step's `t` on the
    /// latent (as in Diffusion-LM); on the prediction, the latent's noise level for a classifier
    /// trained on predictions, and 0 (clean text) for one of latents; on masked text, the time
    /// index of its masked fraction ([`LatentClassifier::masked_time`]).
    fn log_prob(&self, input: &Tensor, ctx: &GuideContext) -> diffusion_lm::Result<Tensor> {
        let t = match (self.reads, self.classifier.config().reads) {
            (GuideInput::Latent, _) => ctx.t,
            (GuideInput::Prediction, GuideInput::Prediction) => ctx.latent_t,
            (GuideInput::Prediction, _) => 0,
            (GuideInput::Masked, _) => self.classifier.masked_time(ctx.masked_fraction),
        };
        let b = input.dim(0)?;
        let targets: Vec<(usize, usize)> = self.targets.iter().map(|&(f, v, _)| (f, v)).collect();
        let mut lps = self.classifier.log_probs(input, &vec![t; b], &targets)?;
        if lps.len() == 1 {
            return Ok(lps.swap_remove(0));
        }
        let mut total: Option<Tensor> = None;
        for (lp, &(_, _, w)) in lps.iter().zip(&self.targets) {
            let term = (lp * w)?;
            total = Some(match total {
                None => term,
                Some(acc) => (acc + term)?,
            });
        }
        Ok(total.expect("an attribute has at least one target"))
    }

    /// A classifier of masked text's token embeddings.
    fn embeddings(&self) -> Option<Tensor> {
        self.classifier.token_embeddings().cloned()
    }
}
