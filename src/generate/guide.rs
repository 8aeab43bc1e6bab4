//! The guidance hook: after each sampler update, gradient ascent on the latent `x_{t-1}`.
//!
//! Each update ascends `λ·log N(x; μ, σ²) + Σ_g w_g·log p_g(c | ·)` over the stack's guides
//! ([`crate::steer::Guide`]): the first term keeps the latent near the sampler's mean (fluency),
//! the others pull it toward what the guides prefer. The engine builds **one** differentiable
//! pass per update for all guides: the latent becomes a variable, the denoiser predicts `x̂0`
//! from it once if any guide reads the prediction, every guide's weighted log-probability is
//! summed, and the sum is differentiated once (the gradient is linear, so this equals the sum of
//! each guide's own gradient, at the cost of one pass). How the gradient moves the latent is the
//! [`GuidanceRule`]; its Adam and Adagrad rules use [`crate::train::optim`]'s optimisers.

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::engine::denoiser::Denoiser;
use crate::nn::Mode;
use crate::steer::{Guide, GuideContext, GuideInput};
use crate::train::optim::{Adagrad, Adam, AdamWConfig};
use crate::{Error, Result};

/// How guidance updates the latent. Written `sign`, `normalized`, `adam:LR` or `adagrad:LR`, in
/// configs too.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum GuidanceRule {
    /// Diffusion-LM's implementation: each update moves by `step_size · sign(gradient)`.
    #[default]
    SignNormalized,
    /// Each update moves by `step_size · g / rms(g)`, the RMS taken over each sequence: the
    /// same overall step as [`GuidanceRule::SignNormalized`], but positions (and coordinates)
    /// with larger gradients move more, so a gradient concentrated on a few words (as through the
    /// denoiser's prediction) leaves the rest of the sentence alone.
    Normalized,
    /// Adam on the latent with this learning rate.
    Adam {
        /// The learning rate.
        lr: f64,
    },
    /// Adagrad on the latent with this learning rate.
    Adagrad {
        /// The learning rate.
        lr: f64,
    },
}

impl std::str::FromStr for GuidanceRule {
    type Err = Error;
    /// `sign`, `normalized`, `adam:LR` or `adagrad:LR`.
    fn from_str(s: &str) -> Result<Self> {
        let lr = |v: &str| -> Result<f64> {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x > 0.0)
                .ok_or_else(|| Error::Config(format!("guidance rule {s:?}: {v:?} is not a positive learning rate")))
        };
        match s.split_once(':') {
            None if s == "sign" => Ok(GuidanceRule::SignNormalized),
            None if s == "normalized" => Ok(GuidanceRule::Normalized),
            Some(("adam", v)) => Ok(GuidanceRule::Adam { lr: lr(v)? }),
            Some(("adagrad", v)) => Ok(GuidanceRule::Adagrad { lr: lr(v)? }),
            _ => Err(Error::Config(format!(
                "guidance rule {s:?}: expected sign, normalized, adam:LR or adagrad:LR"
            ))),
        }
    }
}

impl std::fmt::Display for GuidanceRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuidanceRule::SignNormalized => f.write_str("sign"),
            GuidanceRule::Normalized => f.write_str("normalized"),
            GuidanceRule::Adam { lr } => write!(f, "adam:{lr}"),
            GuidanceRule::Adagrad { lr } => write!(f, "adagrad:{lr}"),
        }
    }
}

impl TryFrom<String> for GuidanceRule {
    type Error = String;
    /// For serde: the bare message, which the config reader puts in its own context.
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse().map_err(|e: Error| e.bare_message())
    }
}

impl From<GuidanceRule> for String {
    fn from(r: GuidanceRule) -> String {
        r.to_string()
    }
}

/// Settings of the guidance update.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuidanceConfig {
    /// λ, the weight of the fluency term `log p(x_{t-1} | x_t)`.
    pub fluency_weight: f64,
    /// Gradient updates per denoising step.
    pub steps: usize,
    /// Step size of [`GuidanceRule::SignNormalized`] and [`GuidanceRule::Normalized`].
    pub step_size: f64,
    /// No guidance in the last `skip_last` denoising steps.
    pub skip_last: usize,
    /// How the gradient moves the latent.
    pub rule: GuidanceRule,
}

impl GuidanceConfig {
    /// The settings measured best with the shipped classifiers for guides reading `input`
    /// (`docs/results.md`):
    ///
    /// * on the latent: 3 sign-normalised updates of 0.3 per step;
    /// * on the prediction: 1 [`GuidanceRule::Normalized`] update of
    ///   [`GuidanceConfig::PREDICTION_STEP_SIZE`] per step: the gradient through the denoiser
    ///   already points at the words to change, and one update keeps its cost (a differentiable
    ///   denoiser pass) to one per step.
    ///
    /// ```
    /// use diffusion_lm::generate::{GuidanceConfig, GuidanceRule};
    /// use diffusion_lm::steer::GuideInput;
    /// let g = GuidanceConfig::recommended(GuideInput::Prediction);
    /// assert_eq!((g.steps, g.rule), (1, GuidanceRule::Normalized));
    /// ```
    pub fn recommended(input: GuideInput) -> Self {
        match input {
            // The masked engine does not take these settings.
            GuideInput::Latent | GuideInput::Masked => GuidanceConfig {
                step_size: 0.3,
                ..GuidanceConfig::default()
            },
            GuideInput::Prediction => GuidanceConfig {
                steps: 1,
                step_size: Self::PREDICTION_STEP_SIZE,
                rule: GuidanceRule::Normalized,
                ..GuidanceConfig::default()
            },
        }
    }

    /// The step size of [`GuidanceConfig::recommended`] for guidance on the prediction.
    pub const PREDICTION_STEP_SIZE: f64 = 0.2;

    /// Checks that the step size and the fluency weight are usable.
    pub fn validate(&self) -> Result<()> {
        if !(self.step_size.is_finite() && self.step_size > 0.0) {
            return Err(Error::Config(format!(
                "guidance step size must be positive, got {}",
                self.step_size
            )));
        }
        if !(self.fluency_weight.is_finite() && self.fluency_weight >= 0.0) {
            return Err(Error::Config(format!(
                "guidance fluency weight must be at least 0, got {}",
                self.fluency_weight
            )));
        }
        Ok(())
    }
}

impl Default for GuidanceConfig {
    /// The paper's rule: 3 sign-normalised steps of 0.1, none in the last 10 steps.
    fn default() -> Self {
        GuidanceConfig {
            fluency_weight: 0.01,
            steps: 3,
            step_size: 0.1,
            skip_last: 10,
            rule: GuidanceRule::SignNormalized,
        }
    }
}

/// The gradient of `Σ_g w_g Σ_b log p_g(c | ·)` with respect to the latent `x` `[B, L, d]`, or
/// `None` without guides: one differentiable pass shared by every guide (see the module docs).
pub fn guidance_gradient(
    guides: &[Box<dyn Guide>],
    denoiser: &Denoiser,
    x: &Tensor,
    ctx: &GuideContext,
) -> Result<Option<Tensor>> {
    if guides.is_empty() {
        return Ok(None);
    }
    let var = Var::from_tensor(&x.detach())?;
    let prediction = if guides.iter().any(|g| g.reads() == GuideInput::Prediction) {
        let t = vec![ctx.latent_t; x.dim(0)?];
        Some(denoiser.forward(var.as_tensor(), &t, &mut Mode::Grad)?)
    } else {
        None
    };
    let mut objective: Option<Tensor> = None;
    for g in guides {
        let input = match (g.reads(), &prediction) {
            (GuideInput::Prediction, Some(x0)) => x0,
            _ => var.as_tensor(),
        };
        let term = (g.log_prob(input, ctx)?.sum_all()? * g.weight())?;
        objective = Some(match objective.take() {
            None => term,
            Some(acc) => (acc + term)?,
        });
    }
    let Some(objective) = objective else {
        return Ok(None);
    };
    let grads = objective.backward()?;
    let g = grads.get(var.as_tensor()).cloned().ok_or_else(|| {
        Error::Sampling(format!(
            "guidance of {} does not depend on the latent",
            guides.iter().map(|g| g.name()).collect::<Vec<_>>().join(", ")
        ))
    })?;
    Ok(Some(g))
}

/// Gradient ascent on `λ·log N(x; mean, std²) + Σ_g w_g log p_g(c | x)`: `cfg.steps` updates of
/// the latent `x` under `cfg.rule`.
pub(crate) fn ascend(
    guides: &[Box<dyn Guide>],
    denoiser: &Denoiser,
    cfg: &GuidanceConfig,
    mut x: Tensor,
    mean: &Tensor,
    std: f64,
    ctx: &GuideContext,
) -> Result<Tensor> {
    let mut adam = Adam::new(AdamWConfig::default());
    let mut adagrad = Adagrad::new();
    for _ in 0..cfg.steps {
        let Some(mut grad) = guidance_gradient(guides, denoiser, &x, ctx)? else {
            return Ok(x);
        };
        if std > 0.0 && cfg.fluency_weight > 0.0 {
            // d/dx log N(x; mean, std²) = −(x − mean) / std²
            grad = (grad - ((&x - mean)? * (cfg.fluency_weight / (std * std)))?)?;
        }
        let update = match cfg.rule {
            GuidanceRule::SignNormalized => (grad.sign()? * cfg.step_size)?,
            GuidanceRule::Normalized => {
                let rms = (grad.sqr()?.mean_keepdim(2)?.mean_keepdim(1)? + 1e-20)?.sqrt()?;
                (grad.broadcast_div(&rms)? * cfg.step_size)?
            }
            GuidanceRule::Adam { lr } => (adam.direction(&grad)? * lr)?,
            GuidanceRule::Adagrad { lr } => (adagrad.direction(&grad)? * lr)?,
        };
        x = (x + update)?;
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::GuidanceRule;

    #[test]
    fn guidance_rules_parse_print_and_bad_ones_say_why() {
        for (s, rule) in [
            ("sign", GuidanceRule::SignNormalized),
            ("normalized", GuidanceRule::Normalized),
            ("adam:0.5", GuidanceRule::Adam { lr: 0.5 }),
            ("adagrad:2", GuidanceRule::Adagrad { lr: 2.0 }),
        ] {
            assert_eq!(s.parse::<GuidanceRule>().unwrap(), rule);
            assert_eq!(rule.to_string(), s);
        }
        let err = "adam:-1".parse::<GuidanceRule>().unwrap_err().to_string();
        assert!(err.contains("not a positive learning rate"), "{err}");
        let err = "momentum".parse::<GuidanceRule>().unwrap_err().to_string();
        assert!(err.contains("expected sign, normalized"), "{err}");
    }
}
