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
//! With progressive commitment ([`crate::GenerationConfig::commit`]), step 2 is followed by
//! **commit**: the positions the denoiser is surest of (its probability of the projected token)
//! are held from then on, so that after step `i` of `K` a share `(K − i)/K` of the sequence is
//! committed. Held positions take part in the projection as pins, so each projected sequence
//! contains every earlier commit and the commits always stay completable. A model trained with
//! clean context ([`crate::ModelConfig::clean_context`]) is given the committed tokens' clean
//! embeddings, marked as time 0; the latent itself keeps walking towards them, so guides read
//! a latent of the usual kind.
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
    let pad = run.lm.tokenizer.pad_id();
    let mut commits: Option<Vec<Vec<Option<u32>>>> = run.commit.then(|| match pins {
        Some(p) => p.ids.clone(),
        None => vec![vec![None; run.length]; count],
    });
    for i in (0..start).rev() {
        let t = vec![schedule.timesteps()[i]; count];
        let held = match &commits {
            Some(ids) => Some(Pins::new(model, ids.clone(), pad)?),
            None => None,
        };
        let (x0, logits) = match &held {
            Some(h) if model.config().clean_context => {
                model.forward_with_context(&h.apply(&x)?, &t, Some(h.mask()), &mut Mode::Infer)?
            }
            _ => model.forward_with_logits(&x, &t, &mut Mode::Infer)?,
        };
        let progress = (schedule.len() - 1 - i) as f64 / schedule.len() as f64;
        let raw = commits.is_some().then(|| x0.clone());
        let (x0, tokens) = project::project_step(
            run,
            x0,
            logits.as_ref(),
            progress,
            held.as_ref().or(pins),
            raw.is_some(),
        )?;
        if let (Some(ids), Some(raw), Some(tokens)) = (&mut commits, raw, tokens) {
            let target = (run.length * (start - i) + start / 2) / start;
            commit(run, ids, tokens, &raw, logits.as_ref(), target)?;
        }
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
    match commits {
        Some(ids) => project::round(run, &x, Some(&Pins::new(model, ids, pad)?)),
        None => project::round(run, &x, pins),
    }
}

/// Commits, in each row, the not yet committed positions the denoiser is surest of until
/// `target` positions are held: each takes its token in the step's projection (`tokens`), and
/// the denoiser's log-probability of that token (from its `logits`, or the rounding head on the
/// `raw` prediction) ranks them.
fn commit(
    run: &Run,
    ids: &mut [Vec<Option<u32>>],
    tokens: Vec<Vec<u32>>,
    raw: &Tensor,
    logits: Option<&Tensor>,
    target: usize,
) -> Result<()> {
    let model = &run.lm.model;
    let scores = match logits {
        Some(z) => z.clone(),
        None => model.logits(raw)?,
    };
    let (b, l) = (tokens.len(), run.length);
    let picked = Tensor::from_vec(tokens.concat(), (b, l, 1), scores.device())?;
    let logp = candle_nn::ops::log_softmax(&scores, candle_core::D::Minus1)?;
    let confidence = logp.gather(&picked, 2)?.squeeze(2)?.to_vec2::<f32>()?;
    for ((row, conf), toks) in ids.iter_mut().zip(&confidence).zip(&tokens) {
        commit_row(row, toks, conf, target);
    }
    Ok(())
}

/// Holds `tokens` at the free positions of `row` with the highest `confidence` (log-probability)
/// until `target` positions are held. Confidences are compared at a resolution of 1e-3 nats and
/// ties go to the earlier position, so near-certain tokens are committed left to right.
///
/// Both halves of that rule were measured (`docs/results.md`): ranked exactly (the surest
/// first), fewer sentences read grammatical; committed in plain left-to-right order, or with
/// coarser ties (0.1 nats), fewer still. The resolution also
/// keeps the order from depending on the last bits of batched products.
fn commit_row(row: &mut [Option<u32>], tokens: &[u32], confidence: &[f32], target: usize) {
    let held = row.iter().filter(|h| h.is_some()).count();
    if held >= target {
        return;
    }
    let mut free: Vec<usize> = (0..row.len()).filter(|&p| row[p].is_none()).collect();
    let key = |p: usize| (confidence[p] * 1e3).round();
    free.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
    for &p in free.iter().take(target - held) {
        row[p] = Some(tokens[p]);
    }
}

#[cfg(test)]
mod tests {
    use super::commit_row;

    #[test]
    fn commits_go_to_the_surest_free_positions_up_to_the_target() {
        let tokens = [10, 11, 12, 13, 14];
        let confidence = [-0.5, -0.1, -3.0, -0.1, -0.2];
        let mut row = vec![None, None, None, Some(7), None];
        commit_row(&mut row, &tokens, &confidence, 1);
        assert_eq!(row, [None, None, None, Some(7), None], "the target is already held");
        commit_row(&mut row, &tokens, &confidence, 3);
        // Position 3 is held with its own token; of the free ones, 1 and 4 are surest.
        assert_eq!(row, [None, Some(11), None, Some(7), Some(14)]);
        commit_row(&mut row, &tokens, &confidence, 9);
        assert_eq!(row, [Some(10), Some(11), Some(12), Some(7), Some(14)]);
    }

    #[test]
    fn near_certain_tokens_are_committed_left_to_right() {
        let tokens = [10, 11, 12, 13];
        // Within 1e-3 nats of each other: the earliest goes first, though the last is surest.
        let confidence = [-0.0004, -2.0, -0.0003, -0.00001];
        let mut row = vec![None; 4];
        commit_row(&mut row, &tokens, &confidence, 2);
        assert_eq!(row, [Some(10), None, Some(12), None]);
    }
}
