//! How natural the model finds a finished sequence, for best-of selection
//! ([`crate::GenerationConfig::best_of`]).
//!
//! With a model trained with clean context ([`crate::ModelConfig::clean_context`]) a sequence is
//! read as a masked model reads it: its positions are split into [`GROUPS`] interleaved groups,
//! and for each group one forward pass noises that group's positions to the probe level while
//! the rest stay as clean embeddings (marked as time 0); each token is scored by the model's
//! log-probability of it there. The score is the mean over the content tokens and the first PAD
//! (where the text ends). Without clean context, one pass noises every position to the probe
//! level. Costs [`GROUPS`] forward passes (one without clean context) per batch of rows.

use candle_core::{DType, Tensor, D};
use rand::rngs::StdRng;

use crate::engine::lm::DiffusionLm;
use crate::generate::seeds::sample_rng;
use crate::nn::Mode;
use crate::{Error, Result};

/// How many interleaved groups of positions are noised in turn.
pub(crate) const GROUPS: usize = 4;

/// The probe's noise level as a share of the model's diffusion steps: near pure noise, so a
/// token is read from its context, as a masked model reads a masked position. Against blind
/// readers' judgments of 448 shipped-model texts, levels from 0.5 to 0.99 and 2 to 64 groups
/// told the grammatical and faithful texts from the rest about equally well (`docs/results.md`).
const PROBE_SHARE: f64 = 0.9;

/// A token's log-probability is floored here, so one impossible token does not decide a score.
const FLOOR: f64 = -30.0;

/// Per row, the mean log-probability of its content tokens and first PAD, each read with its
/// group noised and the rest clean. `indices` are the rows' sample indices and `seed` the
/// probe's seed: the probe noise is drawn per sample, so a score does not depend on the batch.
pub(crate) fn naturalness(
    lm: &DiffusionLm,
    rows: &[Vec<u32>],
    indices: &[usize],
    seed: u64,
    batch: usize,
) -> Result<Vec<f64>> {
    let model = &lm.model;
    let cfg = &lm.config;
    let pad = lm.tokenizer.pad_id();
    let t_probe = ((cfg.diffusion_steps as f64 * PROBE_SHARE) as usize).min(cfg.diffusion_steps - 1);
    let ab = cfg.schedule.schedule(cfg.diffusion_steps)?.alphas_cumprod()[t_probe];
    let groups = if cfg.clean_context { GROUPS } else { 1 };
    let mut out = Vec::with_capacity(rows.len());
    for (chunk, samples) in rows.chunks(batch.max(1)).zip(indices.chunks(batch.max(1))) {
        let (b, l) = (chunk.len(), chunk[0].len());
        let d = cfg.embed_dim;
        let flat: Vec<u32> = chunk.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat, (b, l), model.device())?;
        let emb = model.embed(&ids)?;
        let mut rngs: Vec<StdRng> = samples.iter().map(|&i| sample_rng(seed, i)).collect();
        let z = crate::nn::standard_normal(&mut rngs, (b, l, d), model.device())?;
        let noisy = ((&emb * ab.sqrt())? + (z * (1.0 - ab).sqrt())?)?;
        let mut own = vec![vec![0f64; l]; b];
        for g in 0..groups {
            // 1 where the position is read clean; the group's positions are noised.
            let clean: Vec<f32> = (0..b * l)
                .map(|k| if groups > 1 && k % l % groups != g { 1.0 } else { 0.0 })
                .collect();
            let clean = Tensor::from_vec(clean, (b, l, 1), model.device())?;
            let x = (emb.broadcast_mul(&clean)? + noisy.broadcast_mul(&clean.affine(-1.0, 1.0)?)?)?;
            let t = vec![t_probe; b];
            let (x0, logits) = if cfg.clean_context {
                model.forward_with_context(&x, &t, Some(&clean), &mut Mode::Infer)?
            } else {
                model.forward_with_logits(&x, &t, &mut Mode::Infer)?
            };
            let logits = match logits {
                Some(z) => z,
                None => model.logits(&x0)?,
            };
            let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            let picked = logp.gather(&ids.unsqueeze(2)?, 2)?.squeeze(2)?;
            let picked = picked.to_dtype(DType::F64)?.to_vec2::<f64>()?;
            for (r, row) in picked.iter().enumerate() {
                for p in (0..l).filter(|p| groups == 1 || p % groups == g) {
                    own[r][p] = row[p];
                }
            }
        }
        for (row, lp) in chunk.iter().zip(own) {
            let end = row.iter().position(|&t| t == pad).map_or(row.len(), |e| e + 1);
            let sum: f64 = lp[..end].iter().map(|&v| v.max(FLOOR)).sum();
            out.push(sum / end.max(1) as f64);
        }
    }
    Ok(out)
}

/// Checks rows handed to a naturalness score: each `len` tokens long, every token inside the
/// vocabulary of `vocab` and not `mask` (the masked engine's mask token).
pub(crate) fn check_rows(rows: &[Vec<u32>], len: usize, vocab: usize, mask: Option<u32>) -> Result<()> {
    if let Some((r, row)) = rows.iter().enumerate().find(|(_, row)| row.len() != len) {
        return Err(Error::Sampling(format!(
            "sequence {r} has {} tokens; this generator's span is {len}",
            row.len()
        )));
    }
    let bad = |t: u32| t as usize >= vocab || Some(t) == mask;
    if let Some((r, &t)) = rows
        .iter()
        .enumerate()
        .find_map(|(r, row)| row.iter().find(|&&t| bad(t)).map(|t| (r, t)))
    {
        let what = if mask.is_some() {
            "the mask token or outside"
        } else {
            "outside"
        };
        return Err(Error::Sampling(format!(
            "sequence {r} holds token {t}: {what} the vocabulary of {vocab}"
        )));
    }
    Ok(())
}

/// A best-of score, with an empty text (PAD first) ranked below every text that is not: its
/// mean log-probability is that of one PAD, which the model may find likely.
pub(crate) fn unless_empty(score: f64, row: &[u32], pad: u32) -> f64 {
    if row.first().is_none_or(|&t| t == pad) {
        f64::MIN
    } else {
        score
    }
}

#[cfg(test)]
mod tests {
    use super::unless_empty;

    #[test]
    fn an_empty_text_ranks_below_every_other_but_above_a_failed_check() {
        let pad = 0;
        assert_eq!(unless_empty(-3.5, &[7, 9, 0, 0], pad), -3.5);
        let empty = unless_empty(-0.01, &[0, 0, 0, 0], pad);
        assert!(empty < -1e300 && empty > f64::NEG_INFINITY);
        assert_eq!(unless_empty(-0.01, &[], pad), empty);
    }
}
