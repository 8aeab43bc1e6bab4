//! The three roles a controller plays: [`Constraint`] (what must hold), [`Guide`] (what is
//! preferred) and [`Repair`] (what to rewrite). Each is a small trait; a [`crate::steer::Stack`]
//! holds any number of each, and the generation pipeline applies them inside every denoising
//! update.
//!
//! * A **constraint** contributes [`Restriction`]s over token sequences: unary rules (fixed
//!   tokens, banned tokens, a content length) and token automata. It never sees a tensor: the
//!   engine turns its own per-position token scores into the best sequence the restrictions
//!   allow (exact Viterbi over the product automaton, [`crate::steer::projection`]), so the same
//!   constraint serves any engine that scores tokens. Its independent [`Constraint::check`]
//!   verifies every decoded output.
//! * A **guide** is one differentiable objective `log p(c | ·)` per batch row, with a weight, and
//!   says what it reads ([`GuideInput`]): the noisy latent or the denoiser's clean prediction.
//!   The engine builds one differentiable pass per guidance update for all guides together and
//!   differentiates the weighted sum once.
//! * A **repair** names faulty positions of a decoded sequence (a parser's error nodes, say) and
//!   scores how faulty a finished output is; the pipeline re-noises or rewrites those positions.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::steer::automaton::TokenAutomaton;
use crate::steer::token_index::TokenIndex;
use crate::{Error, Result, TextTokenizer};

/// A constraint on individual positions, folded into the scores.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnaryConstraint {
    /// (position, token): the token at that position is fixed.
    pub fixed: Vec<(usize, u32)>,
    /// Tokens that may not appear anywhere in the content.
    pub banned: Vec<u32>,
    /// Inclusive range of the content length in tokens (where the PAD tail starts).
    pub content_len: Option<(usize, usize)>,
}

/// One restriction a [`Constraint`] puts on the token sequence.
#[derive(Debug, Clone)]
pub enum Restriction {
    /// Rules on individual positions.
    Unary(UnaryConstraint),
    /// The content (the tokens before the PAD tail) must be accepted by this automaton.
    Automaton(TokenAutomaton),
}

/// What a constraint sees when it builds its restrictions (once, before sampling).
pub struct ConstraintContext<'a> {
    /// The model's tokenizer.
    pub tokenizer: &'a TextTokenizer,
    /// The vocabulary's byte index, shared by every constraint.
    pub index: &'a TokenIndex,
    /// The sequence length being sampled.
    pub seq_len: usize,
}

/// Why a decoded output fails a constraint's independent check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    message: String,
}

impl CheckError {
    /// A failure described by `message` (what is wrong and where).
    pub fn new(message: impl Into<String>) -> Self {
        CheckError {
            message: message.into(),
        }
    }

    /// What is wrong and where.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CheckError {}

impl From<String> for CheckError {
    fn from(message: String) -> Self {
        CheckError { message }
    }
}

/// A hard constraint: every output satisfies it.
pub trait Constraint: Send + Sync {
    /// A short description for messages, e.g. `regex "[0-9]+"`.
    fn name(&self) -> String;

    /// The restrictions this constraint imposes on sequences of `ctx.seq_len` tokens.
    fn restrictions(&self, ctx: &ConstraintContext) -> Result<Vec<Restriction>>;

    /// Independent check of a decoded output (`text` is the content, `ids` the full sequence),
    /// by other code than the automaton: a failure means the projection let something through.
    fn check(&self, text: &str, ids: &[u32], tokenizer: &TextTokenizer) -> std::result::Result<(), CheckError>;
}

/// What a [`Guide`] reads.
///
/// Diffusion-LM's recipe scores the noisy latent itself ([`GuideInput::Latent`]): the
/// classifier must then judge `x_t` at every noise level, and at high noise it can only guess.
/// [`GuideInput::Prediction`] scores the denoiser's clean prediction `x̂0(x)` instead, and the
/// gradient goes through the denoiser: it asks how the latent should move so that the text the
/// model is about to write expresses `c`. It costs one differentiable denoiser pass (forward and
/// backward) per guidance update, shared by every guide that reads the prediction.
///
/// The masked engine has no latent: its guides read the text as it stands, committed tokens and
/// masks ([`GuideInput::Masked`]), and the gradient against each token's embedding scores every
/// token a masked position could take (see [`crate::masked::MaskedGenerator::guide`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuideInput {
    /// The latent at its noise level.
    #[default]
    #[serde(alias = "Latent")]
    Latent,
    /// The denoiser's clean prediction of the latent.
    #[serde(alias = "Prediction")]
    Prediction,
    /// The masked engine's text as it stands: committed tokens and masks, embedded by the guide's
    /// own table ([`Guide::embeddings`]). Only the masked engine guides on it.
    Masked,
}

impl std::str::FromStr for GuideInput {
    type Err = Error;
    /// `latent`, `prediction` or `masked`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "latent" => Ok(GuideInput::Latent),
            "prediction" => Ok(GuideInput::Prediction),
            "masked" => Ok(GuideInput::Masked),
            other => Err(Error::Config(format!(
                "guidance input {other:?}: expected \"latent\", \"prediction\" or \"masked\""
            ))),
        }
    }
}

/// What a guide sees at a guidance update.
pub struct GuideContext<'a> {
    /// Reverse step index (counting down to 0).
    pub step: usize,
    /// The number of reverse steps.
    pub num_steps: usize,
    /// The model's time index of this step (the noise level of the step's input `x_t`); a guide
    /// reading the latent is asked at this time index, as in Diffusion-LM.
    pub t: usize,
    /// The time index of the guided latent `x_{t-1}` (0 at the last step): the denoiser's
    /// prediction that a [`GuideInput::Prediction`] guide reads was made at this noise level.
    pub latent_t: usize,
    /// The word-embedding table `[V, d]` (on the masked engine: the guide's own table
    /// `[V + 1, d]`).
    pub embeddings: &'a Tensor,
    /// On the masked engine, the share of the text's positions still masked (1 at the first
    /// step); 0 on the continuous engine.
    pub masked_fraction: f64,
}

/// A soft preference: a differentiable objective the guidance update ascends.
pub trait Guide: Send + Sync {
    /// A short description for messages, e.g. `attribute food=Italian`.
    fn name(&self) -> String;

    /// What [`Guide::log_prob`] reads.
    fn reads(&self) -> GuideInput;

    /// The weight `w` of this guide's term in the objective.
    fn weight(&self) -> f64 {
        1.0
    }

    /// `log p(c | input)` per batch row, `[B]`, built from differentiable candle ops (no fused
    /// kernels; see [`crate::nn::Mode`]). `input` `[B, L, d]` is the latent, or the denoiser's
    /// prediction of it, as [`Guide::reads`] says.
    fn log_prob(&self, input: &Tensor, ctx: &GuideContext) -> Result<Tensor>;

    /// The token embeddings `[V + 1, d]` of a guide that reads [`GuideInput::Masked`] (the last
    /// row is the mask): the masked engine embeds its text with them and reads the gradient
    /// against them (see [`crate::masked::MaskedGenerator::guide`]). The continuous engine uses
    /// its model's table. Default: none.
    fn embeddings(&self) -> Option<Tensor> {
        None
    }
}

/// When a repair is asked (see [`Repair::faulty_positions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairPhase {
    /// During the reverse process: the named positions are re-noised to the step's noise level.
    Denoising,
    /// After it, on the finished output (round `round`, from 0): the named positions, with a
    /// margin, are rewritten by a short reverse process while every other token stays fixed.
    Rewrite {
        /// The rewrite round, from 0.
        round: usize,
    },
}

/// What a repair sees.
pub struct RepairContext<'a> {
    /// During or after the reverse process.
    pub phase: RepairPhase,
    /// Reverse step index (counting down to 0; 0 in the rewrite phase).
    pub step: usize,
    /// The number of reverse steps.
    pub num_steps: usize,
    /// The vocabulary's byte index.
    pub index: &'a TokenIndex,
    /// The model's tokenizer.
    pub tokenizer: &'a TextTokenizer,
}

impl RepairContext<'_> {
    /// The token position holding byte `offset` of the decoded content of `ids` (the last content
    /// position for an offset at or past the end).
    pub fn position_of_byte(&self, ids: &[u32], offset: usize) -> usize {
        let pad = self.index.pad_id();
        let mut end = 0;
        let mut last = 0;
        for (p, &id) in ids.iter().enumerate() {
            if id == pad {
                break;
            }
            last = p;
            end += self.index.bytes(id).len();
            if offset < end {
                return p;
            }
        }
        last
    }
}

/// Names the positions of a decoded sequence that should be rewritten from their context.
pub trait Repair: Send + Sync {
    /// A short description for messages, e.g. `syntax tree json`.
    fn name(&self) -> String;

    /// Positions of one sequence (`text`, decoded from `ids`) to rewrite; empty when nothing is
    /// wrong. During the reverse process the pipeline re-noises them (in the decoded prediction
    /// of every step); after it, it rewrites them by inpainting with everything else held and
    /// keeps a rewrite only when [`Repair::fault_score`] falls.
    fn faulty_positions(&self, ctx: &RepairContext, text: &str, ids: &[u32]) -> Result<Vec<usize>>;

    /// How faulty a finished output is (lower is better, 0 when nothing is wrong). By default,
    /// the number of positions [`Repair::faulty_positions`] names; override it when faults have
    /// an order of importance that counting does not capture.
    fn fault_score(&self, ctx: &RepairContext, text: &str, ids: &[u32]) -> Result<f64> {
        Ok(self.faulty_positions(ctx, text, ids)?.len() as f64)
    }
}
