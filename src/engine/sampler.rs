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
//! * **Renoise** (the default): `x_{t-1} = √ᾱ_{t-1} x0 + √(1−ᾱ_{t-1}) z`, the prediction noised afresh to
//!   the next level. The latent keeps nothing of its path but the prediction, so each step's
//!   words are chosen again in the context of the tokens committed so far (see
//!   [`crate::GenerationConfig::commit`]).
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
/// Written as `renoise`, `ddpm`, `ddim` (η = 0) or `ddim:ETA`, in configs too.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SamplerKind {
    /// Ancestral DDPM sampling (Diffusion-LM's choice).
    Ddpm,
    /// DDIM with stochasticity η (0 = deterministic, 1 ≈ DDPM).
    Ddim {
        /// The stochasticity η in [0, 1].
        eta: f64,
    },
    /// The prediction noised afresh to the next step's level (the default: with the E2E
    /// models trained here its sentences read far better than DDPM's, `docs/results.md`).
    #[default]
    Renoise,
}

impl std::fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SamplerKind::Ddpm => f.write_str("ddpm"),
            SamplerKind::Ddim { eta } => write!(f, "ddim:{eta}"),
            SamplerKind::Renoise => f.write_str("renoise"),
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
    /// Parses `ddpm`, `ddim` (η = 0), `ddim:ETA` or `renoise`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "ddpm" => Ok(SamplerKind::Ddpm),
            "renoise" => Ok(SamplerKind::Renoise),
            "ddim" => Ok(SamplerKind::Ddim { eta: 0.0 }),
            _ => match s.strip_prefix("ddim:").map(str::parse::<f64>) {
                Some(Ok(eta)) if (0.0..=1.0).contains(&eta) => Ok(SamplerKind::Ddim { eta }),
                _ => Err(format!(
                    "unknown sampler {s:?}: expected ddpm, ddim, ddim:ETA with ETA in [0, 1], or renoise"
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
            SamplerKind::Renoise => {
                let ac_prev = s.alpha_bar_prev(i);
                ((x0 * ac_prev.sqrt())?, (1.0 - ac_prev).max(0.0).sqrt())
            }
        };
        Ok((mean, if i > 0 { std } else { 0.0 }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn renoise_draws_the_prediction_at_the_next_level_whatever_the_latent() {
        let schedule = NoiseSchedule::sqrt(100).unwrap().respace(10).unwrap();
        let sampler = Sampler::new(schedule.clone(), SamplerKind::Renoise);
        assert!(sampler.needs_noise(5) && !sampler.needs_noise(0));
        let x0 = Tensor::new(&[[[1f32, -2.0]]], &Device::Cpu).unwrap();
        for x_t in [x0.zeros_like().unwrap(), (&x0 * 7.0).unwrap()] {
            let (mean, std) = sampler.step_parts(&x0, 5, &x_t).unwrap();
            let ab = schedule.alphas_cumprod()[4];
            let m = mean.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!((m[0] as f64 - ab.sqrt()).abs() < 1e-6 && (m[1] as f64 + 2.0 * ab.sqrt()).abs() < 1e-6);
            assert!((std - (1.0 - ab).sqrt()).abs() < 1e-12);
            let (last, std0) = sampler.step_parts(&x0, 0, &x_t).unwrap();
            assert_eq!(last.to_vec3::<f32>().unwrap(), x0.to_vec3::<f32>().unwrap());
            assert_eq!(std0, 0.0);
        }
        assert_eq!("renoise".parse::<SamplerKind>(), Ok(SamplerKind::Renoise));
        assert_eq!(SamplerKind::Renoise.to_string(), "renoise");
    }
}
