//! The generation pipeline: [`Generator`] runs the reverse process of a [`DiffusionLm`] under a
//! [`Stack`] of controllers and rounds to text.
//!
//! A run is a small per-step loop (`denoise.rs`: predict → project → sampler update → guide →
//! repair, each hook in its own module: `project.rs`, `guide.rs`, `repair.rs`) followed by
//! finishing stages: rewrite and self-correction by inpainting (`rewrite.rs`), the independent
//! check of every output with redraws on failure, and minimum Bayes risk selection
//! ([`mbr_select`]). All settings live in one serde [`GenerationConfig`]; every random stream
//! derives from its seed in one place (`seeds.rs`), per sample, so the same seed gives the same
//! text whatever the batch size.
//!
//! ```
//! use diffusion_lm::{DiffusionLm, Generator};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let lm = DiffusionLm::load(DiffusionLm::default_dir(), &candle_core::Device::Cpu)?;
//! let samples = Generator::new(&lm).steps(20).seed(7).generate(2)?;
//! assert_eq!(samples.len(), 2);
//! let again = Generator::new(&lm).steps(20).seed(7).batch_size(1).generate(2)?;
//! assert_eq!(samples[1].text, again[1].text);
//! # Ok(()) }
//! ```

mod config;
mod denoise;
mod guide;
mod mbr;
pub(crate) mod natural;
mod project;
mod repair;
mod rewrite;
pub(crate) mod seeds;

use rand::rngs::StdRng;

pub use config::{GenerationConfig, Rewrite, SelfCorrect, SoftProjection};
pub use guide::{guidance_gradient, GuidanceConfig, GuidanceRule};
pub use mbr::mbr_select;

use crate::engine::lm::DiffusionLm;
use crate::engine::sampler::{Sampler, SamplerKind};
use crate::steer::{Constraint, ConstraintContext, Guide, GuideContext, GuideInput, PreparedStack, Repair, Stack};
use crate::{Error, Result};
use seeds::{derive, sample_rng, Stream};

/// Reverse steps when the config names none (fewer if the model has fewer).
const DEFAULT_STEPS: usize = 200;

/// One generated sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Decoded text (the tokens before the first PAD).
    pub text: String,
    /// All token ids of the sequence, PAD tail included.
    pub ids: Vec<u32>,
    /// How many times this sample was drawn again because a draw failed a constraint's
    /// independent check (what an automaton over-approximates, such as a repeated free JSON key;
    /// see `JsonSchema::approximations`), or, on the masked engine, because it was empty where
    /// the constraints allow text.
    pub redraws: usize,
}

/// How many times the constraints' own transitions the lexicon's product may have
/// ([`GenerationConfig::lexicon`]). A word slot between fixed words (`[A-Z][a-z]+ is a ...`),
/// where a model blends pieces into a word, gives about 6 times; free prose about 550 times,
/// which would slow every projection as much.
const LEXICON_COST: usize = 16;

/// Builder for a generation run: a model, a [`GenerationConfig`] (defaults unless set) and a
/// [`Stack`] of controllers.
pub struct Generator<'m> {
    lm: &'m DiffusionLm,
    config: GenerationConfig,
    stack: Stack,
    progress: bool,
}

/// What every stage of one generation run reads: the model, the settings, the stack and its
/// prepared constraints, the sampler and the progress bar.
pub(crate) struct Run<'a> {
    pub(crate) lm: &'a DiffusionLm,
    pub(crate) cfg: &'a GenerationConfig,
    pub(crate) stack: &'a Stack,
    pub(crate) prepared: &'a PreparedStack,
    pub(crate) sampler: &'a Sampler,
    /// The guidance settings in force (the config's, or the recommended ones).
    pub(crate) guidance: GuidanceConfig,
    /// The sequence length in tokens.
    pub(crate) length: usize,
    pub(crate) bar: &'a indicatif::ProgressBar,
    /// Which tokens are words, for [`GenerationConfig::drop_doubled_words`] (empty when off).
    pub(crate) word_tokens: Vec<bool>,
    /// Whether the reverse process commits tokens progressively ([`GenerationConfig::commit`]).
    pub(crate) commit: bool,
    /// Candidates per sample ([`GenerationConfig::best_of`], resolved for the model).
    pub(crate) best_of: usize,
    /// Self-correction rounds ([`SelfCorrect::rounds`], resolved for the model).
    pub(crate) self_correct_rounds: usize,
}

impl<'m> Generator<'m> {
    /// A generator with the default [`GenerationConfig`] and an empty stack.
    pub fn new(lm: &'m DiffusionLm) -> Self {
        Self::with_config(lm, GenerationConfig::default())
    }

    /// A generator with these settings and an empty stack.
    pub fn with_config(lm: &'m DiffusionLm, config: GenerationConfig) -> Self {
        Generator {
            lm,
            config,
            stack: Stack::new(),
            progress: false,
        }
    }

    /// The settings of this run.
    pub fn config(&self) -> &GenerationConfig {
        &self.config
    }

    /// Adds a hard constraint to the stack.
    pub fn constrain(mut self, constraint: impl Constraint + 'static) -> Self {
        self.stack = self.stack.constrain(constraint);
        self
    }

    /// Adds a guide to the stack.
    pub fn guide(mut self, guide: impl Guide + 'static) -> Self {
        self.stack = self.stack.guide(guide);
        self
    }

    /// Adds a repair to the stack.
    pub fn repair(mut self, repair: impl Repair + 'static) -> Self {
        self.stack = self.stack.repair(repair);
        self
    }

    /// Replaces the stack.
    pub fn stack(mut self, stack: Stack) -> Self {
        self.stack = stack;
        self
    }

    /// Settings of the guidance update (by default, [`GuidanceConfig::recommended`] for what
    /// the guides read).
    pub fn guidance(mut self, config: GuidanceConfig) -> Self {
        self.config.guidance = Some(config);
        self
    }

    /// Number of reverse steps K (the schedule is respaced exactly from T to K; at most T).
    /// Default: 200, or T if the model has fewer.
    pub fn steps(mut self, k: usize) -> Self {
        self.config.steps = Some(k);
        self
    }

    /// Seed of the noise.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// DDPM or DDIM(η).
    pub fn sampler(mut self, kind: SamplerKind) -> Self {
        self.config.sampler = kind;
        self
    }

    /// Sequence length in tokens (at most the model's `seq_len`).
    pub fn length(mut self, length: usize) -> Self {
        self.config.length = Some(length);
        self
    }

    /// How many sequences are denoised together.
    pub fn batch_size(mut self, b: usize) -> Self {
        self.config.batch_size = b.max(1);
        self
    }

    /// Turns the clamping trick on (default) or off.
    pub fn clamping(mut self, on: bool) -> Self {
        self.config.clamp = on;
        self
    }

    /// Shows a progress bar on stderr.
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Rewriting after sampling for stacks with a repair (see [`Rewrite`]): up to `rounds`
    /// rounds, the first from the last `from` share of the steps. 0 rounds turns it off.
    ///
    /// ```
    /// use diffusion_lm::{DiffusionLm, Generator};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lm = DiffusionLm::load(DiffusionLm::default_dir(), &candle_core::Device::Cpu)?;
    /// // Without a repair in the stack, rewriting does nothing.
    /// let a = Generator::new(&lm).steps(10).self_correct(0, 0.3).rewrite(3, 0.5).generate(1)?;
    /// let b = Generator::new(&lm).steps(10).self_correct(0, 0.3).rewrite(0, 0.0).generate(1)?;
    /// assert_eq!(a, b);
    /// # Ok(()) }
    /// ```
    pub fn rewrite(mut self, rounds: usize, from: f64) -> Self {
        self.config.rewrite = Rewrite {
            rounds,
            from: from.clamp(0.0, 1.0),
        };
        self
    }

    /// Drop doubled words after self-correction ([`GenerationConfig::drop_doubled_words`]).
    pub fn drop_doubled_words(mut self, on: bool) -> Self {
        self.config.drop_doubled_words = on;
        self
    }

    /// Progressive commitment ([`GenerationConfig::commit`]); `None` follows the model.
    pub fn commit(mut self, on: Option<bool>) -> Self {
        self.config.commit = on;
        self
    }

    /// Self-correction after sampling (see [`SelfCorrect`]): up to `rounds` rounds rewriting the
    /// tokens whose probability is below `threshold` times that of the model's own pick. 0
    /// rounds turns it off.
    ///
    /// ```
    /// use diffusion_lm::{DiffusionLm, Generator};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lm = DiffusionLm::load(DiffusionLm::default_dir(), &candle_core::Device::Cpu)?;
    /// let samples = Generator::new(&lm).steps(10).self_correct(2, 0.5).generate(2)?;
    /// assert_eq!(samples.len(), 2);
    /// # Ok(()) }
    /// ```
    pub fn self_correct(mut self, rounds: usize, threshold: f64) -> Self {
        self.config.self_correct = SelfCorrect {
            rounds: Some(rounds),
            threshold: threshold.clamp(1e-9, 1.0),
        };
        self
    }

    /// How many times a sample that fails a constraint's independent check is redrawn (with
    /// fresh noise) before generation fails with [`Error::CheckFailed`]. Hard constraints never
    /// fail the check; this covers what an automaton cannot express, such as repeated free-form
    /// JSON keys or `uniqueItems` over unbounded item sets. Default 3.
    pub fn retries(mut self, retries: usize) -> Self {
        self.config.retries = retries;
        self
    }

    /// Minimum Bayes risk decoding (as in Diffusion-LM): draw `candidates` samples per output
    /// and return the one that agrees most with the others (the sum of its unigram+bigram F1
    /// overlaps with them). Costs `candidates` times the sampling; 1 (the default) turns it off.
    pub fn mbr(mut self, candidates: usize) -> Self {
        self.config.mbr = candidates.max(1);
        self
    }

    /// Best of `k` ([`GenerationConfig::best_of`]): draw `k` candidates per sample and keep the
    /// most natural one that passes every check ([`Generator::naturalness`]). Costs `k` times
    /// the sampling; 1 turns it off. Without a call, 8 for models trained with clean context
    /// (the shipped `models/e2e`), 1 for others.
    pub fn best_of(mut self, k: usize) -> Self {
        self.config.best_of = Some(k);
        self
    }

    /// Best-of prefers candidates whose prose holds only the training corpus's word 4-grams
    /// ([`GenerationConfig::phrases`]; off without a call). For prose left free or kept to a
    /// form or a length, not under templates.
    pub fn phrases(mut self, on: bool) -> Self {
        self.config.phrases = on;
        self
    }

    /// The soft projection (see [`SoftProjection`]): the first `fraction` of the steps use the
    /// constrained marginals at `temperature`; `0.0` projects exactly at every step.
    pub fn soft_projection(mut self, fraction: f64, temperature: f32) -> Self {
        self.config.soft_projection = SoftProjection {
            fraction: fraction.clamp(0.0, 1.0),
            temperature,
        };
        self
    }

    /// How natural the model finds each finished sequence (a [`Sample`]'s `ids`, PAD tail
    /// included): the mean log-probability of its content tokens and first PAD, each read with a
    /// quarter of the positions noised to near pure noise and the rest as clean context (a model
    /// trained with [`crate::ModelConfig::clean_context`]; without it, every position noised at
    /// once). Higher is more natural; [`GenerationConfig::best_of`] keeps the highest. The probe
    /// noise is drawn from the run's seed, per row. Costs 4 forward passes per batch of rows.
    ///
    /// ```
    /// use diffusion_lm::{DiffusionLm, Generator};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lm = DiffusionLm::load(DiffusionLm::default_dir(), &candle_core::Device::Cpu)?;
    /// let tok = &lm.tokenizer;
    /// let good = tok.encode_padded("The Eagle is a coffee shop near Burger King.", 64)?;
    /// let bad = tok.encode_padded("The Eagle a is shop coffee Burger near King.", 64)?;
    /// let score = Generator::new(&lm).naturalness(&[good, bad])?;
    /// assert!(score[0] > score[1]);
    /// # Ok(()) }
    /// ```
    pub fn naturalness(&self, rows: &[Vec<u32>]) -> Result<Vec<f64>> {
        natural::check_rows(rows, self.length_in_tokens(), self.lm.config.vocab_size, None)?;
        let indices: Vec<usize> = (0..rows.len()).collect();
        let seed = derive(self.config.seed, Stream::Natural);
        natural::naturalness(self.lm, rows, &indices, seed, self.config.batch_size)
    }

    /// The sequence length this run samples.
    fn length_in_tokens(&self) -> usize {
        self.config.length.unwrap_or(self.lm.config.seq_len)
    }

    /// Builds the constraints for this run's sequence length and checks that they can be
    /// satisfied, without sampling.
    pub fn prepare(&self) -> Result<PreparedStack> {
        let ctx = ConstraintContext {
            tokenizer: &self.lm.tokenizer,
            index: self.lm.token_index(),
            seq_len: self.length_in_tokens(),
        };
        let prepared = self.stack.prepare(&ctx)?;
        if !(prepared.has_hard && self.config.lexicon.unwrap_or(true)) {
            return Ok(prepared);
        }
        // Only where the product stays cheap (the projection's cost grows with its
        // transitions), and a stack that leaves no text in the lexicon keeps its own automaton.
        let budget = LEXICON_COST.saturating_mul(prepared.automaton.num_transitions());
        Ok(match self.lm.lexicon_automaton() {
            Some(words) => prepared.narrowed(words, &ctx, budget).unwrap_or(prepared),
            None => prepared,
        })
    }

    /// Checks the settings against the model and builds the sampler.
    fn sampler_for_run(&self) -> Result<Sampler> {
        let cfg = &self.lm.config;
        self.config.validate()?;
        if let Some(g) = self.stack.guides().iter().find(|g| g.reads() == GuideInput::Masked) {
            return Err(Error::Config(format!(
                "{}: it reads masked text, which only the masked engine writes",
                g.name()
            )));
        }
        let length = self.length_in_tokens();
        if length > cfg.seq_len {
            return Err(Error::Sampling(format!(
                "requested length {length} exceeds the model's sequence length {}",
                cfg.seq_len
            )));
        }
        let steps = self.config.steps.unwrap_or(DEFAULT_STEPS.min(cfg.diffusion_steps));
        let schedule = cfg.schedule.schedule(cfg.diffusion_steps)?.respace(steps)?;
        Ok(Sampler::new(schedule, self.config.sampler))
    }

    /// The guidance settings in force: the config's, or the recommended ones for what the
    /// guides read (the prediction when any guide reads it).
    fn guidance_in_force(&self) -> GuidanceConfig {
        self.config.guidance.unwrap_or_else(|| {
            let reads = if self.stack.guides().iter().any(|g| g.reads() == GuideInput::Prediction) {
                GuideInput::Prediction
            } else {
                GuideInput::Latent
            };
            GuidanceConfig::recommended(reads)
        })
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

    /// Generates `n` samples and hands them to `emit` batch by batch, in order, as soon as each
    /// batch is finished (the same samples, in the same order, as [`Generator::generate`]), so a
    /// long run can be written out as it goes. The progress bar is hidden while `emit` runs. An
    /// error from `emit` stops the run and is returned.
    ///
    /// ```
    /// # use diffusion_lm::{DiffusionLm, Generator};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lm = DiffusionLm::load(DiffusionLm::default_dir(), &candle_core::Device::Cpu)?;
    /// let mut seen = 0;
    /// Generator::new(&lm).steps(5).batch_size(2).generate_each(3, |batch| {
    ///     seen += batch.len();
    ///     Ok::<(), diffusion_lm::Error>(())
    /// })?;
    /// assert_eq!(seen, 3);
    /// # Ok(()) }
    /// ```
    pub fn generate_each<E: From<Error>>(
        &self,
        n: usize,
        mut emit: impl FnMut(Vec<Sample>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let mbr = self.config.mbr.max(1);
        if mbr > 1 {
            // Candidates arrive in batches that need not hold whole groups: keep the remainder.
            let mut pending: Vec<Sample> = Vec::new();
            let pad = self.lm.tokenizer.pad_id();
            return self.sample(n * mbr, |batch| {
                pending.extend(batch);
                let whole = pending.len() / mbr * mbr;
                if whole == 0 {
                    return Ok(());
                }
                let selected = pending
                    .drain(..whole)
                    .collect::<Vec<_>>()
                    .chunks(mbr)
                    .map(|group| mbr_select(group, pad))
                    .collect();
                emit(selected)
            });
        }
        self.sample(n, emit)
    }

    fn sample<E: From<Error>>(
        &self,
        n: usize,
        mut emit: impl FnMut(Vec<Sample>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let sampler = self.sampler_for_run()?;
        let prepared = self.prepare()?;
        let bar = self.progress_bar(n, &sampler);
        let run = Run {
            lm: self.lm,
            cfg: &self.config,
            stack: &self.stack,
            prepared: &prepared,
            sampler: &sampler,
            guidance: self.guidance_in_force(),
            length: self.length_in_tokens(),
            bar: &bar,
            word_tokens: if self.config.drop_doubled_words {
                crate::text::word_tokens(&self.lm.tokenizer)
            } else {
                Vec::new()
            },
            commit: self.config.commit_for(&self.lm.config) && self.stack.repairs().is_empty(),
            best_of: self.config.best_of_for(&self.lm.config),
            self_correct_rounds: self.config.self_correct_rounds_for(&self.lm.config),
        };
        let result = sample_batches(&run, n, &mut emit);
        // Also on an error (a reader that went away), so no bar is left drawn on the terminal.
        bar.finish_and_clear();
        result
    }

    fn progress_bar(&self, n: usize, sampler: &Sampler) -> indicatif::ProgressBar {
        if !self.progress {
            return indicatif::ProgressBar::hidden();
        }
        let batches = n.div_ceil(self.config.batch_size.max(1)) as u64;
        let draws = self.config.best_of_for(&self.lm.config) as u64;
        progress_bar(draws * batches * sampler.schedule().len() as u64, "denoising", "steps")
    }
}

/// A progress bar on standard error of `len` `unit`s, `label` in front (both engines' style).
pub(crate) fn progress_bar(len: u64, label: &str, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {label} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{eta}})"
        ))
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Samples `n` sequences batch by batch; the check stage redraws a sample that fails a
/// constraint's independent check, up to `retries` times.
fn sample_batches<E: From<Error>>(
    run: &Run,
    n: usize,
    emit: &mut impl FnMut(Vec<Sample>) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let batch = run.cfg.batch_size.max(1);
    let retries = run.cfg.retries;
    let tokenizer = &run.lm.tokenizer;
    for start in (0..n).step_by(batch) {
        let count = batch.min(n - start);
        let indices: Vec<usize> = (start..start + count).collect();
        let mut rows = generate_rows(run, &indices, run.cfg.seed, 0)?;
        let mut redraws = vec![0usize; count];
        for attempt in 0..=retries {
            let mut failed: Vec<(usize, Error)> = Vec::new();
            for (k, row) in rows.iter().enumerate() {
                if let Err(e) = run.stack.check(row, tokenizer) {
                    failed.push((k, e));
                }
            }
            if failed.is_empty() {
                break;
            }
            if attempt == retries {
                return Err(failed.swap_remove(0).1.into());
            }
            // Redraw the failed samples with fresh noise.
            let redo: Vec<usize> = failed.iter().map(|(k, _)| indices[*k]).collect();
            let fresh = generate_rows(run, &redo, run.cfg.seed, attempt as u64 + 1)?;
            for ((k, _), row) in failed.iter().zip(fresh) {
                rows[*k] = row;
                redraws[*k] += 1;
            }
        }
        if run.best_of > 1 {
            best_of(run, &mut rows, &indices)?;
        }
        let samples = rows
            .into_iter()
            .zip(redraws)
            .map(|(row, redraws)| Sample {
                text: tokenizer.decode_content(&row),
                ids: row,
                redraws,
            })
            .collect();
        run.bar.suspend(|| emit(samples))?;
    }
    Ok(())
}

/// [`GenerationConfig::best_of`]: draws `best_of − 1` more candidates for each of `rows` (the
/// first draws, checked) and keeps, per sample, the candidate that passes every constraint's
/// check with the highest [`judged`] score (an empty text below every other), among those
/// that repeat no word within a sentence where one does ([`GenerationConfig::avoid_repeats`])
/// and then among those made of the corpus's phrases where one is ([`GenerationConfig::phrases`]);
/// ties keep the earlier candidate.
fn best_of(run: &Run, rows: &mut [Vec<u32>], indices: &[usize]) -> Result<()> {
    let probe = derive(run.cfg.seed, Stream::Natural);
    let tokenizer = &run.lm.tokenizer;
    let pad = tokenizer.pad_id();
    let phrases = run.lm.phrases().filter(|_| run.cfg.phrases);
    // Ranked by (a text that repeats no word within a sentence, one made of the corpus's
    // phrases, score), in that order; an empty text is below every other either way.
    let rank = |row: &[u32], s: f64| {
        let s = natural::unless_empty(s, row, pad);
        let text = tokenizer.decode_content(row);
        let repeats = run.cfg.avoid_repeats && crate::scoring::quality::repeats_within_sentence(&text);
        let known = phrases.is_none_or(|p| p.covers(&text));
        (s > f64::MIN && !repeats, known, s)
    };
    let mut best: Vec<(bool, bool, f64)> = judged(run, rows, indices, probe)?
        .into_iter()
        .zip(rows.iter())
        .map(|(s, row)| rank(row, s))
        .collect();
    for j in 1..run.best_of {
        let seed = derive(run.cfg.seed, Stream::Candidate(j));
        let candidates = generate_rows(run, indices, seed, 0)?;
        let score = judged(run, &candidates, indices, probe)?;
        for (k, (row, s)) in candidates.into_iter().zip(score).enumerate() {
            let s = rank(&row, s);
            if s > best[k] && run.stack.check(&row, tokenizer).is_ok() {
                best[k] = s;
                rows[k] = row;
            }
        }
    }
    Ok(())
}

/// What best-of keeps the highest of: the rows' naturalness, plus, with guides in the stack,
/// each guide's `w · log p(c | text)` read on the text's clean embeddings at time 0, so the
/// choice does not undo what the guides steered toward.
fn judged(run: &Run, rows: &[Vec<u32>], indices: &[usize], probe: u64) -> Result<Vec<f64>> {
    let batch = run.cfg.batch_size.max(1);
    let mut score = natural::naturalness(run.lm, rows, indices, probe, batch)?;
    let guides = run.stack.guides();
    if guides.is_empty() || rows.is_empty() {
        return Ok(score);
    }
    let model = &run.lm.model;
    let ctx = GuideContext {
        step: 0,
        num_steps: run.sampler.schedule().len(),
        t: 0,
        latent_t: 0,
        embeddings: model.embeddings(),
        masked_fraction: 0.0,
    };
    for (chunk, scores) in rows.chunks(batch).zip(score.chunks_mut(batch)) {
        let flat: Vec<u32> = chunk.iter().flatten().copied().collect();
        let ids = candle_core::Tensor::from_vec(flat, (chunk.len(), run.length), model.device())?;
        let x = model.embed(&ids)?;
        for g in guides {
            let lp = g
                .log_prob(&x, &ctx)?
                .to_dtype(candle_core::DType::F64)?
                .to_vec1::<f64>()?;
            for (s, v) in scores.iter_mut().zip(lp) {
                *s += g.weight() * v;
            }
        }
    }
    Ok(score)
}

/// The reverse process and the rewriting stages for the samples with these indices; returns
/// their token ids. `seed` is the run's seed (or a best-of candidate's); `attempt` > 0 draws
/// fresh noise for a redraw.
fn generate_rows(run: &Run, indices: &[usize], seed: u64, attempt: u64) -> Result<Vec<Vec<u32>>> {
    let device = run.lm.model.device();
    let d = run.lm.config.embed_dim;
    let seed = derive(seed, Stream::Attempt(attempt));
    let mut rngs: Vec<StdRng> = indices.iter().map(|&i| sample_rng(seed, i)).collect();
    let x = crate::nn::standard_normal(&mut rngs, (indices.len(), run.length, d), device)?;
    let start = run.sampler.schedule().len();
    let mut rows = denoise::denoise(run, x, start, None, &mut rngs)?;
    if run.cfg.rewrite.rounds > 0 && !run.stack.repairs().is_empty() {
        rewrite::rewrite_rows(run, &mut rows, seed, indices)?;
    }
    if run.self_correct_rounds > 0 {
        rewrite::self_correct_rows(run, &mut rows, seed, indices)?;
    }
    if run.cfg.drop_doubled_words {
        let tok = &run.lm.tokenizer;
        for row in &mut rows {
            if let Some(kept) = crate::text::without_doubled_words(row, &run.word_tokens, tok) {
                if run.stack.check(&kept, tok).is_ok() {
                    *row = kept;
                }
            }
        }
    }
    Ok(rows)
}
