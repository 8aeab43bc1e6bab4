//! Controllers: how a generation is steered. A [`Controller`] may impose **hard constraints**
//! (the output must satisfy them) and/or contribute a **guidance** gradient (a soft preference).
//! Any number of controllers form a stack that is applied inside every denoising update.
//!
//! ## The update rule
//!
//! At each reverse step `i` (from `x_i` to `x_{i-1}`):
//!
//! 1. The denoiser predicts `x0 = f(x_i, t_i)`.
//! 2. **Constrained clamping.** Without hard constraints, `x0` is snapped to the nearest word
//!    embeddings (the clamping trick). With hard constraints, every position's token scores
//!    `s[p][v] = −‖x0_p − E_v‖²` (the clamping criterion; tokens a unary constraint forbids get
//!    `−∞`) are projected onto the constraint set: the best-scoring sequence whose content every
//!    automaton accepts and whose tail is PAD ([`crate::projection::best_sequence`], exact Viterbi
//!    over the product automaton), and `x0` is clamped to that sequence's embeddings.
//! 3. The sampler computes `x_{i-1}` from `x0` and `x_i` (mean `μ`, standard deviation `σ`).
//! 4. **Guidance** (when some controller has a guidance term and `i` is not among the last
//!    `skip_last` steps): `steps` gradient-ascent updates of `x_{i-1}` on
//!    `λ·log N(x_{i-1}; μ, σ²) + Σ_c w_c·log p_c(c | x_{i-1})`, with the rule of
//!    [`GuidanceRule`] (the paper's sign-normalised steps, or Adam/Adagrad). Terms that read the
//!    denoiser's prediction `x̂0(x_{i-1})` share one differentiable denoiser pass per update
//!    ([`guidance_gradient`]).
//!
//! After the last step the latent is rounded with the same projection, so every output satisfies
//! every hard constraint; each controller's independent [`Controller::check`] then verifies the
//! decoded text, and a failure is an error, never a returned sample.
//!
//! ## Repair
//!
//! A controller may also name faulty positions of the decoded prediction ([`Controller::repair`],
//! e.g. a parser's error nodes). During sampling those positions are re-noised; after it, the
//! generator rewrites them by inpainting with everything else held, keeping a rewrite only when
//! [`Controller::faults`] falls ([`crate::Generator::rewrite`]). The same inpainting serves
//! [`crate::Generator::self_correct`], which names the tokens the model itself disagrees with.
//! Rewrites are projected like every step, so hard constraints still hold.
//!
//! Unsatisfiable stacks (a regex needing more tokens than the sequence holds, conflicting fixed
//! tokens) are detected before sampling and reported as [`Error::Unsatisfiable`].

use candle_core::Tensor;

use crate::automaton::TokenAutomaton;
use crate::token_index::TokenIndex;
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

/// A hard constraint contributed by a controller.
#[derive(Debug, Clone)]
pub enum HardConstraint {
    Unary(UnaryConstraint),
    /// The content must be accepted by this automaton.
    Automaton(TokenAutomaton),
}

/// What a controller sees when it builds its constraints (once, before sampling).
pub struct PrepareContext<'a> {
    pub tokenizer: &'a TextTokenizer,
    pub index: &'a TokenIndex,
    /// The sequence length being sampled.
    pub seq_len: usize,
}

/// What a guidance term sees at a step.
pub struct GuidanceContext<'a> {
    /// Reverse step index (counting down to 0) and the number of steps.
    pub step: usize,
    pub num_steps: usize,
    /// The model's time index for this step (the noise level of the step's input `x_t`).
    pub t: usize,
    /// The time index of the noise level of the latent being guided: the step's output
    /// `x_{t-1}`, one step less noisy than `t` (0 at the last step).
    pub latent_t: usize,
    /// The word-embedding table `[V, d]`.
    pub embeddings: &'a Tensor,
    pub index: &'a TokenIndex,
    /// The denoiser, for guidance that reads its clean prediction `x̂0(x)`
    /// (see [`crate::classifier::prediction_gradient`]).
    pub denoiser: &'a crate::model::Denoiser,
}

/// When a repairing controller is asked (see [`Controller::repair`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairPhase {
    /// During the reverse process: the named positions are re-noised to the step's noise level.
    Denoising,
    /// After it, on the finished output (round `round`, from 0): the named positions, with a
    /// margin, are rewritten by a short reverse process while every other token stays fixed.
    Rewrite { round: usize },
}

/// What a repairing controller sees at a step (see [`Controller::repair`]).
pub struct RepairContext<'a> {
    pub phase: RepairPhase,
    /// Reverse step index (counting down to 0; 0 in the rewrite phase) and the number of steps.
    pub step: usize,
    pub num_steps: usize,
    pub index: &'a TokenIndex,
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

/// A way to steer generation. Implement [`Controller::hard_constraints`] for constraints that must
/// hold, [`Controller::guidance`] for soft preferences, and always [`Controller::check`].
pub trait Controller: Send + Sync {
    /// A short description for messages, e.g. `regex "[0-9]+"`.
    fn name(&self) -> String;

    /// The hard constraints this controller imposes for sequences of `ctx.seq_len` tokens.
    fn hard_constraints(&self, _ctx: &PrepareContext) -> Result<Vec<HardConstraint>> {
        Ok(Vec::new())
    }

    /// The gradient of `log p(c | x)` with respect to the latent `x` `[B, L, d]` (unweighted),
    /// or `None` when this controller gives no guidance.
    fn guidance(&self, _x: &Tensor, _ctx: &GuidanceContext) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// Weight `w` of the guidance term.
    fn guidance_weight(&self) -> f64 {
        1.0
    }

    /// Whether this controller's guidance reads the denoiser's clean prediction `x̂0(x)` rather
    /// than the latent `x`. Such a controller gives [`Controller::prediction_log_prob`], and the
    /// generator differentiates all of them through **one** denoiser pass per update
    /// ([`guidance_gradient`]), instead of one pass each through [`Controller::guidance`].
    fn reads_prediction(&self) -> bool {
        false
    }

    /// `log p(c | x̂0)` per batch row, `[B]`, as a differentiable function of the prediction
    /// `x0_hat` `[B, L, d]` (the denoiser's output for the guided latent at `ctx.latent_t`).
    /// Asked only when [`Controller::reads_prediction`] is true.
    fn prediction_log_prob(&self, _x0_hat: &Tensor, _ctx: &GuidanceContext) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// Called once all the prediction readers' log-probabilities of an update are built, so that
    /// anything kept to share between them (a classifier's pass) can be dropped. A controller
    /// that wraps another must forward it, or the wrapped one keeps its pass (and the graph of
    /// the denoiser pass behind it) until the next update.
    fn end_prediction_pass(&self) {}

    /// Whether this controller repairs (see [`Controller::repair`]); the generator decodes the
    /// prediction at every step only when some controller does.
    fn repairs(&self) -> bool {
        false
    }

    /// Positions of one sequence whose current prediction (`text`, decoded from `ids`, the
    /// rounded `x0`) should be rewritten by the denoiser from their context, e.g. the tokens
    /// inside a parser's error nodes. It is asked in two phases ([`RepairPhase`]):
    ///
    /// * **during** the reverse process, the generator resets those positions of the latent to
    ///   the noise level of the step (around the mean embedding) and carries on;
    /// * **after** it, on the finished output, the generator *rewrites*: it noises the whole
    ///   sequence back to an intermediate level and denoises again with every other token fixed
    ///   (inpainting), keeping the result only if it has fewer [`Controller::faults`]
    ///   (see [`crate::Generator::rewrite`]).
    ///
    /// An empty list means nothing to repair.
    fn repair(&self, _ctx: &RepairContext, _text: &str, _ids: &[u32]) -> Result<Vec<usize>> {
        Ok(Vec::new())
    }

    /// How faulty a finished output is, for comparing rewrites (lower is better, 0 when there is
    /// nothing to repair); asked in the rewrite phase. By default, the number of positions
    /// [`Controller::repair`] names. Override it when faults have an order of importance that
    /// counting positions does not capture (a missing required structure is worse than any
    /// number of small slips, say).
    fn faults(&self, ctx: &RepairContext, text: &str, ids: &[u32]) -> Result<f64> {
        Ok(self.repair(ctx, text, ids)?.len() as f64)
    }

    /// Independent check of a decoded output (`text` is the content, `ids` the full sequence).
    fn check(&self, text: &str, ids: &[u32], tokenizer: &TextTokenizer) -> std::result::Result<(), String>;
}

/// The weighted sum `Σ_c w_c ∇_x log p_c(c | x)` of every controller's guidance, or `None` when
/// none gives any.
///
/// Controllers that read the denoiser's prediction ([`Controller::reads_prediction`]) share one
/// differentiable denoiser pass: their weighted log-probabilities are summed on the prediction
/// and differentiated once, which gives the same gradient as differentiating each on its own
/// (the gradient is linear) at the cost of one pass, however many attributes are asked for.
/// Attributes of one classifier share its pass too (see
/// [`crate::classifier::LatentClassifier::shared_log_prob`]).
pub fn guidance_gradient(
    controllers: &[Box<dyn Controller>],
    x: &Tensor,
    ctx: &GuidanceContext,
) -> Result<Option<Tensor>> {
    let mut total: Option<Tensor> = None;
    let mut add = |g: Tensor| -> Result<()> {
        total = Some(match total.take() {
            None => g,
            Some(acc) => (acc + g)?,
        });
        Ok(())
    };
    let readers: Vec<&dyn Controller> = controllers
        .iter()
        .map(|c| c.as_ref())
        .filter(|c| c.reads_prediction())
        .collect();
    for c in controllers.iter().filter(|c| !c.reads_prediction()) {
        if let Some(g) = c.guidance(x, ctx)? {
            add((g * c.guidance_weight())?)?;
        }
    }
    if !readers.is_empty() {
        let var = candle_core::Var::from_tensor(&x.detach())?;
        let t = vec![ctx.latent_t; x.dim(0)?];
        let x0 = ctx.denoiser.forward(var.as_tensor(), &t, &mut crate::nn::Mode::Grad)?;
        let mut objective: Option<Tensor> = None;
        let mut build = || -> Result<()> {
            for c in &readers {
                if let Some(lp) = c.prediction_log_prob(&x0, ctx)? {
                    let term = (lp.sum_all()? * c.guidance_weight())?;
                    objective = Some(match objective.take() {
                        None => term,
                        Some(acc) => (acc + term)?,
                    });
                }
            }
            Ok(())
        };
        let built = build();
        for c in &readers {
            c.end_prediction_pass();
        }
        built?;
        if let Some(objective) = objective {
            let grads = objective.backward()?;
            let g = grads.get(var.as_tensor()).cloned().ok_or_else(|| {
                Error::Sampling(format!(
                    "guidance of {} does not depend on the latent",
                    readers.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
                ))
            })?;
            add(g)?;
        }
    }
    Ok(total)
}

/// How guidance updates the latent.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum GuidanceRule {
    /// Diffusion-LM's implementation: each update moves by `step_size · sign(gradient)`.
    #[default]
    SignNormalized,
    /// Each update moves by `step_size · g / rms(g)`, the RMS taken over each sequence: the
    /// same overall step as [`GuidanceRule::SignNormalized`], but positions (and coordinates)
    /// with larger gradients move more, so a gradient concentrated on a few words (as through the
    /// denoiser's prediction) leaves the rest of the sentence alone.
    Normalized,
    /// Adam on the latent with this learning rate.
    Adam { lr: f64 },
    /// Adagrad on the latent with this learning rate.
    Adagrad { lr: f64 },
}

impl std::str::FromStr for GuidanceRule {
    type Err = crate::Error;
    /// `sign`, `normalized`, `adam:LR` or `adagrad:LR`.
    fn from_str(s: &str) -> Result<Self> {
        let lr = |v: &str| -> Result<f64> {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x > 0.0)
                .ok_or_else(|| {
                    crate::Error::Config(format!("guidance rule {s:?}: {v:?} is not a positive learning rate"))
                })
        };
        match s.split_once(':') {
            None if s == "sign" => Ok(GuidanceRule::SignNormalized),
            None if s == "normalized" => Ok(GuidanceRule::Normalized),
            Some(("adam", v)) => Ok(GuidanceRule::Adam { lr: lr(v)? }),
            Some(("adagrad", v)) => Ok(GuidanceRule::Adagrad { lr: lr(v)? }),
            _ => Err(crate::Error::Config(format!(
                "guidance rule {s:?}: expected sign, normalized, adam:LR or adagrad:LR"
            ))),
        }
    }
}

/// Settings of the guidance update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuidanceConfig {
    /// λ, the weight of the fluency term `log p(x_{t-1} | x_t)`.
    pub fluency_weight: f64,
    /// Gradient updates per denoising step.
    pub steps: usize,
    /// Step size of [`GuidanceRule::SignNormalized`] and [`GuidanceRule::Normalized`].
    pub step_size: f64,
    /// No guidance in the last `skip_last` denoising steps.
    pub skip_last: usize,
    pub rule: GuidanceRule,
}

impl GuidanceConfig {
    /// The settings measured best with the shipped classifiers for guidance on `input` (see the
    /// README's "Soft control"):
    ///
    /// * on the latent: 3 sign-normalised updates of 0.3 per step (the paper's rule with a
    ///   larger step, which moved more samples to the target);
    /// * on the prediction: 1 [`GuidanceRule::Normalized`] update of
    ///   [`GuidanceConfig::PREDICTION_STEP_SIZE`] per step: the gradient through the denoiser
    ///   already points at the words to change, and one update keeps its cost (a differentiable
    ///   denoiser pass) to one per step.
    ///
    /// ```
    /// use diffusion_lm::classifier::GuidanceInput;
    /// use diffusion_lm::{GuidanceConfig, GuidanceRule};
    /// let g = GuidanceConfig::recommended(GuidanceInput::Prediction);
    /// assert_eq!((g.steps, g.rule), (1, GuidanceRule::Normalized));
    /// ```
    pub fn recommended(input: crate::classifier::GuidanceInput) -> Self {
        use crate::classifier::GuidanceInput;
        match input {
            GuidanceInput::Latent => GuidanceConfig {
                step_size: 0.3,
                ..GuidanceConfig::default()
            },
            GuidanceInput::Prediction => GuidanceConfig {
                steps: 1,
                step_size: Self::PREDICTION_STEP_SIZE,
                rule: GuidanceRule::Normalized,
                ..GuidanceConfig::default()
            },
        }
    }

    /// The step size of [`GuidanceConfig::recommended`] for guidance on the prediction.
    pub const PREDICTION_STEP_SIZE: f64 = 0.2;
}

impl Default for GuidanceConfig {
    /// The paper's rule: 3 sign-normalised steps of 0.1, none in the last 10 steps.
    fn default() -> Self {
        GuidanceConfig {
            fluency_weight: 0.01,
            steps: 3,
            step_size: 0.1,
            skip_last: 10,
            rule: GuidanceRule::SignNormalized,
        }
    }
}

/// Controllers prepared for one sequence length: the additive score mask and the product automaton.
pub struct PreparedStack {
    /// `len × vocab` additive mask (0 or −∞); `None` when no unary constraint exists.
    pub mask: Option<Vec<f32>>,
    /// The intersection of every automaton constraint, or the any-content automaton.
    pub automaton: TokenAutomaton,
    /// Whether any hard constraint exists (otherwise plain clamping is used).
    pub has_hard: bool,
}

/// Limit on the product automaton's states.
pub const MAX_PRODUCT_STATES: usize = 200_000;

impl PreparedStack {
    /// Builds the constraints of every controller and checks that some sequence satisfies them all.
    pub fn prepare(controllers: &[Box<dyn Controller>], ctx: &PrepareContext) -> Result<Self> {
        let (len, vocab, pad) = (ctx.seq_len, ctx.index.vocab_size(), ctx.index.pad_id());
        let mut mask: Option<Vec<f32>> = None;
        let mut automaton: Option<TokenAutomaton> = None;
        let mut has_hard = false;
        for c in controllers {
            for hc in c.hard_constraints(ctx)? {
                has_hard = true;
                match hc {
                    HardConstraint::Unary(u) => {
                        let m = mask.get_or_insert_with(|| vec![0.0; len * vocab]);
                        apply_unary(m, &u, len, vocab, pad, &c.name())?;
                    }
                    HardConstraint::Automaton(a) => {
                        if a.min_tokens().is_none() {
                            return Err(Error::Unsatisfiable(format!("{} accepts no token sequence", c.name())));
                        }
                        if let Some(k) = a.min_tokens().filter(|&k| k > len) {
                            return Err(Error::Unsatisfiable(format!(
                                "{} needs at least {k} tokens but the sequence holds {len}",
                                c.name()
                            )));
                        }
                        automaton = Some(match automaton {
                            None => a,
                            Some(prev) => prev.intersect(&a, vocab, MAX_PRODUCT_STATES)?,
                        });
                    }
                }
            }
        }
        let automaton = automaton.unwrap_or_else(|| TokenAutomaton::any(ctx.index));
        let stack = PreparedStack {
            mask,
            automaton,
            has_hard,
        };
        if has_hard {
            let zeros = stack.masked(vec![0.0; len * vocab]);
            if crate::projection::best_sequence(&zeros, len, vocab, &stack.automaton, pad).is_none() {
                let names: Vec<String> = controllers.iter().map(|c| c.name()).collect();
                return Err(Error::Unsatisfiable(format!(
                    "no sequence of {len} tokens satisfies all of: {}",
                    names.join(", ")
                )));
            }
        }
        Ok(stack)
    }

    /// Adds the unary mask to one sequence's scores.
    pub fn masked(&self, mut scores: Vec<f32>) -> Vec<f32> {
        if let Some(m) = &self.mask {
            for (s, m) in scores.iter_mut().zip(m) {
                *s += m;
            }
        }
        scores
    }
}

fn apply_unary(mask: &mut [f32], u: &UnaryConstraint, len: usize, vocab: usize, pad: u32, name: &str) -> Result<()> {
    let neg = f32::NEG_INFINITY;
    for &(p, t) in &u.fixed {
        if p >= len || t as usize >= vocab {
            return Err(Error::Unsatisfiable(format!(
                "{name} fixes token {t} at position {p}, outside the {len}-token sequence"
            )));
        }
        for v in 0..vocab {
            if v != t as usize {
                mask[p * vocab + v] = neg;
            }
        }
    }
    for &t in &u.banned {
        if t != pad && (t as usize) < vocab {
            for p in 0..len {
                mask[p * vocab + t as usize] = neg;
            }
        }
    }
    if let Some((lo, hi)) = u.content_len {
        if lo > hi || lo > len {
            return Err(Error::Unsatisfiable(format!(
                "{name} asks for {lo}..={hi} content tokens but the sequence holds {len}"
            )));
        }
        for p in 0..len {
            if p < lo {
                mask[p * vocab + pad as usize] = neg; // content must continue
            }
            if p >= hi {
                for v in 0..vocab {
                    if v != pad as usize {
                        mask[p * vocab + v] = neg; // PAD tail
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::GuidanceRule;

    #[test]
    fn guidance_rules_parse_and_bad_ones_say_why() {
        assert_eq!("sign".parse::<GuidanceRule>().unwrap(), GuidanceRule::SignNormalized);
        assert_eq!("normalized".parse::<GuidanceRule>().unwrap(), GuidanceRule::Normalized);
        assert_eq!(
            "adam:0.5".parse::<GuidanceRule>().unwrap(),
            GuidanceRule::Adam { lr: 0.5 }
        );
        assert_eq!(
            "adagrad:2".parse::<GuidanceRule>().unwrap(),
            GuidanceRule::Adagrad { lr: 2.0 }
        );
        let err = "adam:-1".parse::<GuidanceRule>().unwrap_err().to_string();
        assert!(err.contains("not a positive learning rate"), "{err}");
        let err = "momentum".parse::<GuidanceRule>().unwrap_err().to_string();
        assert!(err.contains("expected sign, normalized"), "{err}");
    }
}
