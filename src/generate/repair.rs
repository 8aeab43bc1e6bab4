//! The repair hook: during the reverse process, the positions the stack's repairs name in the
//! decoded prediction are re-noised, so the denoiser rewrites them from their context in the
//! remaining steps. The same repairs drive the rewrite stage after sampling
//! ([`crate::generate::rewrite`]).

use candle_core::Tensor;
use rand::rngs::StdRng;

use crate::generate::Run;
use crate::steer::{RepairContext, RepairPhase};
use crate::Result;

/// Positions of one sequence that the repairs name, sorted and deduplicated.
pub(crate) fn flagged_positions(run: &Run, ctx: &RepairContext, row: &[u32]) -> Result<Vec<usize>> {
    let text = run.lm.tokenizer.decode_content(row);
    let mut positions = Vec::new();
    for r in run.stack.repairs() {
        positions.extend(
            r.faulty_positions(ctx, &text, row)?
                .into_iter()
                .filter(|&p| p < row.len()),
        );
    }
    positions.sort_unstable();
    positions.dedup();
    Ok(positions)
}

/// The repairs' summed fault scores of a finished sequence.
pub(crate) fn fault_score(run: &Run, ctx: &RepairContext, row: &[u32]) -> Result<f64> {
    let text = run.lm.tokenizer.decode_content(row);
    let mut total = 0.0;
    for r in run.stack.repairs() {
        total += r.fault_score(ctx, &text, row)?;
    }
    Ok(total)
}

/// Re-noises the flagged positions of the latent `x` (the step's output) after step `i`: they
/// return to the marginal of `x_{i-1}` around the mean embedding, `√ᾱ·ē + √(1−ᾱ)·z`.
pub(crate) fn renoise(run: &Run, x: Tensor, x0: &Tensor, i: usize, rngs: &mut [StdRng]) -> Result<Tensor> {
    let model = &run.lm.model;
    let schedule = run.sampler.schedule();
    let alpha_bar = schedule.alpha_bar_prev(i);
    let ids = model.nearest_tokens(x0)?.to_vec2::<u32>()?;
    let ctx = RepairContext {
        phase: RepairPhase::Denoising,
        step: i,
        num_steps: schedule.len(),
        index: run.lm.token_index(),
        tokenizer: &run.lm.tokenizer,
    };
    let (b, l, d) = x.dims3()?;
    let mut mask = vec![0f32; b * l];
    let mut any = false;
    for (r, row) in ids.iter().enumerate() {
        for p in flagged_positions(run, &ctx, row)? {
            mask[r * l + p] = 1.0;
            any = true;
        }
    }
    if !any {
        return Ok(x);
    }
    let mask = Tensor::from_vec(mask, (b, l, 1), x.device())?;
    let z = crate::nn::standard_normal(rngs, (b, l, d), x.device())?;
    let mean_embedding = model.embeddings().mean_keepdim(0)?;
    let fresh = (z * (1.0 - alpha_bar).sqrt())?.broadcast_add(&(mean_embedding * alpha_bar.sqrt())?)?;
    let keep = mask.affine(-1.0, 1.0)?;
    Ok((x.broadcast_mul(&keep)? + fresh.broadcast_mul(&mask)?)?)
}
