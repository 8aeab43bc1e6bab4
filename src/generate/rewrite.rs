//! Finishing stages that rewrite finished sequences by **inpainting**: the whole sequence is
//! noised back to an intermediate level and denoised again with some tokens held fixed.
//!
//! * Rewrite ([`crate::generate::Rewrite`]): the positions a repair still names, with a margin,
//!   are freed; a round is kept only when the fault score falls.
//! * Self-correction ([`crate::generate::SelfCorrect`]): the tokens the model itself doubts are
//!   freed; a round is kept only when the model finds the sequence likelier.

use candle_core::{DType, Tensor};
use rand::rngs::StdRng;

use crate::generate::denoise::denoise;
use crate::generate::project::Pins;
use crate::generate::seeds::{derive, sample_rng, Stream};
use crate::generate::{repair, Run};
use crate::nn::Mode;
use crate::steer::{RepairContext, RepairPhase};
use crate::Result;

/// A score per row and position.
type TokenScores = Vec<Vec<f64>>;

/// Tokens to the sides of each flagged position that a rewrite frees as well, so a fault can be
/// mended by changing its neighbours (a missing quote belongs to the token before it).
const REWRITE_MARGIN: usize = 1;

/// Of a schedule of `len` steps, how many make up its last `share` (at least 1).
fn steps_for_share(len: usize, share: f64) -> usize {
    ((len as f64 * share).round() as usize).clamp(1, len)
}

/// `row`'s tokens held, except at the flagged positions and [`REWRITE_MARGIN`] on each side.
fn free_around(row: &[u32], flagged: &[usize]) -> Vec<Option<u32>> {
    let mut held: Vec<Option<u32>> = row.iter().map(|&t| Some(t)).collect();
    let last = row.len().saturating_sub(1);
    for &p in flagged {
        for h in &mut held[p.saturating_sub(REWRITE_MARGIN)..=(p + REWRITE_MARGIN).min(last)] {
            *h = None;
        }
    }
    held
}

/// The rewrite rounds over finished rows (`indices` are their sample indices).
pub(crate) fn rewrite_rows(run: &Run, rows: &mut [Vec<u32>], seed: u64, indices: &[usize]) -> Result<()> {
    let num_steps = run.sampler.schedule().len();
    let cfg = run.cfg.rewrite;
    for round in 0..cfg.rounds {
        // Later rounds start noisier: a fault that a light rewrite cannot mend (text of the
        // wrong form altogether) needs more of the sequence's shape to change.
        let from = cfg.from + (1.0 - cfg.from) * round as f64 / cfg.rounds as f64;
        let ctx = RepairContext {
            phase: RepairPhase::Rewrite { round },
            step: 0,
            num_steps,
            index: run.lm.token_index(),
            tokenizer: &run.lm.tokenizer,
        };
        // (row, faults, held tokens)
        let mut todo: Vec<(usize, f64, Vec<Option<u32>>)> = Vec::new();
        for (r, row) in rows.iter().enumerate() {
            let flagged = repair::flagged_positions(run, &ctx, row)?;
            if !flagged.is_empty() {
                todo.push((r, repair::fault_score(run, &ctx, row)?, free_around(row, &flagged)));
            }
        }
        if todo.is_empty() {
            break;
        }
        let round_seed = derive(seed, Stream::Rewrite(round));
        let targets: Vec<(usize, Vec<Option<u32>>)> = todo.iter().map(|(r, _, h)| (indices[*r], h.clone())).collect();
        let fresh = inpaint(run, targets, None, from, round_seed)?;
        for ((r, before, _), new) in todo.iter().zip(fresh) {
            if repair::fault_score(run, &ctx, &new)? < *before {
                rows[*r] = new;
            }
        }
    }
    Ok(())
}

/// Self-correction over finished rows (`indices` are their sample indices).
pub(crate) fn self_correct_rows(run: &Run, rows: &mut [Vec<u32>], seed: u64, indices: &[usize]) -> Result<()> {
    let cfg = run.cfg.self_correct;
    let pad = run.lm.tokenizer.pad_id();
    for round in 0..run.self_correct_rounds {
        let probe_seed = derive(seed, Stream::Probe(round));
        let (logp, doubt) = token_log_probs(run, rows, indices, probe_seed)?;
        let mut todo: Vec<(usize, f64, Vec<Option<u32>>)> = Vec::new();
        for (r, row) in rows.iter().enumerate() {
            // Doubtful tokens: content tokens (and the first PAD, where the text ends) that
            // the model itself finds unlikely in their context.
            let end = row.iter().position(|&t| t == pad).unwrap_or(row.len());
            let flagged: Vec<usize> = (0..(end + 1).min(row.len()))
                .filter(|&p| doubt[r][p] < cfg.threshold.ln())
                .collect();
            if !flagged.is_empty() {
                let nll = -logp[r].iter().sum::<f64>();
                todo.push((r, nll, free_around(row, &flagged)));
            }
        }
        if todo.is_empty() {
            break;
        }
        let round_seed = derive(seed, Stream::Correction(round));
        let targets: Vec<(usize, Vec<Option<u32>>)> = todo.iter().map(|(r, _, h)| (indices[*r], h.clone())).collect();
        // Start from the doubted tokens themselves: the model disagrees with them at this
        // noise level, so a light edit moves them, and the start stays in distribution.
        let starts: Vec<Vec<u32>> = todo.iter().map(|(r, _, _)| rows[*r].clone()).collect();
        let fresh = inpaint(run, targets, Some(starts), run.cfg.rewrite.from, round_seed)?;
        // Keep a rewrite only if the model finds the whole sequence likelier, under the
        // same probe noise.
        let picked: Vec<usize> = todo.iter().map(|(r, _, _)| indices[*r]).collect();
        let (after, _) = token_log_probs(run, &fresh, &picked, probe_seed)?;
        for (((r, before, _), new), lp) in todo.iter().zip(fresh).zip(after) {
            if -lp.iter().sum::<f64>() < *before {
                rows[*r] = new;
            }
        }
    }
    Ok(())
}

/// Per row and position, the model's log-probability of the row's own token when the sequence
/// is noised to the level of the rewrite's first round and denoised in one prediction (the
/// softmax head's logits, or the rounding head on the prediction, [`crate::Denoiser::logits`]),
/// and the *doubt*: that log-probability minus the most
/// likely token's (0 when the model would pick the same token). The probe noise is seeded per
/// sample.
fn token_log_probs(
    run: &Run,
    rows: &[Vec<u32>],
    sample_indices: &[usize],
    probe_seed: u64,
) -> Result<(TokenScores, TokenScores)> {
    let model = &run.lm.model;
    let schedule = run.sampler.schedule();
    let (l, d) = (run.length, run.lm.config.embed_dim);
    let batch = run.cfg.batch_size;
    let step = steps_for_share(schedule.len(), run.cfg.rewrite.from) - 1;
    let ab = schedule.alphas_cumprod()[step];
    let (mut out, mut doubt) = (Vec::with_capacity(rows.len()), Vec::with_capacity(rows.len()));
    for (chunk, samples) in rows.chunks(batch).zip(sample_indices.chunks(batch)) {
        let flat: Vec<u32> = chunk.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat, (chunk.len(), l), model.device())?;
        let mut rngs: Vec<StdRng> = samples.iter().map(|&i| sample_rng(probe_seed, i)).collect();
        let z = crate::nn::standard_normal(&mut rngs, (chunk.len(), l, d), model.device())?;
        let x = ((model.embed(&ids)? * ab.sqrt())? + (z * (1.0 - ab).sqrt())?)?;
        let t = vec![schedule.timesteps()[step]; chunk.len()];
        let (x0, logits) = model.forward_with_logits(&x, &t, &mut Mode::Infer)?;
        let logits = match logits {
            Some(z) => z,
            None => model.logits(&x0)?,
        };
        let logp = candle_nn::ops::log_softmax(&logits, candle_core::D::Minus1)?;
        let picked = logp.gather(&ids.unsqueeze(2)?, 2)?.squeeze(2)?;
        let best = logp.max(candle_core::D::Minus1)?;
        doubt.extend((&picked - best)?.to_dtype(DType::F64)?.to_vec2::<f64>()?);
        out.extend(picked.to_dtype(DType::F64)?.to_vec2::<f64>()?);
    }
    Ok((out, doubt))
}

/// Rewrites sequences by inpainting: for each `(sample index, held tokens)`, the whole sequence
/// is noised to the level of the last `from` share of the steps, and the reverse process runs
/// with the held tokens pinned. The free positions start from `starts`' tokens when given (a
/// light edit of them), else from the mean embedding (they are discarded, and the denoiser
/// writes them from the held context alone). Noise is seeded per sample and `round_seed`,
/// independent of the batch's make-up.
fn inpaint(
    run: &Run,
    targets: Vec<(usize, Vec<Option<u32>>)>,
    starts: Option<Vec<Vec<u32>>>,
    from: f64,
    round_seed: u64,
) -> Result<Vec<Vec<u32>>> {
    let model = &run.lm.model;
    let schedule = run.sampler.schedule();
    let (l, d) = (run.length, run.lm.config.embed_dim);
    let batch = run.cfg.batch_size;
    let start = steps_for_share(schedule.len(), from);
    let mut out = Vec::with_capacity(targets.len());
    for (c, chunk) in targets.chunks(batch).enumerate() {
        run.bar.inc_length(start as u64);
        let pins = Pins::new(
            model,
            chunk.iter().map(|(_, held)| held.clone()).collect(),
            run.lm.tokenizer.pad_id(),
        )?;
        let current = match &starts {
            Some(rows) => {
                let rows = &rows[c * batch..c * batch + chunk.len()];
                let flat: Vec<u32> = rows.iter().flatten().copied().collect();
                model.embed(&Tensor::from_vec(flat, (chunk.len(), l), model.device())?)?
            }
            None => {
                let mean_embedding = model.embeddings().mean_keepdim(0)?.reshape((1, 1, d))?;
                pins.apply(&mean_embedding.broadcast_as((chunk.len(), l, d))?.contiguous()?)?
            }
        };
        let mut rngs: Vec<StdRng> = chunk.iter().map(|(i, _)| sample_rng(round_seed, *i)).collect();
        let ab = schedule.alphas_cumprod()[start - 1];
        let z = crate::nn::standard_normal(&mut rngs, (chunk.len(), l, d), model.device())?;
        let x = ((current * ab.sqrt())? + (z * (1.0 - ab).sqrt())?)?;
        out.extend(denoise(run, x, start, Some(&pins), &mut rngs)?);
    }
    Ok(out)
}
