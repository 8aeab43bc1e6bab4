//! Sampling from a masked-diffusion model under exact constraints.
//!
//! A run starts from an all-`[MASK]` sequence (tokens fixed in advance are committed from the
//! start) and commits tokens over `steps` steps. Each step:
//!
//! 1. the denoiser gives log-probabilities at every position;
//! 2. every position gets token scores: a committed token scores 0 and every other token `−∞`;
//!    a masked position scores the model's log-probabilities; the constraints' unary rules add
//!    their `−∞`s;
//! 3. over (position × automaton state) of the constraints' product automaton, a [`Lattice`]
//!    holds the distribution of whole sequences under the scores, at the temperature, restricted
//!    to the sequences the constraints accept; one sequence is **sampled** from it (the best one,
//!    [`best_sequence`], at temperature 0);
//! 4. of the masked positions (of the current block, with [`MaskedSampling::block_size`]),
//!    the `k` the remasking order ranks first are committed to the sampled sequence's tokens.
//!    The order's confidence is the lattice's constrained marginal at the sampling temperature
//!    (at temperature 0: the constrained marginal at temperature 1).
//!
//! The sampled sequence is valid and agrees with every committed token, so after a commit it
//! still witnesses a valid completion: no step can commit a token that makes the text
//! impossible to finish, and the final text is valid at any temperature, with no retries. Each
//! output is still re-checked by the constraints' independent validators; what the automata
//! cannot express (repeated free-form JSON keys, `uniqueItems` over unbounded items) is left to
//! that check, and a sample that fails it is redrawn with fresh noise (up to 3 times). With
//! [`MaskedSampling::best_of`] each sample is drawn `k` times, and of the candidates that pass
//! the check the one the model finds most natural is kept ([`MaskedGenerator::naturalness`]).
//!
//! Without hard constraints the positions are independent, as in LLaDA: the marginals are the
//! softmax of the scores, and the sample draws each position from its own.
//!
//! # Guidance
//!
//! Soft control ([`MaskedGenerator::guide`], e.g. an `Attribute` `food = Italian`) uses a
//! classifier of *masked* text: it reads the text as it stands, committed tokens and masks
//! (`diffusion-lm train-classifier --reads masked` trains one; the shipped masked model has one
//! in `models/e2e-masked/classifier`). At each step but a block's last, the first position to
//! commit is not given the sample's token but one of its most likely tokens (up to 8, each at
//! least 5% as likely as the first; the constrained marginals, so each keeps the text
//! completable), drawn with weight `marginal(c) · Π_g p_g(target | text with c)^w_g`: the exact
//! Bayes update of that commit at `w = 1`, sharpened by larger weights. This costs one
//! classifier pass over every row × candidate per step, where two or more candidates are
//! plausible. Best-of also adds `Σ w · log p(target | text)` to each candidate's naturalness.
//! A first-order version (the gradient at each mask against every token's embedding, one pass
//! per step) was measured and did not help (`docs/results.md`): one token changes a partially
//! masked text too much for a linear estimate.
//! With hard constraints, a commit other than the sample's token is committed alone that step
//! (the rest of the sample may not fit it).

use candle_core::{Tensor, D};
use rand::rngs::StdRng;
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::generate::Sample;
use crate::masked::MaskedModel;
use crate::steer::lattice::{content_lengths, draw_linear, free_lengths, Lattice};
use crate::steer::projection::best_sequence;
use crate::steer::{ConstraintContext, PreparedStack, Stack};
use crate::{Error, Result};

/// Redraws of a sample that fails a constraint's independent check (only what an automaton
/// cannot express can fail it), as the continuous engine's default.
const MAX_REDRAWS: usize = 3;

/// Self-correction scores the committed tokens in this many interleaved groups, each masked in
/// one forward pass: a token is judged with three quarters of the text around it.
const REFINE_GROUPS: usize = 4;

/// Guidance weighs this many candidates (the most likely) for each step's first commit.
const GUIDE_CANDIDATES: usize = 8;

/// Guidance weighs only candidates at least this share of the most likely one's probability:
/// at 1%, guided sentences read worse and a few turned into JSON records halfway (blind,
/// `docs/results.md`).
const GUIDE_FLOOR: f64 = 0.05;

/// One row's draw at a step: the sampled sequence, the positions to commit (first-ranked
/// first) and, for a lookahead step, the candidates at the first of them.
struct Drawn {
    sample: Vec<u32>,
    commit: Vec<usize>,
    /// The most likely tokens at the first of them, with their marginal probabilities (most
    /// likely first): for lookahead and guidance.
    cands: Vec<(u32, f64)>,
}

/// What a step may do with PAD at the masked positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pad {
    /// Draw it and commit it: the length settles as the tail is committed.
    Open,
    /// Draw it but commit only content: the step before the lengths are drawn.
    Uncommitted,
    /// Never draw it: the lengths are drawn and the tails committed.
    Closed,
}

/// Which masked positions a step commits first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Remasking {
    /// LLaDA's low-confidence remasking: the positions whose sampled token has the highest
    /// constrained marginal probability.
    #[default]
    LowConfidence,
    /// Uniformly random positions.
    Random,
    /// The positions whose constrained marginal has the lowest entropy (Dream).
    Entropy,
    /// The positions with the largest gap between their two most probable tokens (Dream).
    Margin,
}

impl std::str::FromStr for Remasking {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "low-confidence" => Ok(Remasking::LowConfidence),
            "random" => Ok(Remasking::Random),
            "entropy" => Ok(Remasking::Entropy),
            "margin" => Ok(Remasking::Margin),
            other => Err(Error::Config(format!(
                "remasking {other:?}: expected low-confidence, random, entropy or margin"
            ))),
        }
    }
}

/// How many of a text's least likely tokens, read left to right, [`MaskedSampling::edits`]
/// averages to compare a text with its edits: a slip shows as a few unlikely tokens, which a
/// mean over the whole text dilutes.
pub const EDIT_LOWEST: usize = 5;

/// Settings of a masked-diffusion run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskedSampling {
    /// Steps over which the tokens are committed (at most the sequence length). Default 64.
    pub steps: usize,
    /// Seed: the same seed gives the same text whatever the batch size. Default 0.
    pub seed: u64,
    /// Temperature of the token scores; 0 takes the best sequence. Default 1.
    pub temperature: f32,
    /// Which positions each step commits first.
    pub remasking: Remasking,
    /// Semi-autoregressive blocks: commit the positions block by block, left to right (each
    /// block gets its share of the steps). `None` (default): one block.
    pub block_size: Option<usize>,
    /// Keep only the `k` most probable tokens at each masked position (before the constraints;
    /// a step where that leaves no valid sequence uses every token). `None` (default): all.
    pub top_k: Option<usize>,
    /// Keep only the smallest set of most probable tokens whose probability reaches `p` at each
    /// masked position (nucleus; with the same fallback as `top_k`). `None` (default): all.
    pub top_p: Option<f32>,
    /// Length of the generated span; `None` (default) is the model's (its sequence length, or
    /// 128 tokens for a pretrained model).
    pub length: Option<usize>,
    /// Classifier-free guidance (LLaDA): with a prompt and a scale `w > 0`, the scores are
    /// `u + (w + 1)(c − u)`, `c` with the prompt and `u` with the prompt masked (a second
    /// forward pass per step). Default 0: off.
    pub cfg_scale: f32,
    /// Multiplies every guide's weight ([`MaskedGenerator::guide`]; see the module docs'
    /// *Guidance*): a commit is drawn with weight `marginal(c) · p(target | text with c)^(s·w)`.
    /// At 1 it is the Bayes update, but a classifier of partly masked text is unsure and moves
    /// the text little. Read blind on the shipped model (`docs/results.md`), 6 with candidates
    /// at least 5% as likely as the first reads better than 3 with a 1% floor (which states the
    /// value more often). Default 6.
    pub guidance_scale: f64,
    /// Parallel decoding (Fast-dLLM): besides the positions the schedule commits, each step
    /// also commits every open position whose confidence (its sampled token's constrained
    /// marginal) is at least this, and a block ends as soon as it is committed: `steps` becomes
    /// an upper bound. Low-confidence remasking only. `None` (default): off.
    pub confidence_threshold: Option<f32>,
    /// How many sequences are denoised together (the output does not depend on it). Default 64.
    pub batch_size: usize,
    /// Self-correction after the last step: rounds of masking again the committed tokens the
    /// model, reading the rest of the text, finds unlikely (see `self_correct_threshold`) and
    /// committing them anew under the same constraints. Each round costs 4 forward passes to
    /// score (8 with classifier-free guidance) and one pass per re-masked token, at most
    /// ⌈free positions / 4⌉. The scores are the model's, not the constrained marginals, so a
    /// token the constraints force (a template's literal words) can be re-masked and drawn
    /// again unchanged. Default 0: off ([`crate::masked::MaskedLm::recommended_sampling`]
    /// turns it on).
    pub self_correct: usize,
    /// With `self_correct`: a token is masked again when its probability in context is below this
    /// share of the best token's at its position. Default 0.1.
    pub self_correct_threshold: f32,
    /// One-step lookahead for the first commits under hard constraints: each of the first
    /// `lookahead` steps commits one position (the one the remasking order ranks first), and
    /// chooses its token among its `lookahead_candidates` most probable under the constrained
    /// marginal by `p(c)^(1/T) · Z(c)`, where `Z(c)` is the constrained mass of the rest under
    /// the model's log-probabilities predicted anew with `c` committed (one forward pass per
    /// candidate; every token counts, whatever `top_k` and `top_p`). The lattice multiplies per-position scores as if the masked positions were
    /// independent; the first commits, made with nothing else committed, are where that is
    /// most wrong: the model's positions describe its favourite sentence, so a template's
    /// one-word slot gets the first token of a two-word name (`The`) and then sub-word debris.
    /// Costs `lookahead_candidates` forward passes and lattices per lookahead step. Default 0:
    /// off ([`crate::masked::MaskedLm::recommended_sampling`] turns it on).
    pub lookahead: usize,
    /// Candidates weighed at each lookahead step. Default 4.
    pub lookahead_candidates: usize,
    /// Draw each sample's content length before its words. The first position is committed
    /// (an ordinary step, with lookahead when it is on; nothing is committed if its draw is
    /// PAD; it tells a JSON record from a sentence, whose lengths differ). Then one forward pass gives the model's length distribution
    /// `P(l)` (at each position, the PAD probability is the chance that the content has ended
    /// there; made non-decreasing) and, for every length `l`, `M(l)`: the chance that content
    /// drawn position by position from the model's content tokens is accepted by the
    /// constraints at that length (one forward pass over position × automaton state). The
    /// length is drawn from `P(l) · M(l)` (at the sampling temperature; the most probable at
    /// 0), the PAD tail is committed at once, and no masked position may become PAD
    /// afterwards. Costs two forward passes (and the first commit's lookahead passes), and
    /// saves the steps of the tail.
    ///
    /// Without it, low-confidence remasking commits the tail first, one PAD at a time, and
    /// each step draws the boundary position again, where PAD is one confident token and the
    /// content is spread over many: the tail grows inward and texts come out shorter than the
    /// model's own lengths (on the shipped E2E model, sentences of 11 words against the
    /// corpus's 23; with it, 26). On that small model the shorter texts read better (blind,
    /// `--form sentence`: 25 of 32 grammatical and faithful without it, 10 of 32 with it), and
    /// a template's one-word slot, filled before the length is known, takes the first word of
    /// a two-word name; so it is off by default. Default false.
    pub length_first: bool,
    /// Best of `k`: draw `k` candidates for each sample (each with its own noise; the first is
    /// the one `k = 1` gives) and keep the one the model itself finds most natural
    /// ([`MaskedGenerator::naturalness`]: the mean log-probability of its tokens, each read
    /// with the text around it, as self-correction judges them). Every candidate is a
    /// finished sample that passed the constraints, so the choice keeps validity. Costs `k`
    /// times the run plus 4 forward passes per candidate. Default 1: off.
    pub best_of: usize,
    /// After the last step and self-correction (and again after edits), drop every word token
    /// that repeats the one before it ("located located", "the the") when the text without the
    /// copy still passes the independent checks; the rest moves up and the tail gains a PAD. A masked
    /// model reads each copy with the other in place and finds both likely, so neither
    /// self-correction nor best-of removes them, and forbidding the copy during sampling only
    /// puts another wrong word in its place ("located found"). A word token starts a word (a
    /// leading space, `Ġ` or `▁`) and holds letters only; other repeats (`))`, indentation)
    /// stay. Off with fixed tokens ([`MaskedGenerator::fixed`]), whose positions must hold.
    /// Default false ([`crate::masked::MaskedLm::recommended_sampling`] turns it on).
    pub drop_doubled_words: bool,
    /// Rounds of edits after self-correction (and the doubled words): in each row, the content
    /// token the model finds least likely from its left (predicted with it and everything after
    /// it masked) is kept, deleted (the rest moves up), or given a new token before it (the rest
    /// moves down over one PAD of the tail; the new token committed under the constraints),
    /// whichever reads best left to right: the mean of the [`EDIT_LOWEST`] lowest such
    /// log-probabilities of the text. Self-correction cannot add or remove a position, so a
    /// missing word ("The Cricketers a coffee shop") stays missing without it. An edit that
    /// breaks the independent checks is not made. The end of the text is not read, so deleting
    /// the last content token never reads worse. The first round costs two left-to-right
    /// readings (one forward pass per content position, for the rows and for their edits), each
    /// later round one (the readings of the texts kept are reused), plus one pass per inserted
    /// token; every row gets every round. Off with fixed tokens. Default 0
    /// ([`crate::masked::MaskedLm::recommended_sampling`] runs 2).
    pub edits: usize,
}

impl Default for MaskedSampling {
    fn default() -> Self {
        MaskedSampling {
            steps: 64,
            seed: 0,
            temperature: 1.0,
            remasking: Remasking::LowConfidence,
            block_size: None,
            top_k: None,
            top_p: None,
            length: None,
            cfg_scale: 0.0,
            guidance_scale: 6.0,
            confidence_threshold: None,
            batch_size: 64,
            self_correct: 0,
            self_correct_threshold: 0.1,
            lookahead: 0,
            lookahead_candidates: 4,
            length_first: false,
            best_of: 1,
            drop_doubled_words: false,
            edits: 0,
        }
    }
}

/// Builder for a masked-diffusion run: a model, its settings and a stack of constraints.
pub struct MaskedGenerator<'m> {
    lm: &'m dyn MaskedModel,
    cfg: MaskedSampling,
    stack: Stack,
    fixed: Vec<(usize, u32)>,
    prompt: Vec<u32>,
    /// Forward passes run so far (each serves every row of a batch).
    passes: std::sync::atomic::AtomicUsize,
    /// [`Self::word_tokens`], once computed.
    word_tokens: std::sync::OnceLock<Vec<bool>>,
    progress: bool,
}

impl<'m> MaskedGenerator<'m> {
    /// A generator with the default settings and no constraint.
    pub fn new(lm: &'m dyn MaskedModel) -> Self {
        Self::with_config(lm, MaskedSampling::default())
    }

    /// A generator with these settings.
    pub fn with_config(lm: &'m dyn MaskedModel, cfg: MaskedSampling) -> Self {
        MaskedGenerator {
            lm,
            cfg,
            stack: Stack::new(),
            fixed: Vec::new(),
            prompt: Vec::new(),
            passes: Default::default(),
            word_tokens: Default::default(),
            progress: false,
        }
    }

    /// Shows a progress bar of finished samples on standard error (off by default).
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Parallel decoding: also commit every position at least this confident (see
    /// [`MaskedSampling::confidence_threshold`]).
    pub fn confidence_threshold(mut self, tau: f32) -> Self {
        self.cfg.confidence_threshold = Some(tau);
        self
    }

    /// The forward passes run by this generator so far (one per step per batch).
    pub fn forward_passes(&self) -> usize {
        self.passes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Prompt tokens: context prepended to the generated span at every step, never constrained
    /// and not part of the output.
    pub fn prompt(mut self, ids: Vec<u32>) -> Self {
        self.prompt = ids;
        self
    }

    /// Length of the generated span in tokens.
    pub fn length(mut self, len: usize) -> Self {
        self.cfg.length = Some(len);
        self
    }

    /// Classifier-free guidance scale (0: off).
    pub fn cfg_scale(mut self, w: f32) -> Self {
        self.cfg.cfg_scale = w;
        self
    }

    /// The multiplier of every guide's weight ([`MaskedSampling::guidance_scale`]).
    pub fn guidance_scale(mut self, s: f64) -> Self {
        self.cfg.guidance_scale = s;
        self
    }

    /// Adds a hard constraint.
    pub fn constrain(mut self, c: impl crate::steer::Constraint + 'static) -> Self {
        self.stack = self.stack.constrain(c);
        self
    }

    /// Adds a guide (soft control): see the module docs' *Guidance*. The guide must read masked
    /// text ([`crate::steer::GuideInput::Masked`]) and carry token embeddings for the model's
    /// vocabulary and the mask ([`crate::steer::Guide::embeddings`]), as an `Attribute` of a
    /// classifier trained with `--reads masked` does; any other is refused when generation
    /// starts.
    pub fn guide(mut self, g: impl crate::steer::Guide + 'static) -> Self {
        self.stack = self.stack.guide(g);
        self
    }

    /// Replaces the stack. Repairs are for the continuous engine: a stack holding one is refused
    /// when generation starts, as is a guide [`Self::guide`] would refuse.
    pub fn stack(mut self, stack: Stack) -> Self {
        self.stack = stack;
        self
    }

    /// Tokens committed before the first step: `(position in the generated span, token)`.
    pub fn fixed(mut self, tokens: Vec<(usize, u32)>) -> Self {
        self.fixed = tokens;
        self
    }

    /// Number of steps.
    pub fn steps(mut self, steps: usize) -> Self {
        self.cfg.steps = steps;
        self
    }

    /// Seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.cfg.seed = seed;
        self
    }

    /// Temperature (0: the best sequence).
    pub fn temperature(mut self, t: f32) -> Self {
        self.cfg.temperature = t;
        self
    }

    /// The commit order.
    pub fn remasking(mut self, r: Remasking) -> Self {
        self.cfg.remasking = r;
        self
    }

    /// Top-k truncation of each position's tokens.
    pub fn top_k(mut self, k: usize) -> Self {
        self.cfg.top_k = Some(k);
        self
    }

    /// Nucleus (top-p) truncation of each position's tokens.
    pub fn top_p(mut self, p: f32) -> Self {
        self.cfg.top_p = Some(p);
        self
    }

    /// Self-correction after the last step: `rounds` of re-committing the tokens whose
    /// probability in context is below `threshold` times the best token's (see
    /// [`MaskedSampling::self_correct`]).
    pub fn self_correct(mut self, rounds: usize, threshold: f32) -> Self {
        self.cfg.self_correct = rounds;
        self.cfg.self_correct_threshold = threshold;
        self
    }

    /// One-step lookahead for the first `steps` commits, weighing `candidates` tokens each (see
    /// [`MaskedSampling::lookahead`]).
    pub fn lookahead(mut self, steps: usize, candidates: usize) -> Self {
        self.cfg.lookahead = steps;
        self.cfg.lookahead_candidates = candidates;
        self
    }

    /// Draw the content length before the words ([`MaskedSampling::length_first`]).
    pub fn length_first(mut self, on: bool) -> Self {
        self.cfg.length_first = on;
        self
    }

    /// Keep the most natural of `k` candidates per sample ([`MaskedSampling::best_of`]).
    pub fn best_of(mut self, k: usize) -> Self {
        self.cfg.best_of = k;
        self
    }

    /// Rounds of edits after self-correction ([`MaskedSampling::edits`]).
    pub fn edits(mut self, rounds: usize) -> Self {
        self.cfg.edits = rounds;
        self
    }

    /// Drop doubled words after sampling ([`MaskedSampling::drop_doubled_words`]).
    pub fn drop_doubled_words(mut self, on: bool) -> Self {
        self.cfg.drop_doubled_words = on;
        self
    }

    /// Semi-autoregressive blocks of `b` positions ([`MaskedSampling::block_size`]).
    pub fn block_size(mut self, b: usize) -> Self {
        self.cfg.block_size = Some(b);
        self
    }

    /// Batch size.
    pub fn batch_size(mut self, b: usize) -> Self {
        self.cfg.batch_size = b.max(1);
        self
    }

    fn span(&self) -> usize {
        self.cfg.length.unwrap_or_else(|| self.lm.default_length())
    }

    fn check(&self) -> Result<PreparedStack> {
        let len = self.span();
        if len == 0 {
            return Err(Error::Sampling("the generated length must be at least 1 token".into()));
        }
        if let Some(max) = self.lm.max_len().filter(|&m| self.prompt.len() + len > m) {
            return Err(Error::Sampling(match self.prompt.len() {
                0 => format!("the generation length {len} exceeds the model's sequence length {max}"),
                p => format!("prompt ({p} tokens) and generation ({len}) exceed the model's sequence length {max}"),
            }));
        }
        if let Some(tau) = self.cfg.confidence_threshold {
            if !(tau > 0.0 && tau <= 1.0) {
                return Err(Error::Config(format!(
                    "the confidence threshold must be in (0, 1], got {tau}"
                )));
            }
            if self.cfg.remasking != Remasking::LowConfidence {
                return Err(Error::Config(
                    "a confidence threshold needs low-confidence remasking (its keys are the confidences)".into(),
                ));
            }
        }
        if !(self.cfg.guidance_scale.is_finite() && self.cfg.guidance_scale >= 0.0) {
            return Err(Error::Config(format!(
                "the guidance scale must be at least 0, got {}",
                self.cfg.guidance_scale
            )));
        }
        if !(self.cfg.cfg_scale.is_finite() && self.cfg.cfg_scale >= 0.0) {
            return Err(Error::Config(format!(
                "the classifier-free guidance scale must be at least 0, got {}",
                self.cfg.cfg_scale
            )));
        }
        let (v, mask) = (self.lm.vocab_size(), self.lm.mask_id());
        if let Some(&t) = self.prompt.iter().find(|&&t| t as usize >= v || t == mask) {
            return Err(Error::Sampling(format!(
                "prompt token {t} is the mask token or outside the vocabulary of {v}"
            )));
        }
        if self.cfg.steps == 0 {
            return Err(Error::Sampling("steps must be at least 1".into()));
        }
        if !(self.cfg.temperature.is_finite() && self.cfg.temperature >= 0.0) {
            return Err(Error::Config(format!(
                "temperature must be at least 0, got {}",
                self.cfg.temperature
            )));
        }
        if self.cfg.top_k == Some(0) {
            return Err(Error::Config("top-k must be at least 1".into()));
        }
        if let Some(p) = self.cfg.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return Err(Error::Config(format!("top-p must be in (0, 1], got {p}")));
        }
        if !(self.cfg.self_correct_threshold > 0.0 && self.cfg.self_correct_threshold <= 1.0) {
            return Err(Error::Config(format!(
                "the self-correction threshold must be in (0, 1], got {}",
                self.cfg.self_correct_threshold
            )));
        }
        if self.cfg.lookahead > 0 && self.cfg.lookahead_candidates == 0 {
            return Err(Error::Config("lookahead needs at least 1 candidate".into()));
        }
        if self.cfg.best_of == 0 {
            return Err(Error::Config("best-of needs at least 1 candidate".into()));
        }
        if self.cfg.block_size == Some(0) {
            return Err(Error::Config("block size must be at least 1".into()));
        }
        for g in self.stack.guides() {
            if g.reads() != crate::steer::GuideInput::Masked {
                return Err(Error::Config(format!(
                    "{}: the masked engine guides only with guides that read masked text (a classifier trained with `--reads masked`)",
                    g.name()
                )));
            }
            let rows = match g.embeddings() {
                Some(table) => table.dims2()?.0,
                None => {
                    return Err(Error::Config(format!(
                        "{}: the guide carries no token embeddings to read the text with",
                        g.name()
                    )))
                }
            };
            if rows != v + 1 {
                return Err(Error::Config(format!(
                    "{}: its token embeddings have {rows} rows, and the model's vocabulary and mask {}; a guide must share the model's tokenizer",
                    g.name(),
                    v + 1
                )));
            }
        }
        if let Some(r) = self.stack.repairs().first() {
            return Err(Error::Config(format!(
                "{}: repair is not available on the masked engine",
                r.name()
            )));
        }
        if let Some(&(p, t)) = self.fixed.iter().find(|&&(p, t)| p >= len || t as usize >= v) {
            return Err(Error::Sampling(format!(
                "fixed token {t} at position {p} is outside the {len}-token sequence or the vocabulary"
            )));
        }
        if !self.stack.is_empty() {
            self.lm.constraint_support()?;
        }
        let ctx = ConstraintContext {
            tokenizer: self.lm.tokenizer(),
            index: self.lm.token_index(),
            seq_len: len,
        };
        self.stack.prepare(&ctx)
    }

    /// Generates `n` samples.
    pub fn generate(&self, n: usize) -> Result<Vec<Sample>> {
        let mut out = Vec::with_capacity(n);
        self.generate_each(n, |batch| {
            out.extend(batch);
            Ok::<(), Error>(())
        })?;
        Ok(out)
    }

    /// Generates `n` samples and hands each batch to `emit` as soon as it is finished and
    /// checked, so that a caller can write samples out while later batches run. An error from
    /// `emit` stops the run and is returned.
    pub fn generate_each<E: From<Error>>(
        &self,
        n: usize,
        mut emit: impl FnMut(Vec<Sample>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let prepared = self.check()?;
        let bar = if self.progress {
            crate::generate::progress_bar(n as u64, "sampling", "samples")
        } else {
            indicatif::ProgressBar::hidden()
        };
        let (pad, len) = (self.lm.pad_id(), self.span());
        // Whether the constraints allow some content in the span: then an empty draw (the PAD
        // tail committed leftwards to the first position, which the model can do) is redrawn.
        let automaton = &prepared.automaton;
        let content = automaton
            .groups(automaton.start())
            .iter()
            .any(|g| automaton.distance(g.to) as usize + 1 <= len);
        let empty = |ids: &[u32]| content && ids.first().is_none_or(|&t| t == pad);
        for start in (0..n).step_by(self.cfg.batch_size.max(1)) {
            let mut out = Vec::with_capacity(self.cfg.batch_size.max(1));
            let indices: Vec<usize> = (start..n.min(start + self.cfg.batch_size.max(1))).collect();
            let rows = self.best_rows(&prepared, &indices)?;
            for (&index, (mut ids, checked)) in indices.iter().zip(rows) {
                // What the automata cannot express (repeated free-form JSON keys, say) is left to
                // the independent check: a sample that fails it is redrawn with fresh noise, and
                // so is an empty one (kept if every redraw is empty too).
                let mut attempt = 0;
                let mut check = checked;
                while check.is_err() || (empty(&ids) && attempt < MAX_REDRAWS) {
                    attempt += 1;
                    if attempt > MAX_REDRAWS {
                        match check {
                            Err(e) => return Err(e.into()),
                            Ok(()) => break,
                        }
                    }
                    let seed = crate::generate::seeds::derive(
                        self.cfg.seed,
                        crate::generate::seeds::Stream::Attempt(attempt as u64),
                    );
                    ids = self.run_batch(&prepared, &[index], seed)?.remove(0);
                    check = self.stack.check(&ids, self.lm.tokenizer());
                }
                out.push(Sample {
                    text: self.lm.tokenizer().decode_content(&ids),
                    ids,
                    redraws: attempt,
                });
            }
            bar.inc(out.len() as u64);
            // Off the terminal while the caller writes the batch.
            bar.suspend(|| emit(out))?;
        }
        bar.finish_and_clear();
        Ok(())
    }

    /// Each sample's row of one batch and its independent check: the run's draw, or with
    /// [`MaskedSampling::best_of`] the most natural candidate that passes the check (the first
    /// draw and its failed check when none passes).
    fn best_rows(&self, prepared: &PreparedStack, indices: &[usize]) -> Result<Vec<(Vec<u32>, Result<()>)>> {
        let checked = |rows: Vec<Vec<u32>>| -> Vec<(Vec<u32>, Result<()>)> {
            rows.into_iter()
                .map(|ids| {
                    let check = self.stack.check(&ids, self.lm.tokenizer());
                    (ids, check)
                })
                .collect()
        };
        let mut best = checked(self.run_batch(prepared, indices, self.cfg.seed)?);
        if self.cfg.best_of <= 1 {
            return Ok(best);
        }
        // A candidate that fails its check never wins, and an empty one only over those: the
        // mean log-probability of an empty text is that of one PAD, which can read as natural.
        let pad = self.lm.pad_id();
        let first: Vec<Vec<u32>> = best.iter().map(|(ids, _)| ids.clone()).collect();
        let mut score: Vec<f64> = self
            .judged(&first)?
            .into_iter()
            .zip(&best)
            .map(|(n, (ids, c))| {
                if c.is_ok() {
                    crate::generate::natural::unless_empty(n, ids, pad)
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect();
        for j in 1..self.cfg.best_of {
            let seed = crate::generate::seeds::derive(self.cfg.seed, crate::generate::seeds::Stream::Candidate(j));
            let rows = self.run_batch(prepared, indices, seed)?;
            let natural = self.judged(&rows)?;
            for (r, ((ids, check), n)) in checked(rows).into_iter().zip(natural).enumerate() {
                let n = crate::generate::natural::unless_empty(n, &ids, pad);
                // Ties keep the earlier candidate: the first draw stays unless another reads
                // strictly better.
                if check.is_ok() && n > score[r] {
                    score[r] = n;
                    best[r] = (ids, check);
                }
            }
        }
        Ok(best)
    }

    /// How natural the model finds each finished sequence (a [`Sample`]'s `ids`: the span's
    /// tokens, PAD tail included) after this generator's prompt: the mean log-probability of
    /// its content tokens and of its first PAD (the end of the text), each predicted with a
    /// quarter of the span masked (interleaved groups, one forward pass each) and the rest in
    /// place. Higher is more natural; [`MaskedSampling::best_of`] keeps the highest. Costs 4
    /// forward passes per batch of rows.
    pub fn naturalness(&self, rows: &[Vec<u32>]) -> Result<Vec<f64>> {
        let (mask, v) = (self.lm.mask_id(), self.lm.vocab_size());
        crate::generate::natural::check_rows(rows, self.span(), v, Some(mask))?;
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(self.cfg.batch_size.max(1)) {
            out.extend(self.natural(chunk)?);
        }
        Ok(out)
    }

    /// What best-of keeps the highest of: [`Self::natural`], plus the guides' term
    /// `Σ w · log p(c | text)` on the finished text when there are guides.
    fn judged(&self, rows: &[Vec<u32>]) -> Result<Vec<f64>> {
        let mut score = self.natural(rows)?;
        if !self.stack.guides().is_empty() && !rows.is_empty() {
            let len = self.span();
            let guide = self.guide_scores(rows.iter().flatten().copied().collect(), len)?;
            for (s, g) in score.iter_mut().zip(guide) {
                *s += g;
            }
        }
        Ok(score)
    }

    /// [`Self::naturalness`] of rows known to be well formed, in one batch.
    fn natural(&self, rows: &[Vec<u32>]) -> Result<Vec<f64>> {
        let (pad, len) = (self.lm.pad_id(), self.span());
        let all: Vec<usize> = (0..len).collect();
        // Content positions and the first PAD; with the lengths drawn first, the PAD tail is not
        // read (the length was chosen before the words).
        let judged = |row: &[u32], p: usize| row[p] != pad || (!self.cfg.length_first && (p == 0 || row[p - 1] != pad));
        Ok(self
            .in_context(rows, &all, judged)?
            .iter()
            .map(|row| {
                let own: Vec<f64> = row.iter().flatten().map(|&(own, _)| own.max(-30.0) as f64).collect();
                if own.is_empty() {
                    0.0
                } else {
                    own.iter().sum::<f64>() / own.len() as f64
                }
            })
            .collect())
    }

    /// Each row's committed tokens at `positions` read in context: for every position `judged`
    /// accepts, the log-probability of its token and of the best token there, with its group of
    /// positions (every 4th of `positions`) masked and the rest of the row in place; `None`
    /// elsewhere. Costs one forward pass per group.
    fn in_context(
        &self,
        rows: &[Vec<u32>],
        positions: &[usize],
        judged: impl Fn(&[u32], usize) -> bool,
    ) -> Result<Vec<Vec<Option<(f32, f32)>>>> {
        let (len, v, mask) = (self.span(), self.lm.vocab_size(), self.lm.mask_id());
        let closed = if self.cfg.length_first { Pad::Closed } else { Pad::Open };
        let mut out = vec![vec![None; positions.len()]; rows.len()];
        for g in 0..REFINE_GROUPS {
            let group: Vec<usize> = (g..positions.len()).step_by(REFINE_GROUPS).collect();
            if group.is_empty() {
                continue;
            }
            let probe: Vec<Vec<u32>> = rows
                .iter()
                .map(|row| {
                    let mut probe = row.clone();
                    for &i in group.iter().filter(|&&i| judged(row, positions[i])) {
                        probe[positions[i]] = mask;
                    }
                    probe
                })
                .collect();
            let logp = self.log_probs(&probe, closed)?;
            self.passes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for (r, row) in rows.iter().enumerate() {
                for &i in group.iter().filter(|&&i| judged(row, positions[i])) {
                    let p = positions[i];
                    let at = &logp[(r * len + p) * v..(r * len + p + 1) * v];
                    let best = at.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    out[r][i] = Some((at[row[p] as usize], best));
                }
            }
        }
        Ok(out)
    }

    /// The steps of one batch (rows are the samples with these indices), under `seed`.
    fn run_batch(&self, prepared: &PreparedStack, indices: &[usize], seed: u64) -> Result<Vec<Vec<u32>>> {
        let len = self.span();
        let mask = self.lm.mask_id();
        let mut rngs: Vec<StdRng> = indices
            .iter()
            .map(|&i| crate::generate::seeds::sample_rng(seed, i))
            .collect();
        let mut rows: Vec<Vec<u32>> = vec![vec![mask; len]; indices.len()];
        for row in &mut rows {
            for &(p, t) in &self.fixed {
                row[p] = t;
            }
        }
        // Lookahead commits made in each row.
        let mut looked = vec![0usize; rows.len()];
        if self.cfg.length_first && len > 0 {
            // The first token (unless it would be PAD), then the length given it (a JSON record
            // and a sentence differ in length), then the rest: one order of the model's
            // conditionals like any other.
            let lookahead = (self.cfg.lookahead > 0 && prepared.has_hard).then_some(&mut looked[..]);
            self.step(prepared, &mut rows, &mut rngs, (0, 1, 1), lookahead, Pad::Uncommitted)?;
            self.draw_lengths(prepared, &mut rows, &mut rngs)?;
        }
        let pad = if self.cfg.length_first { Pad::Closed } else { Pad::Open };
        let block = self.cfg.block_size.unwrap_or(len).min(len);
        let blocks: Vec<(usize, usize)> = (0..len).step_by(block).map(|s| (s, (s + block).min(len))).collect();
        // Every block gets at least one step, and its last step commits what is left.
        let steps = self.cfg.steps.min(len).max(blocks.len());
        // Steps per block: as even as possible.
        let per_block: Vec<usize> = (0..blocks.len())
            .map(|b| steps / blocks.len() + usize::from(b < steps % blocks.len()))
            .collect();
        for (&(lo, hi), &block_steps) in blocks.iter().zip(&per_block) {
            for k in 0..block_steps {
                // A block can finish early (with a confidence threshold, or a tail committed first).
                if !rows.iter().any(|r| r[lo..hi].contains(&mask)) {
                    break;
                }
                // Without hard constraints every completion is valid (Z = 1): no lookahead. A
                // block's last step commits all that is left.
                let lookahead = (self.cfg.lookahead > 0
                    && prepared.has_hard
                    && block_steps - k > 1
                    && looked.iter().any(|&n| n < self.cfg.lookahead))
                .then_some(&mut looked[..]);
                self.step(
                    prepared,
                    &mut rows,
                    &mut rngs,
                    (lo, hi, block_steps - k),
                    lookahead,
                    pad,
                )?;
            }
        }
        for _ in 0..self.cfg.self_correct {
            if !self.refine(prepared, &mut rows, &mut rngs)? {
                break;
            }
        }
        if self.fixed.is_empty() {
            let drop_doubled = |rows: &mut [Vec<u32>]| {
                if self.cfg.drop_doubled_words {
                    for row in rows {
                        self.drop_doubled(row);
                    }
                }
            };
            drop_doubled(&mut rows);
            // Every row gets every round, changed or not: a row's insertions draw from its own
            // stream, so stopping when a whole batch is unchanged would make a row's text
            // depend on the rows batched with it. A round's winners were read while being
            // scored, so the next round starts from those readings.
            let mut read = None;
            for _ in 0..self.cfg.edits {
                let now = match read.take() {
                    Some(now) => now,
                    None => self.left_to_right(&rows)?,
                };
                read = Some(self.edit(prepared, &mut rows, &mut rngs, now)?);
            }
            // Again: an insertion can bring a doubled word back.
            if self.cfg.edits > 0 {
                drop_doubled(&mut rows);
            }
        }
        Ok(rows)
    }

    /// Each row's content tokens read left to right: the log-probability of the token at each
    /// content position with it and everything after it masked (one forward pass per position
    /// of the longest content).
    fn left_to_right(&self, rows: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let (len, v, mask) = (self.span(), self.lm.vocab_size(), self.lm.mask_id());
        let closed = if self.cfg.length_first { Pad::Closed } else { Pad::Open };
        let ends: Vec<usize> = rows.iter().map(|r| self.lm.tokenizer().content_len(r)).collect();
        let mut own: Vec<Vec<f32>> = ends.iter().map(|&e| Vec::with_capacity(e)).collect();
        for i in 0..ends.iter().copied().max().unwrap_or(0) {
            let at_i: Vec<usize> = (0..rows.len()).filter(|&r| i < ends[r]).collect();
            let probe: Vec<Vec<u32>> = at_i
                .iter()
                .map(|&r| {
                    let mut probe = rows[r].clone();
                    probe[i..].fill(mask);
                    probe
                })
                .collect();
            let logp = self.log_probs(&probe, closed)?;
            self.passes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for (k, &r) in at_i.iter().enumerate() {
                own[r].push(logp[(k * len + i) * v + rows[r][i] as usize].max(-30.0));
            }
        }
        Ok(own)
    }

    /// One round of [`MaskedSampling::edits`], given each row's [`Self::left_to_right`] reading;
    /// returns the readings of the rows it leaves.
    fn edit(
        &self,
        prepared: &PreparedStack,
        rows: &mut [Vec<u32>],
        rngs: &mut [StdRng],
        mut read: Vec<Vec<f32>>,
    ) -> Result<Vec<Vec<f32>>> {
        let (len, mask, pad, tok) = (self.span(), self.lm.mask_id(), self.lm.pad_id(), self.lm.tokenizer());
        let score = |lp: &[f32]| -> f64 {
            let mut lp = lp.to_vec();
            lp.sort_by(f32::total_cmp);
            let low = &lp[..lp.len().min(EDIT_LOWEST)];
            low.iter().map(|&x| x as f64).sum::<f64>() / low.len().max(1) as f64
        };
        // (row, edited text) for every edit that passes the checks.
        let mut edits: Vec<(usize, Vec<u32>)> = Vec::new();
        for (r, row) in rows.iter().enumerate() {
            let end = read[r].len();
            // The first token is read with nothing of the text to its left (at most a prompt);
            // it is not judged.
            let Some(p) = (1..end).min_by(|&a, &b| read[r][a].total_cmp(&read[r][b]).then(a.cmp(&b))) else {
                continue;
            };
            let mut deleted = row[..p].to_vec();
            deleted.extend_from_slice(&row[p + 1..]);
            deleted.push(pad);
            if self.stack.check(&deleted, tok).is_ok() {
                edits.push((r, deleted));
            }
            if end < len {
                // A new token before p, committed under the constraints (never PAD).
                let mut inserted = row[..p].to_vec();
                inserted.push(mask);
                inserted.extend_from_slice(&row[p..len - 1]);
                let mut one = [inserted];
                match self.step(prepared, &mut one, &mut rngs[r..=r], (0, len, 1), None, Pad::Closed) {
                    Ok(()) => {
                        let [inserted] = one;
                        if !inserted.contains(&mask) && self.stack.check(&inserted, tok).is_ok() {
                            edits.push((r, inserted));
                        }
                    }
                    Err(Error::Unsatisfiable(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if edits.is_empty() {
            return Ok(read);
        }
        let texts: Vec<Vec<u32>> = edits.iter().map(|(_, t)| t.clone()).collect();
        let edited = self.left_to_right(&texts)?;
        let mut best: Vec<f64> = read.iter().map(|lp| score(lp)).collect();
        for ((r, text), lp) in edits.into_iter().zip(edited) {
            let s = score(&lp);
            // Strictly better: a tie keeps the text as it is.
            if s > best[r] {
                best[r] = s;
                rows[r] = text;
                read[r] = lp;
            }
        }
        Ok(read)
    }

    /// [`MaskedSampling::drop_doubled_words`] on one finished row: the content without its
    /// repeated word tokens, moved up over them, if that still passes the checks.
    fn drop_doubled(&self, row: &mut Vec<u32>) {
        let tok = self.lm.tokenizer();
        if let Some(kept) = crate::text::without_doubled_words(row, self.word_tokens(), tok) {
            if self.stack.check(&kept, tok).is_ok() {
                *row = kept;
            }
        }
    }

    /// One step: a forward pass, and in each row the open positions of `lo..hi` the remasking
    /// order ranks first committed (their share of the `remaining` steps, or more with a
    /// confidence threshold). Rows with no open position in the range are left alone. With
    /// `lookahead` (each row's lookahead commits so far), a row with fewer than
    /// [`MaskedSampling::lookahead`] whose first-ranked token is not PAD commits only that
    /// position, its token chosen by [`Self::look_ahead`] (PAD commits only settle the length;
    /// they do not use up the lookahead). `pad` says what may happen to PAD at masked positions.
    fn step(
        &self,
        prepared: &PreparedStack,
        rows: &mut [Vec<u32>],
        rngs: &mut [StdRng],
        (lo, hi, remaining): (usize, usize, usize),
        lookahead: Option<&mut [usize]>,
        pad: Pad,
    ) -> Result<()> {
        let (len, v, pad_id) = (self.span(), self.lm.vocab_size(), self.lm.pad_id());
        let mask = self.lm.mask_id();
        let logp = self.log_probs(rows, pad)?;
        self.passes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Guidance picks the first commit among its candidates; a block's last step commits
        // all that is left, unguided.
        let guiding = !self.stack.guides().is_empty() && remaining > 1;
        let candidates = match (lookahead.is_some(), guiding) {
            (true, true) => self.cfg.lookahead_candidates.max(GUIDE_CANDIDATES),
            (true, false) => self.cfg.lookahead_candidates,
            (false, true) => GUIDE_CANDIDATES,
            (false, false) => 0,
        };
        // Each row's draw is its own work with its own random stream: rows run in parallel, and
        // the result does not depend on how they are scheduled.
        let drawn: Vec<Option<Drawn>> = rows
            .par_iter()
            .zip(rngs.par_iter_mut())
            .enumerate()
            .map(|(r, (row, rng))| -> Result<Option<Drawn>> {
                let row_logp = &logp[r * len * v..(r + 1) * len * v];
                let open: Vec<usize> = (lo..hi).filter(|&p| row[p] == mask).collect();
                if open.is_empty() {
                    return Ok(None);
                }
                let cut = self.truncated(row_logp, row, len, v);
                let (sample, keys, cands) = if !prepared.has_hard {
                    // Positions are independent: only the open ones need their softmax.
                    let content = (pad == Pad::Uncommitted).then_some(pad_id);
                    self.draw_independent(
                        cut.as_deref().unwrap_or(row_logp),
                        row,
                        &open,
                        (candidates, content),
                        rng,
                    )
                } else {
                    let full = |rng: &mut StdRng| {
                        self.draw(
                            prepared,
                            &self.scores(prepared, row_logp, row, len, v),
                            &open,
                            (candidates, pad),
                            rng,
                        )
                    };
                    match cut {
                        Some(cut) => {
                            match self.draw(
                                prepared,
                                &self.scores(prepared, &cut, row, len, v),
                                &open,
                                (candidates, pad),
                                rng,
                            ) {
                                Ok(drawn) => drawn,
                                // Truncation left no valid sequence: this step uses every token.
                                Err(Error::Unsatisfiable(_)) => full(rng)?,
                                Err(e) => return Err(e),
                            }
                        }
                        None => full(rng)?,
                    }
                };
                let mut count = open.len().div_ceil(remaining);
                if let Some(tau) = self.cfg.confidence_threshold {
                    // Fast-dLLM's parallel decoding: every position at least this confident is
                    // committed too. They all come from one valid sequence.
                    count = count.max(keys.iter().filter(|&&k| k >= tau as f64).count());
                }
                let commit = ranked(&keys, &open)
                    .into_iter()
                    .filter(|&p| pad != Pad::Uncommitted || sample[p] != pad_id)
                    .take(count)
                    .collect();
                Ok(Some(Drawn { sample, commit, cands }))
            })
            .collect::<Result<_>>()?;
        let mut ahead = vec![false; rows.len()];
        if let Some(looked) = lookahead {
            for (r, d) in drawn.iter().enumerate() {
                if let Some(d) = d {
                    if looked[r] < self.cfg.lookahead
                        && !d.cands.is_empty()
                        && d.commit.first().is_some_and(|&p| d.sample[p] != pad_id)
                    {
                        ahead[r] = true;
                        looked[r] += 1;
                    }
                }
            }
        }
        // The candidates guidance weighs at each row's first commit: a lookahead row's own; for
        // the others, those the model finds plausible (at least GUIDE_FLOOR of the most
        // likely's probability, a prefix of the candidates), when there are two or more. Each
        // gets its guide term `Σ w · log p(c | text with it committed)`.
        let guide = if guiding {
            let weighed: Vec<usize> = drawn
                .iter()
                .zip(&ahead)
                .map(|(d, &a)| match d {
                    Some(d) if a => d.cands.len().min(self.cfg.lookahead_candidates),
                    Some(d) => match d.cands.iter().filter(|c| c.1 >= d.cands[0].1 * GUIDE_FLOOR).count() {
                        n if n > 1 => n,
                        _ => 0,
                    },
                    None => 0,
                })
                .collect();
            self.guide_terms(rows, &drawn, &weighed)?
        } else {
            vec![Vec::new(); rows.len()]
        };
        for (r, (row, d)) in rows.iter_mut().zip(&drawn).enumerate() {
            let Some(d) = d.as_ref().filter(|_| !ahead[r]) else {
                continue;
            };
            // Guidance: the first commit is drawn from its candidates with weight
            // `marginal(c) · Π p(c_g | text with c)^w_g`.
            let pick = match (d.commit.first(), guide[r].len()) {
                (Some(&p), n) if n > 1 => {
                    let weights: Vec<(u32, f64)> = d
                        .cands
                        .iter()
                        .zip(&guide[r])
                        .map(|(&(c, m), g)| (c, m.ln() + g))
                        .collect();
                    Some((p, pick_weighted(&weights, self.cfg.temperature, &mut rngs[r])))
                }
                _ => None,
            };
            match pick {
                // Another token than the sample's: with hard constraints the rest of the sample
                // may not fit it, so only it is committed (it has a positive constrained
                // marginal, so the text stays completable).
                Some((p, c)) if c != d.sample[p] && prepared.has_hard => row[p] = c,
                _ => {
                    for &p in &d.commit {
                        row[p] = d.sample[p];
                    }
                    if let Some((p, c)) = pick {
                        row[p] = c;
                    }
                }
            }
        }
        if ahead.contains(&true) {
            self.look_ahead(prepared, rows, rngs, (&logp, &drawn, &ahead, &guide), pad)?;
        }
        Ok(())
    }

    /// `Σ_g w_g · log p_g(c | row)` for each row of `ids` (`len` tokens each; masks as the
    /// guides' mask, the id after the vocabulary), in one guide pass per guide.
    fn guide_scores(&self, ids: Vec<u32>, len: usize) -> Result<Vec<f64>> {
        let v = self.lm.vocab_size();
        let device = self.lm.device();
        let n = ids.len() / len.max(1);
        let masked = ids.iter().filter(|&&t| t == v as u32).count();
        let ids = Tensor::from_vec(ids, (n, len), device)?;
        let mut total = vec![0f64; n];
        for g in self.stack.guides() {
            let table = g
                .embeddings()
                .ok_or_else(|| Error::Config(format!("{}: no token embeddings", g.name())))?
                .to_device(device)?;
            let x = table
                .index_select(&ids.flatten_all()?, 0)?
                .reshape((n, len, table.dim(1)?))?;
            let ctx = crate::steer::GuideContext {
                step: 0,
                num_steps: self.cfg.steps,
                t: 0,
                latent_t: 0,
                embeddings: &table,
                masked_fraction: masked as f64 / (n * len).max(1) as f64,
            };
            let lp = g
                .log_prob(&x, &ctx)?
                .to_dtype(candle_core::DType::F64)?
                .to_vec1::<f64>()?;
            for (acc, l) in total.iter_mut().zip(lp) {
                *acc += self.cfg.guidance_scale * g.weight() * l;
            }
        }
        Ok(total)
    }

    /// For the first `weighed[r]` of each row's drawn candidates at its first commit, the guides'
    /// term `Σ_g w_g · log p_g(c | text with the candidate committed)` (one guide pass over every
    /// such row × candidate).
    fn guide_terms(&self, rows: &[Vec<u32>], drawn: &[Option<Drawn>], weighed: &[usize]) -> Result<Vec<Vec<f64>>> {
        let (len, v, mask) = (self.span(), self.lm.vocab_size(), self.lm.mask_id());
        let mut probes: Vec<u32> = Vec::new();
        let mut owner = Vec::new();
        for (r, d) in drawn.iter().enumerate() {
            let Some(d) = d else { continue };
            let Some(&p) = d.commit.first() else { continue };
            for &(c, _) in d.cands.iter().take(weighed[r]) {
                // The guides' mask is the row after the vocabulary.
                probes.extend(rows[r].iter().enumerate().map(|(q, &t)| match (q == p, t == mask) {
                    (true, _) => c,
                    (false, true) => v as u32,
                    (false, false) => t,
                }));
                owner.push(r);
            }
        }
        let mut out = vec![Vec::new(); rows.len()];
        if owner.is_empty() {
            return Ok(out);
        }
        let total = self.guide_scores(probes, len)?;
        for (r, t) in owner.into_iter().zip(total) {
            out[r].push(t);
        }
        Ok(out)
    }

    /// The lookahead commit ([`MaskedSampling::lookahead`]): in each row, the first-ranked
    /// position gets one of its candidates `c`, drawn (the best at temperature 0) with weight
    /// `p(c)^(1/T) · Z(c)`: `p(c)` from this step's `logp`, `Z(c)` the lattice's mass under a
    /// forward pass with `c` committed. Every candidate has a positive constrained marginal, so
    /// each keeps the text completable.
    fn look_ahead(
        &self,
        prepared: &PreparedStack,
        rows: &mut [Vec<u32>],
        rngs: &mut [StdRng],
        (logp, drawn, ahead, guide): (&[f32], &[Option<Drawn>], &[bool], &[Vec<f64>]),
        pad_rule: Pad,
    ) -> Result<()> {
        let (len, v, pad) = (self.span(), self.lm.vocab_size(), self.lm.pad_id());
        let t = self.cfg.temperature;
        let (inv, lattice_t) = if t == 0.0 { (1.0, 1.0) } else { (1.0 / t as f64, t) };
        // The rows that look ahead, with their draws (position to commit first, candidates).
        let who: Vec<(usize, &Drawn)> = drawn
            .iter()
            .enumerate()
            .filter_map(|(r, d)| Some((r, d.as_ref().filter(|_| ahead[r])?)))
            .collect();
        let own = |d: &Drawn| d.cands.len().min(self.cfg.lookahead_candidates);
        let most = who.iter().map(|(_, d)| own(d)).max().unwrap_or(0);
        let mut weights = vec![Vec::new(); rows.len()];
        for k in 0..most {
            // Each such row with its k-th candidate committed (rows with fewer candidates repeat
            // their last one, whose result is not used).
            let probe: Vec<Vec<u32>> = who
                .iter()
                .map(|&(r, d)| {
                    let mut row = rows[r].clone();
                    row[d.commit[0]] = d.cands[k.min(own(d) - 1)].0;
                    row
                })
                .collect();
            let next = self.log_probs(&probe, pad_rule)?;
            self.passes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let z: Vec<Option<f64>> = probe
                .par_iter()
                .zip(&who)
                .enumerate()
                .map(|(i, (prow, (_, d)))| {
                    if k >= own(d) {
                        return None;
                    }
                    let scores = self.scores(prepared, &next[i * len * v..(i + 1) * len * v], prow, len, v);
                    Lattice::new(&scores, len, v, &prepared.automaton, pad, lattice_t).map(|l| l.log_partition())
                })
                .collect();
            for (z, &(r, d)) in z.into_iter().zip(&who) {
                if let Some(z) = z {
                    let (c, p) = (d.cands[k].0, d.commit[0]);
                    let w = f64::from(logp[(r * len + p) * v + c as usize]) * inv
                        + z
                        + guide[r].get(k).copied().unwrap_or(0.0);
                    weights[r].push((c, w));
                }
            }
        }
        for &(r, d) in &who {
            let (row, p) = (&mut rows[r], d.commit[0]);
            let w = &weights[r];
            let finite: Vec<&(u32, f64)> = w.iter().filter(|x| x.1.is_finite()).collect();
            row[p] = if finite.is_empty() {
                // No candidate's lattice survived (an underflow): the step's own sample.
                d.sample[p]
            } else if t == 0.0 {
                finite.iter().fold(finite[0], |a, b| if b.1 > a.1 { b } else { a }).0
            } else {
                let max = finite.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = finite.iter().map(|x| (x.1 - max).exp()).sum();
                let mut u = rngs[r].gen::<f64>() * total;
                let mut pick = finite[finite.len() - 1].0;
                for x in &finite {
                    u -= (x.1 - max).exp();
                    if u <= 0.0 {
                        pick = x.0;
                        break;
                    }
                }
                pick
            };
        }
        Ok(())
    }

    /// One round of self-correction on committed rows: each free position (not fixed in
    /// advance) is scored by the model with it and its group masked (the positions are split
    /// into [`REFINE_GROUPS`] interleaved groups, one forward pass each); in each row the tokens
    /// whose probability is below [`MaskedSampling::self_correct_threshold`] times the best token's at
    /// their position, at most a quarter of the free positions and the least probable first,
    /// are masked again and re-committed under the constraints, one step per position of that
    /// cap. Returns whether any token was re-masked.
    fn refine(&self, prepared: &PreparedStack, rows: &mut [Vec<u32>], rngs: &mut [StdRng]) -> Result<bool> {
        let len = self.span();
        let (mask, pad) = (self.lm.mask_id(), self.lm.pad_id());
        let closed = if self.cfg.length_first { Pad::Closed } else { Pad::Open };
        let free: Vec<usize> = (0..len).filter(|p| !self.fixed.iter().any(|&(q, _)| q == *p)).collect();
        let cap = free.len().div_ceil(4);
        if cap == 0 {
            return Ok(false);
        }
        // With the lengths drawn first, the PAD tail stays: it is neither judged nor re-masked.
        let judged = |row: &[u32], p: usize| !(self.cfg.length_first && row[p] == pad);
        // ratio[r][i]: the committed token's probability over the best one's, at free[i].
        let ratio: Vec<Vec<f32>> = self
            .in_context(rows, &free, judged)?
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|x| x.map_or(1.0, |(own, best)| (own - best).exp()))
                    .collect()
            })
            .collect();
        let threshold = self.cfg.self_correct_threshold;
        let mut any = false;
        for (row, ratios) in rows.iter_mut().zip(&ratio) {
            let mut low: Vec<(f32, usize)> = ratios
                .iter()
                .zip(&free)
                .filter(|(&q, _)| q < threshold)
                .map(|(&q, &p)| (q, p))
                .collect();
            low.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for &(_, p) in low.iter().take(cap) {
                row[p] = mask;
                any = true;
            }
        }
        if !any {
            return Ok(false);
        }
        for k in 0..cap {
            if !rows.iter().any(|r| r.contains(&mask)) {
                break;
            }
            self.step(prepared, rows, rngs, (0, len, cap - k), None, closed)?;
        }
        Ok(true)
    }

    /// [`Self::model_log_probs`]; when PAD is [`Pad::Closed`] (the lengths are drawn,
    /// [`MaskedSampling::length_first`]), each masked position's distribution given that the
    /// content goes on there: PAD at `−∞` and the rest renormalized (so top-p keeps its mass).
    fn log_probs(&self, rows: &[Vec<u32>], pad: Pad) -> Result<Vec<f32>> {
        let mut logp = self.model_log_probs(rows)?;
        if pad == Pad::Closed {
            let (len, v, mask, pad) = (self.span(), self.lm.vocab_size(), self.lm.mask_id(), self.lm.pad_id());
            for (r, row) in rows.iter().enumerate() {
                for p in (0..len).filter(|&p| row[p] == mask) {
                    let at = &mut logp[(r * len + p) * v..(r * len + p + 1) * v];
                    let goes_on = log_goes_on(at[pad as usize]);
                    for x in at.iter_mut() {
                        *x -= goes_on;
                    }
                    at[pad as usize] = f32::NEG_INFINITY;
                }
            }
        }
        Ok(logp)
    }

    /// [`MaskedSampling::length_first`]: in each row, the content length drawn from the model's
    /// prediction on the span as it stands, `P(l) · M(l)` (the model's length distribution
    /// times the chance that its content is accepted at that length); the PAD tail is
    /// committed.
    fn draw_lengths(&self, prepared: &PreparedStack, rows: &mut [Vec<u32>], rngs: &mut [StdRng]) -> Result<()> {
        let (len, v, mask, pad) = (self.span(), self.lm.vocab_size(), self.lm.mask_id(), self.lm.pad_id());
        let logp = self.model_log_probs(rows)?;
        self.passes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = self.cfg.temperature;
        let lengths: Vec<usize> = rows
            .par_iter()
            .zip(rngs.par_iter_mut())
            .enumerate()
            .map(|(r, (row, rng))| -> Result<usize> {
                let row_logp = &logp[r * len * v..(r + 1) * len * v];
                // The content scores: at a masked position the model's log-probabilities of its
                // content tokens given that the content goes on there (PAD left out), under the
                // constraints' rules; committed positions pinned.
                let mut scores = self.scores(prepared, row_logp, row, len, v);
                for p in (0..len).filter(|&p| row[p] == mask) {
                    let goes_on = log_goes_on(row_logp[p * v + pad as usize]);
                    for x in &mut scores[p * v..(p + 1) * v] {
                        *x -= goes_on;
                    }
                }
                // ln M(l): the chance that such content is accepted at length l (None: it never
                // is). Without hard constraints every content is accepted (the any-content
                // automaton leaves out special tokens, which the draws do not).
                let accepted = if prepared.has_hard {
                    content_lengths(&scores, len, v, &prepared.automaton, pad)
                } else {
                    free_lengths(&scores, len, v, pad)
                };
                if accepted.iter().all(Option::is_none) {
                    return Err(Error::Unsatisfiable(
                        "no content length satisfies the constraints and the fixed tokens".into(),
                    ));
                }
                // P(l) = F(l) − F(l − 1): F the non-decreasing PAD probability (F(len) = 1).
                let mut ended = 0f64;
                let log_w: Vec<f64> = accepted
                    .iter()
                    .enumerate()
                    .map(|(p, m)| {
                        let f = match row.get(p) {
                            None => 1.0,
                            Some(&tok) if tok == mask => f64::from(row_logp[p * v + pad as usize]).exp(),
                            Some(&tok) => f64::from(u8::from(tok == pad)),
                        };
                        let prior = f.max(ended) - ended;
                        ended = ended.max(f);
                        let w = m.map_or(f64::NEG_INFINITY, |m| prior.ln() + m);
                        if t > 0.0 {
                            w / f64::from(t)
                        } else {
                            w
                        }
                    })
                    .collect();
                let max = log_w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                // Every accepted length has weight 0 (the model rules them all out, or the mass
                // underflowed): they are equally likely.
                let weight: Vec<f64> = if max == f64::NEG_INFINITY {
                    accepted.iter().map(|m| f64::from(u8::from(m.is_some()))).collect()
                } else {
                    log_w.iter().map(|&w| (w - max).exp()).collect()
                };
                Ok(if t == 0.0 {
                    // The most probable length (the shortest of ties).
                    (0..=len).fold(0, |best, l| if weight[l] > weight[best] { l } else { best })
                } else {
                    draw_linear(&weight, rng)
                })
            })
            .collect::<Result<_>>()?;
        for (row, l) in rows.iter_mut().zip(lengths) {
            for tok in &mut row[l..] {
                if *tok == mask {
                    *tok = pad;
                }
            }
        }
        Ok(())
    }

    /// The model's log-probabilities `[rows, span, V]` (flattened, f32) for the generated span
    /// of each row, with the prompt in front (and classifier-free guidance when asked).
    fn model_log_probs(&self, rows: &[Vec<u32>]) -> Result<Vec<f32>> {
        let default_prompt;
        let prompt: &[u32] = if self.prompt.is_empty() {
            default_prompt = self.lm.default_prompt();
            &default_prompt
        } else {
            &self.prompt
        };
        let (p, len) = (prompt.len(), self.span());
        let device = self.lm.device();
        let ids_with = |prompt: &[u32]| -> Result<Tensor> {
            let flat: Vec<u32> = rows.iter().flat_map(|r| prompt.iter().chain(r)).copied().collect();
            Ok(Tensor::from_vec(flat, (rows.len(), p + len), device)?)
        };
        let span =
            |ids: &Tensor| -> Result<Tensor> { Ok(self.lm.logits_from(ids, p)?.to_dtype(candle_core::DType::F32)?) };
        let mut logits = span(&ids_with(prompt)?)?;
        if self.cfg.cfg_scale > 0.0 && p > 0 {
            let masked_prompt = vec![self.lm.mask_id(); p];
            let un = span(&ids_with(&masked_prompt)?)?;
            logits = (&un + ((logits - &un)? * (self.cfg.cfg_scale as f64 + 1.0))?)?;
        }
        let mut logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let v = self.lm.vocab_size();
        let (mask, tail, ends, banned) = (
            self.lm.mask_id(),
            self.lm.pad_id() as usize,
            self.lm.end_tokens(),
            self.lm.banned_tokens(),
        );
        for row in logp.chunks_mut(v) {
            // An answer that ends with an end-of-turn token ends with the tail under the
            // constraints (which cannot draw special tokens): the tail gets that probability.
            for &e in ends {
                let (a, b) = (row[tail], row[e as usize]);
                let m = a.max(b);
                if m > f32::NEG_INFINITY {
                    row[tail] = m + ((a - m).exp() + (b - m).exp()).ln();
                }
                row[e as usize] = f32::NEG_INFINITY;
            }
            // The mask is an input, never an output.
            for &t in banned.iter().chain([&mask]) {
                if let Some(x) = row.get_mut(t as usize) {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
        Ok(logp)
    }

    /// The log-probabilities with every token outside top-k / top-p at `−∞` at the masked
    /// positions of `row` (committed ones are pinned anyway), or `None` when neither is set.
    fn truncated(&self, logp: &[f32], row: &[u32], len: usize, v: usize) -> Option<Vec<f32>> {
        if self.cfg.top_k.is_none() && self.cfg.top_p.is_none() {
            return None;
        }
        let mask = self.lm.mask_id();
        let mut out = logp.to_vec();
        let mut order: Vec<u32> = Vec::with_capacity(v);
        for p in (0..len).filter(|&p| row[p] == mask) {
            let scores = &mut out[p * v..(p + 1) * v];
            let keep = keep_count(scores, self.cfg.top_k, self.cfg.top_p, &mut order);
            // `order[..keep]` are the kept tokens (best first, ties by id); the rest go.
            let mut kept = vec![false; v];
            for &t in &order[..keep] {
                kept[t as usize] = true;
            }
            for (x, k) in scores.iter_mut().zip(kept) {
                if !k {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
        Some(out)
    }

    /// Which tokens are word tokens for [`MaskedSampling::drop_doubled_words`], computed once.
    fn word_tokens(&self) -> &[bool] {
        self.word_tokens
            .get_or_init(|| crate::text::word_tokens(self.lm.tokenizer()))
    }

    /// Without constraints: at every open position, a token drawn from the softmax of its scores
    /// at the temperature (the best one at temperature 0), and its remasking key.
    fn draw_independent(
        &self,
        logp: &[f32],
        row: &[u32],
        open: &[usize],
        (candidates, content): (usize, Option<u32>),
        rng: &mut StdRng,
    ) -> (Vec<u32>, Vec<f64>, Vec<(u32, f64)>) {
        let (len, v) = (self.span(), self.lm.vocab_size());
        let t = self.cfg.temperature;
        // One uniform per position, open or not, so the random stream does not depend on which
        // positions are open; then the open positions' softmaxes, in parallel.
        let uniforms: Vec<f64> = (0..len)
            .map(|_| if t == 0.0 { 0.0 } else { rng.gen::<f64>() })
            .collect();
        let mut marginals = vec![0f32; open.len() * v];
        let picks: Vec<u32> = marginals
            .par_chunks_mut(v)
            .zip(open.par_iter())
            .map(|(out, &p)| softmax_draw(&logp[p * v..(p + 1) * v], t, uniforms[p], out))
            .collect();
        let mut sample = row.to_vec();
        for (&p, &tok) in open.iter().zip(&picks) {
            sample[p] = tok;
        }
        let remasking = self.cfg.remasking;
        let keys: Vec<f64> = open
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                key(remasking, &marginals[i * v..(i + 1) * v], sample[p], || {
                    rng.gen::<f64>()
                })
            })
            .collect();
        // Before the lengths are drawn, only content is committed (see `draw`).
        let first = ranked(&keys, open)
            .into_iter()
            .find(|&p| content.is_none_or(|pad| sample[p] != pad));
        let cands = match first {
            Some(p) if candidates > 0 => {
                let i = open.iter().position(|&q| q == p).unwrap_or(0);
                top_tokens(&marginals[i * v..(i + 1) * v], candidates, content)
            }
            _ => Vec::new(),
        };
        (sample, keys, cands)
    }

    /// One row's token scores: committed positions pinned, masked ones the model's scaled
    /// log-probabilities, plus the constraints' unary rules.
    fn scores(&self, prepared: &PreparedStack, logp: &[f32], row: &[u32], len: usize, v: usize) -> Vec<f32> {
        let mask = self.lm.mask_id();
        let mut scores = vec![f32::NEG_INFINITY; len * v];
        for p in 0..len {
            let out = &mut scores[p * v..(p + 1) * v];
            if row[p] == mask {
                out.copy_from_slice(&logp[p * v..(p + 1) * v]);
            } else {
                out[row[p] as usize] = 0.0;
            }
        }
        prepared.masked(scores)
    }

    /// A whole valid sequence under the scores (sampled, or the best at temperature 0), for
    /// each open position its key under the remasking order (higher commits first), and the
    /// `candidates` most probable tokens (constrained marginal, ties by id) at the first-ranked
    /// position (with [`Pad::Uncommitted`], the first-ranked content position and no PAD).
    fn draw(
        &self,
        prepared: &PreparedStack,
        scores: &[f32],
        open: &[usize],
        (candidates, pad_rule): (usize, Pad),
        rng: &mut StdRng,
    ) -> Result<(Vec<u32>, Vec<f64>, Vec<(u32, f64)>)> {
        let (len, v, pad) = (self.span(), self.lm.vocab_size(), self.lm.pad_id());
        let unsatisfiable =
            || Error::Unsatisfiable("no sequence satisfies the constraints and the fixed tokens".into());
        let t = self.cfg.temperature;
        let remasking = self.cfg.remasking;
        let automaton = &prepared.automaton;
        // The distribution at the sampling temperature; at 0 (the best sequence), confidence
        // comes from the model's own distribution (temperature 1), as in LLaDA and Dream.
        let lattice =
            Lattice::new(scores, len, v, automaton, pad, if t == 0.0 { 1.0 } else { t }).ok_or_else(unsatisfiable)?;
        let sample = if t == 0.0 {
            best_sequence(scores, len, v, automaton, pad)
                .map(|(ids, _)| ids)
                .ok_or_else(unsatisfiable)?
        } else {
            lattice.sample(rng)
        };
        let keys = open
            .iter()
            .map(|&p| match remasking {
                Remasking::LowConfidence => lattice.marginal(p, sample[p]) as f64,
                Remasking::Random => rng.gen::<f64>(),
                Remasking::Entropy | Remasking::Margin => key(remasking, &lattice.marginal_row(p), sample[p], || 0.0),
            })
            .collect::<Vec<f64>>();
        let mut cands = Vec::new();
        // Before the lengths are drawn, only content is committed: the first content position
        // and its content candidates.
        let content = pad_rule == Pad::Uncommitted;
        if candidates > 0 {
            if let Some(p) = ranked(&keys, open).into_iter().find(|&p| !content || sample[p] != pad) {
                cands = top_tokens(&lattice.marginal_row(p), candidates, content.then_some(pad));
            }
        }
        Ok((sample, keys, cands))
    }
}

/// One of `weights`' tokens, drawn with probability proportional to `exp(weight)` (at
/// temperature 0, the heaviest; the first of equals). Non-finite weights never win unless all are.
fn pick_weighted(weights: &[(u32, f64)], temperature: f32, rng: &mut StdRng) -> u32 {
    let finite: Vec<&(u32, f64)> = weights.iter().filter(|x| x.1.is_finite()).collect();
    if finite.is_empty() {
        return weights[0].0;
    }
    if temperature == 0.0 {
        return finite.iter().fold(finite[0], |a, b| if b.1 > a.1 { b } else { a }).0;
    }
    let max = finite.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = finite.iter().map(|x| (x.1 - max).exp()).sum();
    let mut u = rng.gen::<f64>() * total;
    for x in &finite {
        u -= (x.1 - max).exp();
        if u <= 0.0 {
            return x.0;
        }
    }
    finite[finite.len() - 1].0
}

/// The `k` tokens of highest probability in `row` (ties by id), with it, leaving out zeros and
/// `except`.
fn top_tokens(row: &[f32], k: usize, except: Option<u32>) -> Vec<(u32, f64)> {
    let mut ranked: Vec<u32> = (0..row.len() as u32)
        .filter(|&t| row[t as usize] > 0.0 && Some(t) != except)
        .collect();
    ranked.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
    ranked.truncate(k);
    ranked.into_iter().map(|t| (t, f64::from(row[t as usize]))).collect()
}

/// `ln(1 − p(PAD))` from PAD's log-probability: the log-probability that the content goes on
/// at a position (floored, so that a certain PAD does not give `−∞`).
fn log_goes_on(pad_logp: f32) -> f32 {
    (-f64::from(pad_logp).exp()).ln_1p().max(-700.0) as f32
}

/// The open positions in commit order: highest key first, ties by position (so the order does
/// not depend on float ties).
fn ranked(keys: &[f64], open: &[usize]) -> Vec<usize> {
    let mut keyed: Vec<(f64, usize)> = keys.iter().copied().zip(open.iter().copied()).collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    keyed.into_iter().map(|(_, p)| p).collect()
}

/// A position's key under the remasking order, from its marginal row (`random` draws it).
fn key(remasking: Remasking, m: &[f32], sampled: u32, random: impl FnOnce() -> f64) -> f64 {
    match remasking {
        Remasking::LowConfidence => m[sampled as usize] as f64,
        Remasking::Random => random(),
        Remasking::Entropy => -m
            .iter()
            .filter(|&&x| x > 0.0)
            .map(|&x| -(x as f64) * (x as f64).ln())
            .sum::<f64>(),
        Remasking::Margin => {
            let (mut a, mut b) = (0f32, 0f32);
            for &x in m {
                if x > a {
                    b = a;
                    a = x;
                } else if x > b {
                    b = x;
                }
            }
            (a - b) as f64
        }
    }
}

/// The softmax of `scores / t` into `out` (of the scores themselves at `t = 0`) and the token
/// the uniform `u` picks from it (at `t = 0`, the first of the best tokens).
fn softmax_draw(scores: &[f32], t: f32, u: f64, out: &mut [f32]) -> u32 {
    let inv = if t == 0.0 { 1.0 } else { 1.0 / t };
    let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0f64;
    for (o, &x) in out.iter_mut().zip(scores) {
        *o = ((x - m) * inv).exp();
        total += *o as f64;
    }
    for o in out.iter_mut() {
        *o = (*o as f64 / total) as f32;
    }
    if t == 0.0 {
        return (0..scores.len()).fold(0, |best, i| if scores[i] > scores[best] { i } else { best }) as u32;
    }
    let mut u = u;
    for (i, &q) in out.iter().enumerate() {
        if u < q as f64 {
            return i as u32;
        }
        u -= q as f64;
    }
    (scores.len() - 1) as u32
}

/// How many tokens top-k / top-p keep at a position, with `order` filled so that its first that
/// many entries are the kept tokens, best first (ties by id). Costs a selection over the
/// vocabulary and a sort of the kept tokens, not a sort of the vocabulary.
fn keep_count(scores: &[f32], top_k: Option<usize>, top_p: Option<f32>, order: &mut Vec<u32>) -> usize {
    let v = scores.len();
    let better = |a: &u32, b: &u32| scores[*b as usize].total_cmp(&scores[*a as usize]).then(a.cmp(b));
    order.clear();
    order.extend(0..v as u32);
    let mut keep = top_k.unwrap_or(v).min(v);
    let Some(top_p) = top_p else {
        if keep < v {
            order.select_nth_unstable_by(keep, better);
        }
        order[..keep].sort_unstable_by(better);
        return keep;
    };
    // Top-p: sort a prefix of candidates large enough to reach the mass (grown as needed).
    let mut head = keep.min(1024).max(1);
    loop {
        if head < v {
            order.select_nth_unstable_by(head, better);
        }
        order[..head].sort_unstable_by(better);
        let mut mass = 0f32;
        for (i, &tok) in order[..head].iter().enumerate() {
            mass += scores[tok as usize].exp();
            if mass >= top_p {
                keep = keep.min(i + 1);
                return keep;
            }
        }
        if head >= keep.min(v) {
            return keep;
        }
        head = (head * 8).min(keep).min(v);
    }
}

#[cfg(test)]
mod tests {
    use super::{keep_count, softmax_draw};

    #[test]
    fn without_constraints_the_marginals_are_the_softmax() {
        let v = 5;
        let scores: Vec<f32> = (0..v).map(|i| ((i * 7 % 11) as f32 - 5.0) / 2.0).collect();
        let mut m = vec![0f32; v];
        for t in [0.5f32, 1.0, 2.0] {
            softmax_draw(&scores, t, 0.3, &mut m);
            let z: f32 = scores.iter().map(|x| (x / t).exp()).sum();
            for k in 0..v {
                let want = (scores[k] / t).exp() / z;
                assert!((m[k] - want).abs() < 1e-6, "t {t}, k {k}");
            }
        }
        // Greedy takes the best token.
        let best = softmax_draw(&scores, 0.0, 0.0, &mut m) as usize;
        assert!(scores.iter().all(|&x| x <= scores[best]));
    }

    #[test]
    fn top_k_and_top_p_keep_what_a_full_sort_keeps() {
        let v = 3000;
        // Log-probabilities with ties.
        let raw: Vec<f32> = (0..v).map(|i| ((i * 7919 % 97) as f32) / 9.0).collect();
        let z: f32 = raw.iter().map(|x| x.exp()).sum::<f32>().ln();
        let scores: Vec<f32> = raw.iter().map(|x| x - z).collect();
        let mut sorted: Vec<u32> = (0..v as u32).collect();
        sorted.sort_by(|&a, &b| scores[b as usize].total_cmp(&scores[a as usize]).then(a.cmp(&b)));
        let mut order = Vec::new();
        for (k, p) in [
            (Some(5), None),
            (None, Some(0.5f32)),
            (Some(40), Some(0.9)),
            (None, Some(0.999)),
            (None, Some(1.0)),
        ] {
            let keep = keep_count(&scores, k, p, &mut order);
            let mut want = k.unwrap_or(v);
            if let Some(p) = p {
                let mut mass = 0f32;
                for (i, &t) in sorted.iter().enumerate() {
                    mass += scores[t as usize].exp();
                    if mass >= p {
                        want = want.min(i + 1);
                        break;
                    }
                }
            }
            assert_eq!(keep, want, "top-k {k:?} top-p {p:?}");
            assert_eq!(&order[..keep], &sorted[..keep], "top-k {k:?} top-p {p:?}");
        }
    }
}
