//! The per-step loop of the reverse process. Each step `i` (from `x_i` to `x_{i-1}`):
//!
//! 1. **predict**: the denoiser predicts `x0 = f(x_i, t_i)`;
//! 2. **project**: `x0` is clamped or projected onto the hard constraints ([`project`]), scored
//!    by the denoiser's logits when it has the softmax head;
//! 3. **sampler update**: the sampler computes `x_{i-1}` from `x0` and `x_i` (mean `μ`, standard
//!    deviation `σ`);
//! 4. **guide**: with guides in the stack and outside the last `skip_last` steps, gradient
//!    ascent on `x_{i-1}` ([`guide`]);
//! 5. **repair**: with repairs in the stack, the positions they name are re-noised ([`repair`]).
//!
//! After the last step the latent is rounded with the same projection, so every output
//! satisfies every hard constraint.
//!
//! [`project`]: crate::generate::project
//! [`guide`]: crate::generate::guide
//! [`repair`]: crate::generate::repair

use candle_core::Tensor;
use rand::rngs::StdRng;

use crate::generate::project::{self, Pins};
use crate::generate::{guide, repair, Run};
use crate::nn::Mode;
use crate::steer::GuideContext;
use crate::Result;

/// The reverse process from `x` (at the noise level of step `start - 1`) to step 0, then
/// rounding. With `pins`, the held tokens replace the prediction at every step and in the
/// rounding, and nothing is re-noised.
pub(crate) fn denoise(
    run: &Run,
    mut x: Tensor,
    start: usize,
    pins: Option<&Pins>,
    rngs: &mut [StdRng],
) -> Result<Vec<Vec<u32>>> {
    let sampler = run.sampler;
    let model = &run.lm.model;
    let device = model.device();
    let d = run.lm.config.embed_dim;
    let count = x.dim(0)?;
    let schedule = sampler.schedule();
    let repairs = pins.is_none() && !run.stack.repairs().is_empty();
    for i in (0..start).rev() {
        let t = vec![schedule.timesteps()[i]; count];
        let (x0, logits) = model.forward_with_logits(&x, &t, &mut Mode::Infer)?;
        let progress = (schedule.len() - 1 - i) as f64 / schedule.len() as f64;
        let x0 = project::project_step(run, x0, logits.as_ref(), progress, pins)?;
        let noise = if sampler.needs_noise(i) {
            Some(crate::nn::standard_normal(rngs, (count, run.length, d), device)?)
        } else {
            None
        };
        let (mean, std) = sampler.step_parts(&x0, i, &x)?;
        x = match &noise {
            Some(z) if std > 0.0 => (&mean + (z * std)?)?,
            _ => mean.clone(),
        };
        if !run.stack.guides().is_empty() && i >= run.guidance.skip_last {
            let ctx = GuideContext {
                step: i,
                num_steps: schedule.len(),
                t: t[0],
                latent_t: if i > 0 { schedule.timesteps()[i - 1] } else { 0 },
                embeddings: model.embeddings(),
                masked_fraction: 0.0,
            };
            x = guide::ascend(run.stack.guides(), model, &run.guidance, x, &mean, std, &ctx)?;
        }
        if repairs && i > 0 {
            x = repair::renoise(run, x, &x0, i, rngs)?;
        }
        run.bar.inc(1);
    }
    project::round(run, &x, pins)
}
