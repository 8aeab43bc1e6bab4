//! The `sqrt` noise schedule of Diffusion-LM and its respacing to fewer sampling steps.
//!
//! Diffusion-LM (Li et al. 2022, §4.3) defines
//! `alpha_bar(tau) = 1 - sqrt(tau + 1e-4)` for `tau` in `[0, 1]` and derives, for `T` steps,
//! `beta_i = min(1 - alpha_bar((i+1)/T) / alpha_bar(i/T), 0.999)`; the cumulative product of
//! `1 - beta_i` is the `alpha_bar_i` used by the forward process
//! `q(x_i | x_0) = N(sqrt(alpha_bar_i) x_0, (1 - alpha_bar_i) I)`.
//! The schedule adds noise quickly at first, which suits discrete text: a little noise already
//! makes a word ambiguous.
//!
//! Sampling with `K < T` steps uses an exact *respacing* (as in improved-diffusion): `K` evenly
//! spaced indices of `0..T` are kept, the schedule's `alpha_bar` at those indices is kept
//! unchanged, new betas are derived from consecutive kept values, and the model is told the
//! original time index of each kept step ([`NoiseSchedule::timesteps`]).
//!
//! ```
//! use diffusion_lm::NoiseSchedule;
//! let full = NoiseSchedule::sqrt(2000).unwrap();
//! let fast = full.respace(200).unwrap();
//! assert_eq!(fast.len(), 200);
//! assert_eq!(fast.timesteps()[0], 0);
//! assert_eq!(fast.timesteps()[199], 1999);
//! // Respacing keeps alpha_bar exactly on the kept indices.
//! let i = fast.timesteps()[57];
//! assert_eq!(fast.alphas_cumprod()[57], full.alphas_cumprod()[i]);
//! ```

use crate::{Error, Result};

/// The `sqrt` schedule's alpha_bar as a function of continuous time `tau` in `[0, 1]`.
pub fn sqrt_alpha_bar(tau: f64) -> f64 {
    1.0 - (tau + 1e-4).sqrt()
}

/// Which noise schedule a model was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Diffusion-LM's `sqrt` schedule ([`NoiseSchedule::sqrt`]).
    #[default]
    Sqrt,
}

impl ScheduleKind {
    /// The schedule of this kind over `steps` diffusion steps.
    pub fn schedule(self, steps: usize) -> Result<NoiseSchedule> {
        match self {
            ScheduleKind::Sqrt => NoiseSchedule::sqrt(steps),
        }
    }
}

/// Largest beta allowed, as in Diffusion-LM.
pub const MAX_BETA: f64 = 0.999;

/// A discrete noise schedule: betas, their cumulative products, and the model time index of
/// each step.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    betas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
    timesteps: Vec<usize>,
    original_len: usize,
}

impl NoiseSchedule {
    /// The `sqrt` schedule with `steps` (T) diffusion steps.
    pub fn sqrt(steps: usize) -> Result<Self> {
        if steps < 2 {
            return Err(Error::Config(format!("a schedule needs at least 2 steps, got {steps}")));
        }
        let t = steps as f64;
        let betas: Vec<f64> = (0..steps)
            .map(|i| {
                let b = 1.0 - sqrt_alpha_bar((i + 1) as f64 / t) / sqrt_alpha_bar(i as f64 / t);
                b.min(MAX_BETA)
            })
            .collect();
        Ok(Self::from_betas(betas, (0..steps).collect(), steps))
    }

    fn from_betas(betas: Vec<f64>, timesteps: Vec<usize>, original_len: usize) -> Self {
        let mut acc = 1.0;
        let alphas_cumprod = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        NoiseSchedule {
            betas,
            alphas_cumprod,
            timesteps,
            original_len,
        }
    }

    /// The indices of `0..T` that respacing to `k` steps keeps: `round(i * (T-1)/(k-1))`.
    pub fn respaced_indices(total: usize, k: usize) -> Result<Vec<usize>> {
        if k == 0 {
            return Err(Error::Sampling(
                "the number of sampling steps must be at least 1".into(),
            ));
        }
        if k > total {
            return Err(Error::Sampling(format!(
                "{k} sampling steps requested but the model was trained with {total} diffusion steps"
            )));
        }
        if k == 1 {
            return Ok(vec![0]);
        }
        let stride = (total - 1) as f64 / (k - 1) as f64;
        let mut idx: Vec<usize> = (0..k).map(|i| (i as f64 * stride).round() as usize).collect();
        idx.dedup();
        Ok(idx)
    }

    /// Respaces this schedule to `k` steps, keeping `alpha_bar` exactly on the kept indices.
    pub fn respace(&self, k: usize) -> Result<Self> {
        let keep = Self::respaced_indices(self.len(), k)?;
        let mut last = 1.0;
        let mut betas = Vec::with_capacity(keep.len());
        for &i in &keep {
            let ac = self.alphas_cumprod[i];
            betas.push(1.0 - ac / last);
            last = ac;
        }
        let timesteps = keep.iter().map(|&i| self.timesteps[i]).collect();
        let mut s = Self::from_betas(betas, timesteps, self.original_len);
        // Use the original values rather than re-multiplied ones, so they match bit for bit.
        s.alphas_cumprod = keep.iter().map(|&i| self.alphas_cumprod[i]).collect();
        Ok(s)
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Always false: a schedule has at least one step.
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// Number of steps of the schedule this one was respaced from (T).
    pub fn original_len(&self) -> usize {
        self.original_len
    }

    /// beta of each step.
    pub fn betas(&self) -> &[f64] {
        &self.betas
    }

    /// alpha_bar of each step.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// The original time index (in `0..T`) the model is given at each step.
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// alpha_bar of the step before `i` (1 before the first step).
    pub fn alpha_bar_prev(&self, i: usize) -> f64 {
        if i == 0 {
            1.0
        } else {
            self.alphas_cumprod[i - 1]
        }
    }

    /// Coefficients of the posterior mean `q(x_{i-1} | x_i, x_0) = c0 * x_0 + ct * x_i`,
    /// and the posterior variance.
    pub fn posterior(&self, i: usize) -> (f64, f64, f64) {
        let ac = self.alphas_cumprod[i];
        let ac_prev = self.alpha_bar_prev(i);
        let beta = self.betas[i];
        let c0 = beta * ac_prev.sqrt() / (1.0 - ac);
        let ct = (1.0 - ac_prev) * (1.0 - beta).sqrt() / (1.0 - ac);
        let var = beta * (1.0 - ac_prev) / (1.0 - ac);
        (c0, ct, var)
    }

    /// The DDPM sampling variance at step `i` ("fixed large", as Diffusion-LM samples): beta_i,
    /// with the posterior variance of step 1 in place of beta_0.
    pub fn ddpm_variance(&self, i: usize) -> f64 {
        if i == 0 {
            if self.len() > 1 {
                self.posterior(1).2
            } else {
                self.betas[0]
            }
        } else {
            self.betas[i]
        }
    }
}
