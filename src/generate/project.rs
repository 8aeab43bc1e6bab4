//! The projection hook: how each step's prediction `x0` is snapped to tokens.
//!
//! Without hard constraints, the **clamping trick** snaps every predicted vector to its nearest
//! word embedding. With them, every position's token scores `s[p][v] = −‖x0_p − E_v‖²` (the
//! clamping criterion; tokens a unary rule forbids get `−∞`) are projected onto the constraint
//! set: the best-scoring sequence the product automaton accepts with a PAD tail
//! ([`best_sequence`], exact Viterbi), and `x0` becomes that sequence's embeddings. The first
//! steps may use the soft projection instead: the expected embedding under the constrained token
//! marginals ([`constrained_marginals`]).
//!
//! A denoiser with the softmax head ([`crate::engine::X0Head::Softmax`]) gives its logits with
//! the prediction; they replace the clamping scores at every step (the final rounding of the
//! latent still uses the nearest embeddings). Snapping the argmax, or the best constrained
//! sequence under the model's own log-probabilities, keeps what the expected embedding
//! blurs: the mean of two likely words' embeddings can lie nearest a third.

use candle_core::Tensor;

use crate::engine::denoiser::Denoiser;
use crate::generate::Run;
use crate::steer::projection::{best_sequence, constrained_marginals};
use crate::steer::PreparedStack;
use crate::{Error, Result};

/// Tokens held fixed while a rewrite pass denoises the rest (see [`crate::generate::rewrite`]).
pub(crate) struct Pins {
    /// Per row and position: the token held there, or `None` where the denoiser writes.
    pub(crate) ids: Vec<Vec<Option<u32>>>,
    /// `[b, l, 1]`: 1 where a token is held.
    mask: Tensor,
    /// `[b, l, d]`: the held tokens' embeddings (PAD's where nothing is held).
    embeddings: Tensor,
}

impl Pins {
    pub(crate) fn new(model: &Denoiser, ids: Vec<Vec<Option<u32>>>, pad: u32) -> Result<Self> {
        let (b, l) = (ids.len(), ids.first().map_or(0, Vec::len));
        let device = model.device();
        let mask: Vec<f32> = ids
            .iter()
            .flatten()
            .map(|t| if t.is_some() { 1.0 } else { 0.0 })
            .collect();
        let held: Vec<u32> = ids.iter().flatten().map(|t| t.unwrap_or(pad)).collect();
        let embeddings = model.embed(&Tensor::from_vec(held, (b, l), device)?)?;
        let mask = Tensor::from_vec(mask, (b, l, 1), device)?;
        Ok(Pins { ids, mask, embeddings })
    }

    /// `[b, l, 1]`: 1 where a token is held.
    pub(crate) fn mask(&self) -> &Tensor {
        &self.mask
    }

    /// `x0` with the held positions replaced by their tokens' embeddings.
    pub(crate) fn apply(&self, x0: &Tensor) -> Result<Tensor> {
        let keep = self.mask.affine(-1.0, 1.0)?;
        Ok((x0.broadcast_mul(&keep)? + self.embeddings.broadcast_mul(&self.mask)?)?)
    }

    /// Scores of row `r` with every token but the held one forbidden at held positions (unless
    /// the held token is itself forbidden there, which leaves the position free).
    fn restrict(&self, r: usize, scores: &[f32], v: usize) -> Vec<f32> {
        let mut out = scores.to_vec();
        for (p, held) in self.ids[r].iter().enumerate() {
            if let Some(t) = held {
                let slot = &mut out[p * v..(p + 1) * v];
                if slot[*t as usize].is_finite() {
                    let keep = slot[*t as usize];
                    slot.fill(f32::NEG_INFINITY);
                    slot[*t as usize] = keep;
                }
            }
        }
        out
    }

    /// Every held token written over `ids`.
    pub(crate) fn hold(&self, ids: &mut [Vec<u32>]) {
        for (row, held) in ids.iter_mut().zip(&self.ids) {
            for (id, h) in row.iter_mut().zip(held) {
                if let Some(t) = h {
                    *id = *t;
                }
            }
        }
    }
}

/// The projection of one step's prediction, as the run's settings and the step's progress say.
/// `logits`, when the denoiser gives them, score the tokens instead of the clamping criterion.
/// With `want_ids`, also the tokens the projection snapped to (held ones included), where it
/// snapped to tokens (not in the soft projection, nor without clamping).
pub(crate) fn project_step(
    run: &Run,
    x0: Tensor,
    logits: Option<&Tensor>,
    progress: f64,
    pins: Option<&Pins>,
    want_ids: bool,
) -> Result<(Tensor, Option<Vec<Vec<u32>>>)> {
    let prepared = run.prepared;
    let model = &run.lm.model;
    let scores = || match logits {
        Some(z) => Ok(z.clone()),
        None => model.clamp_scores(&x0),
    };
    let rows = |ids: Tensor| -> Result<Option<Vec<Vec<u32>>>> {
        Ok(if want_ids { Some(ids.to_vec2::<u32>()?) } else { None })
    };
    let (x0, mut ids) = if prepared.has_hard && progress < run.cfg.soft_projection.fraction {
        (soft_project(run, scores()?)?, None)
    } else if prepared.has_hard {
        let (ids, x0) = project(run, scores()?, pins)?;
        (x0, want_ids.then_some(ids))
    } else if run.cfg.clamp {
        let ids = match logits {
            Some(z) => z.argmax(candle_core::D::Minus1)?,
            None => model.nearest_tokens(&x0)?,
        };
        (model.embed(&ids)?, rows(ids)?)
    } else {
        (x0, None)
    };
    match pins {
        Some(p) => {
            if let Some(ids) = &mut ids {
                p.hold(ids);
            }
            Ok((p.apply(&x0)?, ids))
        }
        None => Ok((x0, ids)),
    }
}

/// Rounds the final latent to tokens: the exact projection with hard constraints, else the
/// nearest embeddings; held tokens are kept.
pub(crate) fn round(run: &Run, x: &Tensor, pins: Option<&Pins>) -> Result<Vec<Vec<u32>>> {
    if run.prepared.has_hard {
        return Ok(project(run, run.lm.model.clamp_scores(x)?, pins)?.0);
    }
    let mut ids = run.lm.model.nearest_tokens(x)?.to_vec2::<u32>()?;
    if let Some(p) = pins {
        p.hold(&mut ids);
    }
    Ok(ids)
}

/// Constrained clamping: the best sequence under the token `scores` `[B, L, V]` that satisfies
/// the stack, per row; returns the ids and their embeddings. With `pins`, held tokens are kept
/// wherever the constraints allow it.
fn project(run: &Run, scores: Tensor, pins: Option<&Pins>) -> Result<(Vec<Vec<u32>>, Tensor)> {
    let model = &run.lm.model;
    let (b, l, _) = scores.dims3()?;
    let v = run.lm.config.vocab_size;
    let pad = run.lm.tokenizer.pad_id();
    let automaton = &run.prepared.automaton;
    let mut ids = Vec::with_capacity(b);
    let device = scores.device().clone();
    for (r, row) in masked_score_rows(scores, run.prepared, l * v)?.into_iter().enumerate() {
        let pinned = pins.and_then(|p| best_sequence(&p.restrict(r, &row, v), l, v, automaton, pad));
        let (seq, _) = pinned
            .or_else(|| best_sequence(&row, l, v, automaton, pad))
            .ok_or_else(|| Error::Unsatisfiable("no sequence satisfies the constraints under these scores".into()))?;
        ids.push(seq);
    }
    let flat: Vec<u32> = ids.iter().flatten().copied().collect();
    let id_tensor = Tensor::from_vec(flat, (b, l), &device)?;
    Ok((ids, model.embed(&id_tensor)?))
}

/// Per batch row, the token scores (`L × V`) plus the stack's unary mask.
fn masked_score_rows(scores: Tensor, prepared: &PreparedStack, row_len: usize) -> Result<Vec<Vec<f32>>> {
    let scores = scores.flatten_all()?.to_vec1::<f32>()?;
    Ok(scores
        .chunks(row_len)
        .map(|row| prepared.masked(row.to_vec()))
        .collect())
}

/// Soft projection: the expected embedding under the constrained token marginals of `scores`
/// `[B, L, V]`, per position.
fn soft_project(run: &Run, scores: Tensor) -> Result<Tensor> {
    let model = &run.lm.model;
    let (b, l, _) = scores.dims3()?;
    let device = scores.device().clone();
    let v = run.lm.config.vocab_size;
    let pad = run.lm.tokenizer.pad_id();
    let temperature = run.cfg.soft_projection.temperature;
    let mut marg = Vec::with_capacity(b * l * v);
    for row in masked_score_rows(scores, run.prepared, l * v)? {
        let m = constrained_marginals(&row, l, v, &run.prepared.automaton, pad, temperature)
            .ok_or_else(|| Error::Unsatisfiable("no sequence satisfies the constraints".into()))?;
        marg.extend(m);
    }
    let marg = Tensor::from_vec(marg, (b * l, v), &device)?;
    let d = run.lm.config.embed_dim;
    Ok(marg.matmul(model.embeddings())?.reshape((b, l, d))?)
}
