//! Reverse-process samplers: one update `x_t → x_{t-1}` given the model's predicted `x0`.
//!
//! In the spirit of diffusers' schedulers, a [`Sampler`] knows nothing about the denoiser: its
//! [`Sampler::step`] takes the (already clamped) prediction `x0`, the step index and `x_t`, and
//! returns `x_{t-1}`. The generation loop that calls the model lives in [`crate::generate`].
//!
//! * **DDPM** (what Diffusion-LM samples with): `x_{t-1} = c0·x0 + ct·x_t + σ_t z`, with the
//!   posterior-mean coefficients of [`NoiseSchedule::posterior`] and the "fixed large" variance
//!   `σ_t² = β_t`.
//! * **DDIM(η)**: `ε = (x_t − √ᾱ_t x0)/√(1−ᾱ_t)`,
//!   `x_{t-1} = √ᾱ_{t-1} x0 + √(1−ᾱ_{t-1}−σ²) ε + σ z`,
//!   `σ = η √((1−ᾱ_{t-1})/(1−ᾱ_t)) √(1−ᾱ_t/ᾱ_{t-1})`; η = 0 is deterministic.
//!
//! No noise is added at the last step (index 0).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use diffusion_lm::{NoiseSchedule, Sampler, SamplerKind};
//! let schedule = NoiseSchedule::sqrt(100).unwrap().respace(10).unwrap();
//! let sampler = Sampler::new(schedule, SamplerKind::Ddim { eta: 0.0 });
//! let x0 = Tensor::ones((1, 4, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
//! // At the last step with η = 0, DDIM returns x0 exactly.
//! let out = sampler.step(&x0, 0, &x0.zeros_like().unwrap(), None).unwrap();
//! assert_eq!(out.to_vec3::<f32>().unwrap(), x0.to_vec3::<f32>().unwrap());
//! ```

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::{NoiseSchedule, Result};

/// Which reverse update to use.
///
/// Written as `ddpm`, `ddim` (η = 0) or `ddim:ETA`, in configs too.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SamplerKind {
    /// Ancestral DDPM sampling (Diffusion-LM's choice).
    #[default]
    Ddpm,
    /// DDIM with stochasticity η (0 = deterministic, 1 ≈ DDPM).
    Ddim {
        /// The stochasticity η in [0, 1].
        eta: f64,
    },
}

impl std::fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SamplerKind::Ddpm => f.write_str("ddpm"),
            SamplerKind::Ddim { eta } => write!(f, "ddim:{eta}"),
        }
    }
}

impl TryFrom<String> for SamplerKind {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<SamplerKind> for String {
    fn from(k: SamplerKind) -> String {
        k.to_string()
    }
}

impl std::str::FromStr for SamplerKind {
    type Err = String;
    /// Parses `ddpm`, `ddim` (η = 0) or `ddim:ETA`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "ddpm" => Ok(SamplerKind::Ddpm),
            "ddim" => Ok(SamplerKind::Ddim { eta: 0.0 }),
            _ => match s.strip_prefix("ddim:").map(str::parse::<f64>) {
                Some(Ok(eta)) if (0.0..=1.0).contains(&eta) => Ok(SamplerKind::Ddim { eta }),
                _ => Err(format!(
                    "unknown sampler {s:?}: expected ddpm, ddim or ddim:ETA with ETA in [0, 1]"
                )),
            },
        }
    }
}

/// A reverse-process update rule over a (respaced) schedule.
#[derive(Debug, Clone)]
pub struct Sampler {
    schedule: NoiseSchedule,
    kind: SamplerKind,
}

impl Sampler {
    /// A sampler applying the `kind` update rule over `schedule`.
    pub fn new(schedule: NoiseSchedule, kind: SamplerKind) -> Self {
        Sampler { schedule, kind }
    }

    /// The schedule the sampler walks (step `len-1` first, step 0 last).
    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// The update rule (DDPM or DDIM with its `eta`).
    pub fn kind(&self) -> SamplerKind {
        self.kind
    }

    /// Whether step `i` needs fresh Gaussian noise `z`.
    pub fn needs_noise(&self, i: usize) -> bool {
        i > 0 && !matches!(self.kind, SamplerKind::Ddim { eta } if eta == 0.0)
    }

    /// One reverse update from `x_t` at step `i` to `x_{i-1}`, given the predicted `x0` and, when
    /// [`Sampler::needs_noise`], standard normal `noise` of the same shape.
    pub fn step(&self, x0: &Tensor, i: usize, x_t: &Tensor, noise: Option<&Tensor>) -> Result<Tensor> {
        let (mean, std) = self.step_parts(x0, i, x_t)?;
        match noise {
            Some(z) if i > 0 && std > 0.0 => Ok(mean.add(&(z * std)?)?),
            _ => Ok(mean),
        }
    }

    /// The mean and standard deviation of `x_{i-1}` given `x0` and `x_t` (the standard deviation
    /// is applied only when `i > 0`).
    pub fn step_parts(&self, x0: &Tensor, i: usize, x_t: &Tensor) -> Result<(Tensor, f64)> {
        let s = &self.schedule;
        let (mean, std) = match self.kind {
            SamplerKind::Ddpm => {
                let (c0, ct, _) = s.posterior(i);
                ((x0 * c0)?.add(&(x_t * ct)?)?, s.ddpm_variance(i).sqrt())
            }
            SamplerKind::Ddim { eta } => {
                let ac = s.alphas_cumprod()[i];
                let ac_prev = s.alpha_bar_prev(i);
                let eps = ((x_t - (x0 * ac.sqrt())?)? / (1.0 - ac).sqrt())?;
                let sigma = eta * ((1.0 - ac_prev) / (1.0 - ac)).sqrt() * (1.0 - ac / ac_prev).sqrt();
                let dir = (1.0 - ac_prev - sigma * sigma).max(0.0).sqrt();
                ((x0 * ac_prev.sqrt())?.add(&(eps * dir)?)?, sigma)
            }
        };
        Ok((mean, if i > 0 { std } else { 0.0 }))
    }
}
