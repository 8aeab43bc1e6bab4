//! The generation pipeline: a loaded model ([`DiffusionLm`]) and the [`Generator`] builder that runs
//! the reverse process with the clamping trick and rounds to text.
//!
//! Each step: the denoiser predicts `x0` from `x_t`; the **clamping trick** snaps every predicted
//! vector to its nearest word embedding (one matrix product against the cached embedding norms);
//! the [`Sampler`] computes `x_{t-1}` from the clamped `x0`. After the last step the latent is
//! **rounded** to tokens by the same nearest-embedding criterion, and the PAD tail is stripped.
//!
//! Noise comes from a generator seeded per sample (`seed`, sample index), so the same seed gives
//! the same text whatever the batch size.
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

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::checkpoint;
use crate::controller::{
    Controller, GuidanceConfig, GuidanceContext, GuidanceRule, PrepareContext, PreparedStack, RepairContext,
    RepairPhase,
};
use crate::nn::{check_tensors, Mode};
use crate::projection::{best_sequence, constrained_marginals};
use crate::token_index::TokenIndex;
use crate::{Denoiser, Error, ModelConfig, NoiseSchedule, Result, Sampler, SamplerKind, TextTokenizer};

/// A trained diffusion LM: config, denoiser (EMA weights) and tokenizer.
pub struct DiffusionLm {
    pub config: ModelConfig,
    pub model: Denoiser,
    pub tokenizer: TextTokenizer,
    weights: HashMap<String, Tensor>,
    index: std::sync::OnceLock<TokenIndex>,
}

impl DiffusionLm {
    /// The shipped default model: `$DIFFUSION_LM_MODEL` if set, else `models/e2e` in this crate.
    pub fn default_dir() -> PathBuf {
        match std::env::var_os("DIFFUSION_LM_MODEL") {
            Some(p) => PathBuf::from(p),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join("e2e"),
        }
    }

    /// Loads a checkpoint directory, checking that its three files agree.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = checkpoint::require_files(dir.as_ref())?;
        let config: ModelConfig = checkpoint::load_config(&dir)?;
        config
            .validate()
            .map_err(|e| Error::checkpoint(&dir, format!("config.json: {e}")))?;
        let tokenizer = checkpoint::load_tokenizer(&dir, config.vocab_size, config.pad_id)?;
        let weights = checkpoint::load_tensors(&dir, checkpoint::WEIGHTS_FILE, device)?;
        check_tensors(&Denoiser::param_specs(&config), &weights)
            .map_err(|m| Error::checkpoint(&dir, format!("{}: {m}", checkpoint::WEIGHTS_FILE)))?;
        Self::from_weights(config, tokenizer, weights, device)
    }

    /// Builds a model from named tensors (see [`Denoiser::param_specs`]).
    pub fn from_weights(
        config: ModelConfig,
        tokenizer: TextTokenizer,
        weights: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        if tokenizer.vocab_size() != config.vocab_size {
            return Err(Error::Config(format!(
                "tokenizer has {} tokens but the config says {}",
                tokenizer.vocab_size(),
                config.vocab_size
            )));
        }
        check_tensors(&Denoiser::param_specs(&config), &weights).map_err(Error::Config)?;
        let weights: HashMap<String, Tensor> = weights
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_device(device)?)))
            .collect::<Result<_>>()?;
        let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, device);
        let model = Denoiser::new(vb, &config)?;
        Ok(DiffusionLm {
            config,
            model,
            tokenizer,
            weights,
            index: std::sync::OnceLock::new(),
        })
    }

    /// Rebuilds the denoiser so its transformer computes in `dtype` (`F32`, `BF16` or `F16`);
    /// the embeddings, clamping and the sampler stay in F32. Half precision speeds up sampling on
    /// GPUs; `examples/gpu_check.rs` measures its effect on the predictions and the chosen tokens.
    ///
    /// ```
    /// use diffusion_lm::DiffusionLm;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut lm = DiffusionLm::load(DiffusionLm::default_dir(), &candle_core::Device::Cpu)?;
    /// lm.set_compute_dtype(candle_core::DType::BF16)?;
    /// assert_eq!(lm.model.compute_dtype(), candle_core::DType::BF16);
    /// # Ok(()) }
    /// ```
    pub fn set_compute_dtype(&mut self, dtype: DType) -> Result<()> {
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(Error::Config(format!(
                "compute dtype {dtype:?} is not supported: use f32, bf16 or f16"
            )));
        }
        let vb = VarBuilder::from_tensors(self.weights.clone(), DType::F32, self.device());
        self.model = Denoiser::with_compute_dtype(vb, &self.config, dtype)?;
        Ok(())
    }

    /// Writes the model as a checkpoint directory.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        checkpoint::save_checkpoint(dir.as_ref(), &self.config, &self.tokenizer, &self.weights)
    }

    /// The named weight tensors.
    pub fn weights(&self) -> &HashMap<String, Tensor> {
        &self.weights
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        self.model.device()
    }

    /// The vocabulary's byte index, built on first use and shared by every constraint.
    pub fn token_index(&self) -> &TokenIndex {
        self.index.get_or_init(|| TokenIndex::new(&self.tokenizer))
    }
}

/// One generated sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Decoded text (the tokens before the first PAD).
    pub text: String,
    /// All token ids of the sequence, PAD tail included.
    pub ids: Vec<u32>,
}

/// Builder for a generation run. Defaults: 200 DDPM steps, seed 0, the model's full sequence
/// length, batches of 64, clamping on.
pub struct Generator<'m> {
    lm: &'m DiffusionLm,
    steps: usize,
    seed: u64,
    kind: SamplerKind,
    length: usize,
    batch_size: usize,
    clamp: bool,
    progress: bool,
    controllers: Vec<Box<dyn Controller>>,
    guidance: GuidanceConfig,
    soft_until: f64,
    soft_temperature: f32,
    mbr: usize,
    retries: usize,
    rewrite_rounds: usize,
    rewrite_from: f64,
    self_correct: (usize, f64),
}

/// What every batch of one generation run shares: the sampler, the prepared controller stack
/// and the progress bar.
struct Run<'a> {
    sampler: &'a Sampler,
    stack: &'a PreparedStack,
    bar: &'a indicatif::ProgressBar,
}

/// A score per row and position.
type TokenScores = Vec<Vec<f64>>;

/// Of a schedule of `len` steps, how many make up its last `share` (at least 1).
fn steps_for_share(len: usize, share: f64) -> usize {
    ((len as f64 * share).round() as usize).clamp(1, len)
}

/// Tokens to the sides of each flagged position that a rewrite frees as well, so a fault can be
/// mended by changing its neighbours (a missing quote belongs to the token before it).
const REWRITE_MARGIN: usize = 1;

/// Tokens held fixed while a rewrite pass denoises the rest (see [`Generator::rewrite`]).
struct Pins {
    /// Per row and position: the token held there, or `None` where the denoiser writes.
    ids: Vec<Vec<Option<u32>>>,
    /// `[b, l, 1]`: 1 where a token is held.
    mask: Tensor,
    /// `[b, l, d]`: the held tokens' embeddings (PAD's where nothing is held).
    embeddings: Tensor,
}

impl Pins {
    fn new(model: &Denoiser, ids: Vec<Vec<Option<u32>>>, pad: u32) -> Result<Self> {
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

    /// `x0` with the held positions replaced by their tokens' embeddings.
    fn apply(&self, x0: &Tensor) -> Result<Tensor> {
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
}

impl<'m> Generator<'m> {
    pub fn new(lm: &'m DiffusionLm) -> Self {
        Generator {
            lm,
            steps: 200.min(lm.config.diffusion_steps),
            seed: 0,
            kind: SamplerKind::Ddpm,
            length: lm.config.seq_len,
            batch_size: 64,
            clamp: true,
            progress: false,
            controllers: Vec::new(),
            guidance: GuidanceConfig::default(),
            soft_until: DEFAULT_SOFT_UNTIL,
            soft_temperature: 1.0,
            mbr: 1,
            retries: 3,
            rewrite_rounds: 3,
            rewrite_from: 0.3,
            self_correct: (0, 0.0),
        }
    }

    /// Rewriting after sampling, for stacks with a repairing controller (such as a syntax
    /// checker; see [`Controller::repair`]). An output in which a controller still names faulty
    /// positions is noised back to the level of the last `from` share of the steps and denoised
    /// again with every token outside those positions (and one token on each side) held fixed,
    /// an inpainting pass, for up to `rounds` rounds with fresh noise each. Round `r` starts from
    /// the share `from + (1 − from)·r/rounds`, so later rounds can change more. A round's result
    /// is kept only if it has fewer faults ([`Controller::faults`]). A round costs its share of the
    /// steps, for the outputs that need it. Default: 3 rounds from 0.3; 0 rounds turns it off.
    ///
    /// ```
    /// use diffusion_lm::{DiffusionLm, Generator};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lm = DiffusionLm::load(DiffusionLm::default_dir(), &candle_core::Device::Cpu)?;
    /// // Without a repairing controller in the stack, rewriting does nothing.
    /// let a = Generator::new(&lm).steps(10).rewrite(3, 0.5).generate(1)?;
    /// let b = Generator::new(&lm).steps(10).rewrite(0, 0.0).generate(1)?;
    /// assert_eq!(a, b);
    /// # Ok(()) }
    /// ```
    pub fn rewrite(mut self, rounds: usize, from: f64) -> Self {
        self.rewrite_rounds = rounds;
        self.rewrite_from = from.clamp(0.0, 1.0);
        self
    }

    /// Self-correction after sampling: each finished sequence is noised to the level of the
    /// rewrite's first round (see [`Generator::rewrite`]) and denoised in one prediction; tokens
    /// whose probability under the model's rounding head is below `threshold` times that of the
    /// token the model would pick there (tokens it disagrees with, not merely uncertain ones) are
    /// rewritten by inpainting (with one neighbour on each side, everything else held), and
    /// the rewrite is kept only if the model finds the whole sequence likelier under the same
    /// probe noise. Up to `rounds` rounds; the default 0 turns it off. Hard constraints hold
    /// throughout. A round costs one prediction per sequence plus `from × steps` steps for the
    /// sequences rewritten.
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
        self.self_correct = (rounds, threshold.clamp(1e-9, 1.0));
        self
    }

    /// How many times a sample that fails a controller's independent check is redrawn (with
    /// fresh noise) before generation fails with [`Error::CheckFailed`]. Hard constraints never
    /// fail the check; this covers what an automaton cannot express, such as repeated free-form
    /// JSON keys or `uniqueItems` over unbounded item sets. Default 3.
    pub fn retries(mut self, retries: usize) -> Self {
        self.retries = retries;
        self
    }

    /// Minimum Bayes risk decoding (as in Diffusion-LM): draw `candidates` samples per output
    /// and return the one that agrees most with the others (the sum of its unigram+bigram F1
    /// overlaps with them). Costs `candidates` times the sampling; 1 (the default) turns it off.
    pub fn mbr(mut self, candidates: usize) -> Self {
        self.mbr = candidates.max(1);
        self
    }

    /// With hard constraints, the first `fraction` of the steps (the noisiest) use the *soft*
    /// projection: `x0` becomes the expected embedding under the constrained token marginals
    /// (forward–backward, [`constrained_marginals`], scores divided by `temperature`); the
    /// remaining steps and the final rounding use the exact hard projection. `0.0` projects hard
    /// at every step.
    pub fn soft_projection(mut self, fraction: f64, temperature: f32) -> Self {
        self.soft_until = fraction.clamp(0.0, 1.0);
        self.soft_temperature = temperature;
        self
    }

    /// Adds a controller to the stack (see [`crate::controller`]).
    pub fn with(mut self, controller: impl Controller + 'static) -> Self {
        self.controllers.push(Box::new(controller));
        self
    }

    /// Adds a boxed controller to the stack.
    pub fn with_boxed(mut self, controller: Box<dyn Controller>) -> Self {
        self.controllers.push(controller);
        self
    }

    /// Settings of the guidance update.
    pub fn guidance(mut self, config: GuidanceConfig) -> Self {
        self.guidance = config;
        self
    }

    /// Number of reverse steps K (the schedule is respaced exactly from T to K).
    pub fn steps(mut self, k: usize) -> Self {
        self.steps = k;
        self
    }

    /// Seed of the noise.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// DDPM or DDIM(η).
    pub fn sampler(mut self, kind: SamplerKind) -> Self {
        self.kind = kind;
        self
    }

    /// Sequence length in tokens (at most the model's `seq_len`).
    pub fn length(mut self, length: usize) -> Self {
        self.length = length;
        self
    }

    /// How many sequences are denoised together.
    pub fn batch_size(mut self, b: usize) -> Self {
        self.batch_size = b.max(1);
        self
    }

    /// Turns the clamping trick on (default) or off.
    pub fn clamping(mut self, on: bool) -> Self {
        self.clamp = on;
        self
    }

    /// Shows a progress bar on stderr.
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Builds the controllers' constraints for this run's sequence length and checks that they
    /// can be satisfied, without sampling.
    pub fn prepare(&self) -> Result<PreparedStack> {
        let ctx = PrepareContext {
            tokenizer: &self.lm.tokenizer,
            index: self.lm.token_index(),
            seq_len: self.length,
        };
        PreparedStack::prepare(&self.controllers, &ctx)
    }

    fn validate(&self) -> Result<Sampler> {
        let cfg = &self.lm.config;
        if self.length == 0 {
            return Err(Error::Sampling("the sequence length must be at least 1".into()));
        }
        if self.length > cfg.seq_len {
            return Err(Error::Sampling(format!(
                "requested length {} exceeds the model's sequence length {}",
                self.length, cfg.seq_len
            )));
        }
        let schedule = NoiseSchedule::sqrt(cfg.diffusion_steps)?.respace(self.steps)?;
        Ok(Sampler::new(schedule, self.kind))
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
        if self.mbr > 1 {
            // Candidates arrive in batches that need not hold whole groups: keep the remainder.
            let mut pending: Vec<Sample> = Vec::new();
            let pad = self.lm.tokenizer.pad_id();
            let mbr = self.mbr;
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
        let sampler = self.validate()?;
        let stack = self.prepare()?;
        let bar = self.progress_bar(n, &sampler);
        let run = Run {
            sampler: &sampler,
            stack: &stack,
            bar: &bar,
        };
        let result = self.sample_batches(&run, n, &mut emit);
        // Also on an error (a reader that went away), so no bar is left drawn on the terminal.
        bar.finish_and_clear();
        result
    }

    fn sample_batches<E: From<Error>>(
        &self,
        run: &Run,
        n: usize,
        emit: &mut impl FnMut(Vec<Sample>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        for start in (0..n).step_by(self.batch_size) {
            let count = self.batch_size.min(n - start);
            let indices: Vec<usize> = (start..start + count).collect();
            let mut rows = self.generate_batch(run, &indices, 0)?;
            for attempt in 0..=self.retries {
                let mut failed: Vec<(usize, Error)> = Vec::new();
                for (k, row) in rows.iter().enumerate() {
                    if let Err(e) = self.check_row(row) {
                        failed.push((k, e));
                    }
                }
                if failed.is_empty() {
                    break;
                }
                if attempt == self.retries {
                    return Err(failed.swap_remove(0).1.into());
                }
                // Redraw the failed samples with fresh noise.
                let redo: Vec<usize> = failed.iter().map(|(k, _)| indices[*k]).collect();
                let fresh = self.generate_batch(run, &redo, attempt as u64 + 1)?;
                for ((k, _), row) in failed.iter().zip(fresh) {
                    rows[*k] = row;
                }
            }
            let samples = rows
                .into_iter()
                .map(|row| Sample {
                    text: self.lm.tokenizer.decode_content(&row),
                    ids: row,
                })
                .collect();
            run.bar.suspend(|| emit(samples))?;
        }
        Ok(())
    }

    /// Every controller's independent check of one generated sequence.
    fn check_row(&self, row: &[u32]) -> Result<()> {
        let text = self.lm.tokenizer.decode_content(row);
        for c in &self.controllers {
            c.check(&text, row, &self.lm.tokenizer)
                .map_err(|message| Error::CheckFailed {
                    controller: c.name(),
                    message,
                })?;
        }
        Ok(())
    }

    fn progress_bar(&self, n: usize, sampler: &Sampler) -> indicatif::ProgressBar {
        if !self.progress {
            return indicatif::ProgressBar::hidden();
        }
        let batches = n.div_ceil(self.batch_size) as u64;
        let bar = indicatif::ProgressBar::new(batches * sampler.schedule().len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} denoising [{bar:30}] {pos}/{len} steps ({eta})")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar
    }

    /// Runs the reverse process for the samples with these indices and returns their token ids.
    /// `attempt` > 0 draws fresh noise for a redraw.
    fn generate_batch(&self, run: &Run, indices: &[usize], attempt: u64) -> Result<Vec<Vec<u32>>> {
        let device = self.lm.model.device();
        let d = self.lm.config.embed_dim;
        let seed = self.seed ^ attempt.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut rngs: Vec<StdRng> = indices.iter().map(|&i| sample_rng(seed, i)).collect();
        let x = crate::nn::standard_normal(&mut rngs, (indices.len(), self.length, d), device)?;
        let start = run.sampler.schedule().len();
        let mut rows = self.denoise(run, x, start, None, &mut rngs)?;
        if self.rewrite_rounds > 0 && self.controllers.iter().any(|c| c.repairs()) {
            self.rewrite_rows(run, &mut rows, seed, indices)?;
        }
        if self.self_correct.0 > 0 {
            self.self_correct_rows(run, &mut rows, seed, indices)?;
        }
        Ok(rows)
    }

    /// The reverse process from `x` (at the noise level of step `start - 1`) to step 0, then
    /// rounding. With `pins`, the held tokens replace the prediction at every step and in the
    /// rounding, and nothing is re-noised.
    fn denoise(
        &self,
        run: &Run,
        mut x: Tensor,
        start: usize,
        pins: Option<&Pins>,
        rngs: &mut [StdRng],
    ) -> Result<Vec<Vec<u32>>> {
        let (sampler, stack) = (run.sampler, run.stack);
        let model = &self.lm.model;
        let device = model.device();
        let d = self.lm.config.embed_dim;
        let count = x.dim(0)?;
        let schedule = sampler.schedule();
        let repairs = pins.is_none() && self.controllers.iter().any(|c| c.repairs());
        for i in (0..start).rev() {
            let t = vec![schedule.timesteps()[i]; count];
            let mut x0 = model.forward(&x, &t, &mut Mode::Infer)?;
            let progress = (schedule.len() - 1 - i) as f64 / schedule.len() as f64;
            if stack.has_hard && progress < self.soft_until {
                x0 = self.soft_project(stack, &x0)?;
            } else if stack.has_hard {
                x0 = self.project(stack, &x0, pins)?.1;
            } else if self.clamp {
                x0 = model.clamp(&x0)?.1;
            }
            if let Some(p) = pins {
                x0 = p.apply(&x0)?;
            }
            let noise = if sampler.needs_noise(i) {
                Some(crate::nn::standard_normal(rngs, (count, self.length, d), device)?)
            } else {
                None
            };
            let (mean, std) = sampler.step_parts(&x0, i, &x)?;
            x = match &noise {
                Some(z) if std > 0.0 => (&mean + (z * std)?)?,
                _ => mean.clone(),
            };
            if !self.controllers.is_empty() && i >= self.guidance.skip_last {
                let ctx = GuidanceContext {
                    step: i,
                    num_steps: schedule.len(),
                    t: t[0],
                    latent_t: if i > 0 { schedule.timesteps()[i - 1] } else { 0 },
                    embeddings: model.embeddings(),
                    index: self.lm.token_index(),
                    denoiser: model,
                };
                x = self.guide(x, &mean, std, &ctx)?;
            }
            if repairs && i > 0 {
                x = self.repair(x, &x0, i, schedule.len(), schedule.alpha_bar_prev(i), rngs)?;
            }
            run.bar.inc(1);
        }
        if stack.has_hard {
            return Ok(self.project(stack, &x, pins)?.0);
        }
        let mut ids = model.nearest_tokens(&x)?.to_vec2::<u32>()?;
        if let Some(p) = pins {
            for (row, held) in ids.iter_mut().zip(&p.ids) {
                for (id, h) in row.iter_mut().zip(held) {
                    if let Some(t) = h {
                        *id = *t;
                    }
                }
            }
        }
        Ok(ids)
    }

    /// Positions of one sequence that the repairing controllers name, sorted and deduplicated.
    fn flagged_positions(&self, ctx: &RepairContext, row: &[u32]) -> Result<Vec<usize>> {
        let text = self.lm.tokenizer.decode_content(row);
        let mut positions = Vec::new();
        for c in self.controllers.iter().filter(|c| c.repairs()) {
            positions.extend(c.repair(ctx, &text, row)?.into_iter().filter(|&p| p < row.len()));
        }
        positions.sort_unstable();
        positions.dedup();
        Ok(positions)
    }

    /// The repairing controllers' summed [`Controller::faults`] of a finished sequence.
    fn faults(&self, ctx: &RepairContext, row: &[u32]) -> Result<f64> {
        let text = self.lm.tokenizer.decode_content(row);
        let mut total = 0.0;
        for c in self.controllers.iter().filter(|c| c.repairs()) {
            total += c.faults(ctx, &text, row)?;
        }
        Ok(total)
    }

    /// The rewrite rounds of [`Generator::rewrite`] over finished rows.
    fn rewrite_rows(&self, run: &Run, rows: &mut [Vec<u32>], seed: u64, indices: &[usize]) -> Result<()> {
        let num_steps = run.sampler.schedule().len();
        for round in 0..self.rewrite_rounds {
            // Later rounds start noisier: a fault that a light rewrite cannot mend (text of the
            // wrong form altogether) needs more of the sequence's shape to change.
            let from = self.rewrite_from + (1.0 - self.rewrite_from) * round as f64 / self.rewrite_rounds as f64;
            let ctx = RepairContext {
                phase: RepairPhase::Rewrite { round },
                step: 0,
                num_steps,
                index: self.lm.token_index(),
                tokenizer: &self.lm.tokenizer,
            };
            // (row, faults, held tokens)
            let mut todo: Vec<(usize, f64, Vec<Option<u32>>)> = Vec::new();
            for (r, row) in rows.iter().enumerate() {
                let flagged = self.flagged_positions(&ctx, row)?;
                if !flagged.is_empty() {
                    todo.push((r, self.faults(&ctx, row)?, free_around(row, &flagged)));
                }
            }
            if todo.is_empty() {
                break;
            }
            let round_seed = seed ^ (round as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F);
            let targets: Vec<(usize, Vec<Option<u32>>)> =
                todo.iter().map(|(r, _, h)| (indices[*r], h.clone())).collect();
            let fresh = self.inpaint(run, targets, None, from, round_seed)?;
            for ((r, before, _), new) in todo.iter().zip(fresh) {
                if self.faults(&ctx, &new)? < *before {
                    rows[*r] = new;
                }
            }
        }
        Ok(())
    }

    /// Self-correction ([`Generator::self_correct`]) over finished rows.
    fn self_correct_rows(&self, run: &Run, rows: &mut [Vec<u32>], seed: u64, indices: &[usize]) -> Result<()> {
        let (rounds, threshold) = self.self_correct;
        let pad = self.lm.tokenizer.pad_id();
        for round in 0..rounds {
            let probe_seed = seed ^ (round as u64 + 1).wrapping_mul(0x94D0_49BB_1331_11EB);
            let (logp, doubt) = self.token_log_probs(run.sampler, rows, indices, probe_seed)?;
            let mut todo: Vec<(usize, f64, Vec<Option<u32>>)> = Vec::new();
            for (r, row) in rows.iter().enumerate() {
                // Doubtful tokens: content tokens (and the first PAD, where the text ends) that
                // the model itself finds unlikely in their context.
                let end = row.iter().position(|&t| t == pad).unwrap_or(row.len());
                let flagged: Vec<usize> = (0..(end + 1).min(row.len()))
                    .filter(|&p| doubt[r][p] < threshold.ln())
                    .collect();
                if !flagged.is_empty() {
                    let nll = -logp[r].iter().sum::<f64>();
                    todo.push((r, nll, free_around(row, &flagged)));
                }
            }
            if todo.is_empty() {
                break;
            }
            let round_seed = seed ^ (round as u64 + 1).wrapping_mul(0xE703_7ED1_A0B4_28DB);
            let targets: Vec<(usize, Vec<Option<u32>>)> =
                todo.iter().map(|(r, _, h)| (indices[*r], h.clone())).collect();
            // Start from the doubted tokens themselves: the model disagrees with them at this
            // noise level, so a light edit moves them, and the start stays in distribution.
            let starts: Vec<Vec<u32>> = todo.iter().map(|(r, _, _)| rows[*r].clone()).collect();
            let fresh = self.inpaint(run, targets, Some(starts), self.rewrite_from, round_seed)?;
            // Keep a rewrite only if the model finds the whole sequence likelier, under the
            // same probe noise.
            let picked: Vec<usize> = todo.iter().map(|(r, _, _)| indices[*r]).collect();
            let (after, _) = self.token_log_probs(run.sampler, &fresh, &picked, probe_seed)?;
            for (((r, before, _), new), lp) in todo.iter().zip(fresh).zip(after) {
                if -lp.iter().sum::<f64>() < *before {
                    rows[*r] = new;
                }
            }
        }
        Ok(())
    }

    /// Per row and position, the model's log-probability of the row's own token when the
    /// sequence is noised to the level of [`Generator::rewrite`]'s first round and denoised in one
    /// prediction (rounding head, [`Denoiser::logits`]), and the *doubt*: that log-probability
    /// minus the most likely token's (0 when the model would pick the same token). The probe
    /// noise is seeded per sample.
    fn token_log_probs(
        &self,
        sampler: &Sampler,
        rows: &[Vec<u32>],
        sample_indices: &[usize],
        probe_seed: u64,
    ) -> Result<(TokenScores, TokenScores)> {
        let model = &self.lm.model;
        let schedule = sampler.schedule();
        let (l, d) = (self.length, self.lm.config.embed_dim);
        let step = steps_for_share(schedule.len(), self.rewrite_from) - 1;
        let ab = schedule.alphas_cumprod()[step];
        let (mut out, mut doubt) = (Vec::with_capacity(rows.len()), Vec::with_capacity(rows.len()));
        for (chunk, samples) in rows.chunks(self.batch_size).zip(sample_indices.chunks(self.batch_size)) {
            let flat: Vec<u32> = chunk.iter().flatten().copied().collect();
            let ids = Tensor::from_vec(flat, (chunk.len(), l), model.device())?;
            let mut rngs: Vec<StdRng> = samples.iter().map(|&i| sample_rng(probe_seed, i)).collect();
            let z = crate::nn::standard_normal(&mut rngs, (chunk.len(), l, d), model.device())?;
            let x = ((model.embed(&ids)? * ab.sqrt())? + (z * (1.0 - ab).sqrt())?)?;
            let t = vec![schedule.timesteps()[step]; chunk.len()];
            let x0 = model.forward(&x, &t, &mut Mode::Infer)?;
            let logp = candle_nn::ops::log_softmax(&model.logits(&x0)?, candle_core::D::Minus1)?;
            let picked = logp.gather(&ids.unsqueeze(2)?, 2)?.squeeze(2)?;
            let best = logp.max(candle_core::D::Minus1)?;
            doubt.extend((&picked - best)?.to_dtype(DType::F64)?.to_vec2::<f64>()?);
            out.extend(picked.to_dtype(DType::F64)?.to_vec2::<f64>()?);
        }
        Ok((out, doubt))
    }

    /// Rewrites sequences by inpainting: for each `(sample index, held tokens)`, the whole
    /// sequence is noised to the level of the last `from` share of the steps, and the reverse
    /// process runs with the held tokens pinned. The free positions start from `starts`' tokens
    /// when given (a light edit of them), else from the mean embedding (they are discarded, and
    /// the denoiser writes them from the held context alone). Noise is seeded per sample and
    /// `round_seed`, independent of the batch's make-up.
    fn inpaint(
        &self,
        run: &Run,
        targets: Vec<(usize, Vec<Option<u32>>)>,
        starts: Option<Vec<Vec<u32>>>,
        from: f64,
        round_seed: u64,
    ) -> Result<Vec<Vec<u32>>> {
        let model = &self.lm.model;
        let schedule = run.sampler.schedule();
        let (l, d) = (self.length, self.lm.config.embed_dim);
        let start = steps_for_share(schedule.len(), from);
        let mut out = Vec::with_capacity(targets.len());
        for (c, chunk) in targets.chunks(self.batch_size).enumerate() {
            run.bar.inc_length(start as u64);
            let pins = Pins::new(
                model,
                chunk.iter().map(|(_, held)| held.clone()).collect(),
                self.lm.tokenizer.pad_id(),
            )?;
            let current = match &starts {
                Some(rows) => {
                    let rows = &rows[c * self.batch_size..c * self.batch_size + chunk.len()];
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
            out.extend(self.denoise(run, x, start, Some(&pins), &mut rngs)?);
        }
        Ok(out)
    }

    /// Constrained clamping: the best sequence under the clamping scores that satisfies the stack,
    /// per row; returns the ids and their embeddings.
    /// With `pins`, held tokens are kept wherever the constraints allow it.
    fn project(&self, stack: &PreparedStack, x: &Tensor, pins: Option<&Pins>) -> Result<(Vec<Vec<u32>>, Tensor)> {
        let model = &self.lm.model;
        let (b, l, _) = x.dims3()?;
        let v = self.lm.config.vocab_size;
        let pad = self.lm.tokenizer.pad_id();
        let mut ids = Vec::with_capacity(b);
        for (r, row) in self.masked_score_rows(stack, x)?.into_iter().enumerate() {
            let pinned = pins.and_then(|p| best_sequence(&p.restrict(r, &row, v), l, v, &stack.automaton, pad));
            let (seq, _) = pinned
                .or_else(|| best_sequence(&row, l, v, &stack.automaton, pad))
                .ok_or_else(|| {
                    Error::Unsatisfiable("no sequence satisfies the constraints under these scores".into())
                })?;
            ids.push(seq);
        }
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let id_tensor = Tensor::from_vec(flat, (b, l), x.device())?;
        Ok((ids, model.embed(&id_tensor)?))
    }

    /// Per batch row, the clamping scores (`L × V`) plus the stack's unary mask.
    fn masked_score_rows(&self, stack: &PreparedStack, x: &Tensor) -> Result<Vec<Vec<f32>>> {
        let (_, l, _) = x.dims3()?;
        let v = self.lm.config.vocab_size;
        let scores = self.lm.model.clamp_scores(x)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(scores.chunks(l * v).map(|row| stack.masked(row.to_vec())).collect())
    }

    /// Soft projection: the expected embedding under the constrained token marginals, per position.
    fn soft_project(&self, stack: &PreparedStack, x: &Tensor) -> Result<Tensor> {
        let model = &self.lm.model;
        let (b, l, _) = x.dims3()?;
        let v = self.lm.config.vocab_size;
        let pad = self.lm.tokenizer.pad_id();
        let mut marg = Vec::with_capacity(b * l * v);
        for row in self.masked_score_rows(stack, x)? {
            let m = constrained_marginals(&row, l, v, &stack.automaton, pad, self.soft_temperature)
                .ok_or_else(|| Error::Unsatisfiable("no sequence satisfies the constraints".into()))?;
            marg.extend(m);
        }
        let marg = Tensor::from_vec(marg, (b * l, v), x.device())?;
        let d = self.lm.config.embed_dim;
        Ok(marg.matmul(model.embeddings())?.reshape((b, l, d))?)
    }

    /// Re-noises the positions that repairing controllers name (see [`Controller::repair`]): they
    /// return to the marginal of `x_{i-1}` around the mean embedding, `√ᾱ·ē + √(1−ᾱ)·z`, so the
    /// denoiser rewrites them from their context in the remaining steps.
    fn repair(
        &self,
        x: Tensor,
        x0: &Tensor,
        i: usize,
        num_steps: usize,
        alpha_bar: f64,
        rngs: &mut [StdRng],
    ) -> Result<Tensor> {
        let model = &self.lm.model;
        let ids = model.nearest_tokens(x0)?.to_vec2::<u32>()?;
        let ctx = RepairContext {
            phase: RepairPhase::Denoising,
            step: i,
            num_steps,
            index: self.lm.token_index(),
            tokenizer: &self.lm.tokenizer,
        };
        let (b, l, d) = x.dims3()?;
        let mut mask = vec![0f32; b * l];
        let mut any = false;
        for (r, row) in ids.iter().enumerate() {
            for p in self.flagged_positions(&ctx, row)? {
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

    /// Gradient ascent on `λ·log N(x; mean, std²) + Σ w_c log p_c(c | x)` (see [`crate::controller`]).
    fn guide(&self, mut x: Tensor, mean: &Tensor, std: f64, ctx: &GuidanceContext) -> Result<Tensor> {
        let g = self.guidance;
        let mut m: Option<Tensor> = None; // first moment (Adam) / squared-gradient sum (Adagrad)
        let mut v: Option<Tensor> = None;
        for k in 0..g.steps {
            let grad = crate::controller::guidance_gradient(&self.controllers, &x, ctx)?;
            let Some(mut grad) = grad else { return Ok(x) };
            if std > 0.0 && g.fluency_weight > 0.0 {
                // d/dx log N(x; mean, std²) = −(x − mean) / std²
                grad = (grad - ((&x - mean)? * (g.fluency_weight / (std * std)))?)?;
            }
            let update = match g.rule {
                GuidanceRule::SignNormalized => (grad.sign()? * g.step_size)?,
                GuidanceRule::Normalized => {
                    let rms = (grad.sqr()?.mean_keepdim(2)?.mean_keepdim(1)? + 1e-20)?.sqrt()?;
                    (grad.broadcast_div(&rms)? * g.step_size)?
                }
                GuidanceRule::Adam { lr } => {
                    let (b1, b2, eps) = (0.9, 0.999, 1e-8);
                    let m1 = match &m {
                        None => (&grad * (1.0 - b1))?,
                        Some(prev) => ((prev * b1)? + (&grad * (1.0 - b1))?)?,
                    };
                    let v1 = match &v {
                        None => (grad.sqr()? * (1.0 - b2))?,
                        Some(prev) => ((prev * b2)? + (grad.sqr()? * (1.0 - b2))?)?,
                    };
                    let n = (k + 1) as i32;
                    let upd = ((&m1 / (1.0 - b1.powi(n)))? / ((&v1 / (1.0 - b2.powi(n)))?.sqrt()? + eps)?)?;
                    m = Some(m1);
                    v = Some(v1);
                    (upd * lr)?
                }
                GuidanceRule::Adagrad { lr } => {
                    let acc = match &m {
                        None => grad.sqr()?,
                        Some(prev) => (prev + grad.sqr()?)?,
                    };
                    let upd = (&grad / (acc.sqrt()? + 1e-10)?)?;
                    m = Some(acc);
                    (upd * lr)?
                }
            };
            x = (x + update)?;
        }
        Ok(x)
    }
}

/// Unigrams and bigrams of the content (tokens before the first PAD).
fn ngrams(ids: &[u32], pad: u32) -> HashMap<(u32, u32), usize> {
    let content = &ids[..ids.iter().position(|&t| t == pad).unwrap_or(ids.len())];
    let mut counts = HashMap::new();
    for (i, &t) in content.iter().enumerate() {
        *counts.entry((t, u32::MAX)).or_insert(0) += 1;
        if i + 1 < content.len() {
            *counts.entry((t, content[i + 1])).or_insert(0) += 1;
        }
    }
    counts
}

/// F1 of the clipped n-gram overlap of two n-gram multisets.
fn overlap_f1(a: &HashMap<(u32, u32), usize>, b: &HashMap<(u32, u32), usize>) -> f64 {
    let (na, nb) = (a.values().sum::<usize>(), b.values().sum::<usize>());
    if na == 0 || nb == 0 {
        return 0.0;
    }
    let common: usize = a.iter().map(|(k, &c)| c.min(*b.get(k).unwrap_or(&0))).sum();
    2.0 * common as f64 / (na + nb) as f64
}

/// The candidate with the highest total agreement (unigram+bigram F1) with the other candidates.
///
/// ```
/// use diffusion_lm::{generate::mbr_select, Sample};
/// let s = |ids: &[u32]| Sample { text: String::new(), ids: ids.to_vec() };
/// let group = [s(&[5, 6, 7, 0]), s(&[9, 9, 9, 0]), s(&[5, 6, 8, 0])];
/// // [5, 6, 7] and [5, 6, 8] share "5", "6" and "5 6"; [9, 9, 9] shares nothing; the first of
/// // equally good candidates wins.
/// assert_eq!(mbr_select(&group, 0).ids, vec![5, 6, 7, 0]);
/// ```
pub fn mbr_select(group: &[Sample], pad: u32) -> Sample {
    let grams: Vec<_> = group.iter().map(|s| ngrams(&s.ids, pad)).collect();
    let score = |i: usize| {
        (0..group.len())
            .filter(|&j| j != i)
            .map(|j| overlap_f1(&grams[i], &grams[j]))
            .sum::<f64>()
    };
    // The first of equally good candidates wins, so the choice does not depend on float ties.
    let mut best = 0;
    let mut best_score = f64::NEG_INFINITY;
    for i in 0..group.len() {
        let sc = score(i);
        if sc > best_score {
            best = i;
            best_score = sc;
        }
    }
    group[best].clone()
}

/// Default share of steps (the noisiest first) that use the soft projection when hard
/// constraints are present; see [`Generator::soft_projection`].
pub const DEFAULT_SOFT_UNTIL: f64 = 0.0;

/// The noise generator of sample `index` under `seed`.
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

fn sample_rng(seed: u64, index: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}
