//! Training: the Diffusion-LM objective and a generic training loop (AdamW with linear decay, EMA
//! weights, gradient clipping, seeds, progress bar, periodic checkpoints, resume, loss-curve PNG).
//!
//! ## The Diffusion-LM loss
//!
//! For a batch of token sequences `w` (`[B, L]`, PAD tail included) with embeddings `EMB(w)`:
//!
//! * `x0 = EMB(w) + sqrt(1 − ᾱ_0)·ε₀` — the embedding step of the forward process, so the
//!   embedding table is learned end to end;
//! * `t ~ U{0..T−1}`, `x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·ε`;
//! * `mse = mean_{L,d} (f(x_t, t) − x0)²`, with target `EMB(w)` instead of `x0` where `t = 0`;
//! * `prior = mean_{L,d} (sqrt(ᾱ_{T−1})·x0)²` — the t = T term `‖μ(x0, T)‖²`, which keeps the
//!   embeddings from growing so large that x_T is not pure noise;
//! * `rounding = mean_{B,L} −log p(w | x0)` with `p(w | x) = softmax(x·Eᵀ + b)`, the rounding
//!   (decoder) loss.
//!
//! `loss = mean_B(mse + prior) + rounding`. Means over L and d ("mean_flat", as in the paper's
//! code) make the loss independent of sequence length and embedding size.
//!
//! With the softmax head ([`crate::engine::X0Head::Softmax`]) the loss adds
//! `ce = mean_{B,L} −log softmax(logits(x_t, t))[w]`, the cross-entropy of the logits whose
//! expected embedding is the prediction. [`DiffusionObjective::freeze_embeddings`] keeps the
//! embedding table and the rounding head as they are (a model trained into another's embedding
//! space, whose attribute classifiers then read it too); the rounding term is then a constant.
//!
//! With clean context ([`crate::ModelConfig::clean_context`]), three rows in four are given a
//! share `r ~ U(0, 1)` of their positions clean: those hold their word's embedding exactly and
//! are marked as time 0 ([`Denoiser::forward_with_context`]), beside the rest at the row's noise
//! level. `mse` and `ce` are then means over the noisy positions only. The model learns to write
//! words in the context of known ones, which is how the sampler uses it when it commits tokens
//! progressively ([`crate::GenerationConfig::commit`]).
//!
//! ```no_run
//! use diffusion_lm::train::{train_diffusion, TrainConfig};
//! use diffusion_lm::text::corpus;
//! use diffusion_lm::{ModelConfig, TextTokenizer};
//! # fn main() -> diffusion_lm::Result<()> {
//! let examples = corpus::read_text("corpus.txt")?;
//! let tok = TextTokenizer::train(examples.iter().map(|e| e.text.as_str()), 1000)?;
//! let cfg = ModelConfig { seq_len: 32, ..ModelConfig::e2e_default(tok.vocab_size()) };
//! let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
//! let lm = train_diffusion(cfg, tok, &texts, TrainConfig::default(), "runs/mine".as_ref(), &candle_core::Device::Cpu)?;
//! # Ok(()) }
//! ```

pub mod checkpoint;
pub(crate) mod optim;
pub(crate) mod plot;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::nn::{init_varmap, Mode, ParamSpec};
use crate::train::optim::{linear_lr, AdamW, AdamWConfig, Ema};
use crate::{Denoiser, DiffusionLm, Error, ModelConfig, NoiseSchedule, Result, TextTokenizer};
use checkpoint::{read_json, write_json};

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Total optimizer steps.
    pub steps: usize,
    /// Sequences per optimizer step.
    pub batch_size: usize,
    /// Peak learning rate (after warm-up; then linear decay to 0 at `steps`).
    pub lr: f64,
    /// Steps over which the learning rate rises linearly to `lr`.
    pub warmup_steps: usize,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// EMA decay of the weights used for sampling.
    pub ema_decay: f64,
    /// Clip the global gradient norm to this value.
    pub grad_clip: Option<f64>,
    /// Seed of the parameter initialisation and of the run's random draws (batch order, noise,
    /// time steps, dropout).
    pub seed: u64,
    /// Write a checkpoint every this many steps (and at the end).
    pub checkpoint_every: usize,
    /// Record losses (and print a log line when no progress bar shows) every this many steps.
    pub log_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 10_000,
            batch_size: 64,
            lr: 1e-3,
            warmup_steps: 200,
            weight_decay: 0.0,
            ema_decay: 0.999,
            grad_clip: Some(1.0),
            seed: 0,
            checkpoint_every: 1000,
            log_every: 50,
        }
    }
}

impl TrainConfig {
    /// Checks that steps, batch size and learning rate are positive and `ema_decay` is in `[0, 1)`.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.batch_size == 0 {
            return Err(Error::Config("steps and batch_size must be positive".into()));
        }
        if !(self.lr > 0.0) {
            return Err(Error::Config(format!(
                "learning rate must be positive, got {}",
                self.lr
            )));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(Error::Config(format!(
                "ema_decay must be in [0, 1), got {}",
                self.ema_decay
            )));
        }
        Ok(())
    }
}

/// A model and its loss, trained by [`Trainer`].
pub trait Objective {
    /// Serialised as the checkpoint's `config.json`.
    type Config: Serialize;
    /// The model's configuration, written as the checkpoint's `config.json`.
    fn config(&self) -> &Self::Config;
    /// Names of the loss components returned by [`Objective::loss`] (the first is the total).
    fn component_names(&self) -> &'static [&'static str];
    /// The loss of a batch of token ids `[B, L]` (a scalar) and its components as numbers.
    fn loss(&self, batch: &Tensor, rng: &mut StdRng) -> Result<(Tensor, Vec<f64>)>;
}

/// The Diffusion-LM objective (see the module docs).
pub struct DiffusionObjective {
    /// The denoiser being trained.
    pub model: Denoiser,
    cfg: ModelConfig,
    schedule: NoiseSchedule,
    frozen_embeddings: bool,
}

impl DiffusionObjective {
    /// Builds the denoiser from `vb` and the `sqrt` noise schedule of `cfg.diffusion_steps` steps.
    pub fn new(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        Ok(DiffusionObjective {
            model: Denoiser::new(vb, cfg)?,
            cfg: cfg.clone(),
            schedule: cfg.schedule.schedule(cfg.diffusion_steps)?,
            frozen_embeddings: false,
        })
    }

    /// Stops training the word embeddings and the rounding head's bias: the loss no longer
    /// differentiates through them, so the optimizer leaves them as they are.
    pub fn freeze_embeddings(&mut self) {
        self.model.freeze_embeddings();
        self.frozen_embeddings = true;
    }

    /// Whether [`DiffusionObjective::freeze_embeddings`] was called.
    pub fn embeddings_frozen(&self) -> bool {
        self.frozen_embeddings
    }
}

fn randn(rng: &mut StdRng, shape: (usize, usize, usize), device: &Device) -> Result<Tensor> {
    crate::nn::standard_normal(std::slice::from_mut(rng), shape, device)
}

fn column(values: &[f64], device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    Ok(Tensor::from_vec(v, (values.len(), 1, 1), device)?)
}

impl DiffusionObjective {
    /// Mean cross-entropy of the rounding head at `x_start` against the batch's tokens.
    ///
    /// On the CPU it is computed over chunks of rows whose logits stay under 8 MiB. glibc serves
    /// buffers of 32 MiB and more with a fresh `mmap`, and the logits of a 64 × 64-token batch
    /// over 2,048 words are exactly that. Every such buffer, and each intermediate of its
    /// softmax, would then be mapped, faulted in page by page and unmapped again, about six
    /// times a step.
    fn rounding_loss(&self, x_start: &Tensor, batch: &Tensor) -> Result<Tensor> {
        let (b, l) = batch.dims2()?;
        let v = self.cfg.vocab_size;
        let rows_per_chunk = if batch.device().is_cpu() {
            ((8 << 20) / (l * v * 4).max(1)).clamp(1, b.max(1))
        } else {
            b.max(1)
        };
        let mut total: Option<Tensor> = None;
        for start in (0..b).step_by(rows_per_chunk) {
            let n = rows_per_chunk.min(b - start);
            let logits = self
                .model
                .logits_in(&x_start.narrow(0, start, n)?, &Mode::Grad)?
                .reshape((n * l, v))?;
            let targets = batch.narrow(0, start, n)?.flatten_all()?;
            let ce = candle_nn::loss::cross_entropy(&logits, &targets)?;
            let part = if n == b { ce } else { (ce * (n as f64 / b as f64))? };
            total = Some(match total {
                None => part,
                Some(t) => (t + part)?,
            });
        }
        total.ok_or_else(|| Error::Config("empty training batch".into()))
    }
}

/// Share of training rows given clean context under [`ModelConfig::clean_context`]; the rest
/// are all noise, as at the first sampling steps.
const CLEAN_CONTEXT_ROWS: f64 = 0.75;

/// `[b, l, 1]`: 1 at the positions given clean. A row has clean context with probability
/// [`CLEAN_CONTEXT_ROWS`]; its share of clean positions is then uniform in (0, 1), so every
/// stage of progressive commitment is seen.
fn clean_mask(rng: &mut StdRng, b: usize, l: usize, device: &Device) -> Result<Tensor> {
    let mut m = Vec::with_capacity(b * l);
    for _ in 0..b {
        let share = if rng.gen_bool(CLEAN_CONTEXT_ROWS) {
            rng.gen::<f64>()
        } else {
            0.0
        };
        m.extend((0..l).map(|_| if rng.gen_bool(share) { 1f32 } else { 0.0 }));
    }
    Ok(Tensor::from_vec(m, (b, l, 1), device)?)
}

impl Objective for DiffusionObjective {
    type Config = ModelConfig;
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    fn component_names(&self) -> &'static [&'static str] {
        match self.cfg.x0_head {
            crate::engine::X0Head::Direct => &["loss", "mse", "rounding", "prior"],
            crate::engine::X0Head::Softmax => &["loss", "mse", "rounding", "prior", "ce"],
        }
    }
    fn loss(&self, batch: &Tensor, rng: &mut StdRng) -> Result<(Tensor, Vec<f64>)> {
        let (b, l) = batch.dims2()?;
        let d = self.cfg.embed_dim;
        let device = batch.device();
        let ac = self.schedule.alphas_cumprod();
        let t_count = ac.len();
        let emb = self.model.embed(batch)?;
        let std0 = (1.0 - ac[0]).sqrt();
        let noise0 = randn(rng, (b, l, d), device)?;
        let x_start = (&emb + (&noise0 * std0)?)?;
        let t: Vec<usize> = (0..b).map(|_| rng.gen_range(0..t_count)).collect();
        let sqrt_ac = column(&t.iter().map(|&i| ac[i].sqrt()).collect::<Vec<_>>(), device)?;
        let sqrt_1m = column(&t.iter().map(|&i| (1.0 - ac[i]).sqrt()).collect::<Vec<_>>(), device)?;
        let noise = randn(rng, (b, l, d), device)?;
        let x_t = (x_start.broadcast_mul(&sqrt_ac)? + noise.broadcast_mul(&sqrt_1m)?)?;
        let clean = if self.cfg.clean_context {
            Some(clean_mask(rng, b, l, device)?)
        } else {
            None
        };
        let x_t = match &clean {
            // Clean positions hold their word's embedding exactly, as committed tokens do when
            // sampling.
            Some(m) => (x_t.broadcast_mul(&m.affine(-1.0, 1.0)?)? + emb.broadcast_mul(m)?)?,
            None => x_t,
        };
        let mut rng_mode = Mode::Train(rng);
        let (pred, logits) = self
            .model
            .forward_with_context(&x_t, &t, clean.as_ref(), &mut rng_mode)?;
        // Where t = 0 the target is the embedding itself (x_start minus its embedding noise).
        let is_zero = column(
            &t.iter().map(|&i| if i == 0 { std0 } else { 0.0 }).collect::<Vec<_>>(),
            device,
        )?;
        let target = (&x_start - noise0.broadcast_mul(&is_zero)?)?;
        let sq = (pred - target)?.sqr()?;
        // With clean context, only the noisy positions are scored: copying a clean one is no task.
        let noisy = match &clean {
            Some(m) => Some(m.affine(-1.0, 1.0)?),
            None => None,
        };
        let mse = match &noisy {
            Some(w) => {
                let count = (w.sum_all()?.to_dtype(DType::F32)? * d as f64)?.maximum(1.0)?;
                sq.broadcast_mul(w)?.sum_all()?.div(&count)?
            }
            None => sq.mean((1, 2))?.mean_all()?,
        };
        let prior = (&x_start * ac[t_count - 1].sqrt())?.sqr()?.mean((1, 2))?;
        let rounding = self.rounding_loss(&x_start, batch)?;
        let prior = prior.mean_all()?;
        let mut loss = ((&mse + &prior)? + &rounding)?;
        let mut parts = vec![loss.clone(), mse, rounding, prior];
        if let Some(logits) = logits {
            let v = self.cfg.vocab_size;
            let logits = logits.reshape((b * l, v))?;
            let targets = batch.flatten_all()?;
            let ce = match &noisy {
                Some(w) => {
                    let logp = candle_nn::ops::log_softmax(&logits, candle_core::D::Minus1)?;
                    let picked = logp.gather(&targets.unsqueeze(1)?, 1)?.reshape((b * l,))?;
                    let w = w.reshape((b * l,))?;
                    let count = w.sum_all()?.maximum(1.0)?;
                    (picked * &w)?.sum_all()?.neg()?.div(&count)?
                }
                None => candle_nn::loss::cross_entropy(&logits, &targets)?,
            };
            loss = (loss + &ce)?;
            parts[0] = loss.clone();
            parts.push(ce);
        }
        // One read back to the host per step (each read waits for the device).
        let parts = Tensor::stack(&parts, 0)?
            .to_vec1::<f32>()?
            .into_iter()
            .map(f64::from)
            .collect();
        Ok((loss, parts))
    }
}

/// One recorded point of the loss curve: the mean of each component over the last interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// The optimizer step at which the point was recorded.
    pub step: usize,
    /// Mean of each loss component since the previous point, in [`TrainState::components`] order.
    pub values: Vec<f64>,
}

/// What `train_state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: usize,
    /// The run's optimisation settings.
    pub train: TrainConfig,
    /// Names of the loss components (the first is the total).
    pub components: Vec<String>,
    /// The recorded loss curve.
    pub history: Vec<HistoryPoint>,
    /// Wall-clock seconds spent training, across resumes.
    pub elapsed_secs: f64,
    /// Token ids fed to the model (padding included), across resumes.
    pub tokens_seen: u64,
    /// Sequences dropped because they did not fit the sequence length.
    pub dropped_examples: usize,
    /// The file of this state's tensors (raw weights, AdamW moments, EMA weights), named after
    /// its step; absent in states written before the name was recorded
    /// ([`STATE_TENSORS_FILE`], with the EMA weights in `model.safetensors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensors_file: Option<String>,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Optimizer steps taken by this run (not counting steps before a resume).
    pub steps: usize,
    /// Loss components of the last step.
    pub final_losses: Vec<f64>,
    /// Wall-clock seconds spent training, across resumes.
    pub elapsed_secs: f64,
    /// Token ids processed per second during this run.
    pub tokens_per_sec: f64,
}

/// Name of the training-state file (a [`TrainState`]) in a run's directory.
pub const STATE_FILE: &str = "train_state.json";
/// The state tensors' file of states that do not name theirs ([`TrainState::tensors_file`]).
pub const STATE_TENSORS_FILE: &str = "train_state.safetensors";
/// Name of the loss-curve plot in a run's directory.
pub const LOSS_PLOT_FILE: &str = "loss.png";

/// The files a training run writes in its output directory, besides the state tensors
/// (`train_state.<step>.safetensors`); `data.json` is the CLI's record of the corpus,
/// `lexicon.txt` the words of its training split, `phrases.txt` their word 4-grams and
/// `training.json` a finished run's copy of the state.
const RUN_FILES: [&str; 9] = [
    checkpoint::CONFIG_FILE,
    checkpoint::WEIGHTS_FILE,
    checkpoint::TOKENIZER_FILE,
    STATE_FILE,
    LOSS_PLOT_FILE,
    "training.json",
    "data.json",
    crate::text::lexicon::LEXICON_FILE,
    crate::text::phrases::PHRASES_FILE,
];

/// Subdirectories that hold checkpoints trained for the model of their parent directory (the
/// reference LM, the attribute classifiers).
const RUN_SUBDIRS: [&str; 3] = ["ar", "classifier", "classifier-latent"];

/// The state tensors file of the state at `step`.
fn state_tensors_name(step: usize) -> String {
    format!("train_state.{step:08}.safetensors")
}

/// `train_state.<digits>.safetensors`, or the unnumbered file of older states.
fn is_state_tensors_file(name: &str) -> bool {
    name == STATE_TENSORS_FILE
        || name
            .strip_prefix("train_state.")
            .and_then(|rest| rest.strip_suffix(".safetensors"))
            .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// What a training output directory holds (see [`inspect_output`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputDir {
    /// It holds a training state (`train_state.json`) to resume.
    pub resumable: bool,
    /// Entries a training run writes (its checkpoint files, state, plot and records, and the
    /// checkpoint subdirectories trained for its model: `ar/`, `classifier/`,
    /// `classifier-latent/`): a new run would replace or mix with them.
    pub run_entries: Vec<String>,
    /// What a new run may remove: temporary files of interrupted writes, and the files of a
    /// first save that was interrupted before its state was committed.
    pub leftovers: Vec<String>,
    /// Everything else (a user's files, the lock file excluded).
    pub others: Vec<String>,
}

/// Sorts the entries of a training output directory (all empty when it does not exist).
///
/// A first save interrupted before its commit is recognised by its step-0 state tensors file
/// without a `train_state.json`: only [`Trainer::new`]'s initial save writes that name, and every
/// later save removes it after committing, so the checkpoint files next to it are that save's.
pub fn inspect_output(dir: &Path) -> Result<OutputDir> {
    let mut out = OutputDir::default();
    if !dir.exists() {
        return Ok(out);
    }
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(dir, e))?;
    names.sort();
    out.resumable = names.iter().any(|n| n == STATE_FILE);
    let interrupted_start = !out.resumable && names.contains(&state_tensors_name(0));
    for name in names {
        let path = dir.join(&name);
        if name == checkpoint::LOCK_FILE {
            continue;
        }
        let first_save = [
            checkpoint::CONFIG_FILE,
            checkpoint::WEIGHTS_FILE,
            checkpoint::TOKENIZER_FILE,
        ]
        .contains(&name.as_str())
            || name == state_tensors_name(0);
        if checkpoint::is_temporary(&name) || (interrupted_start && first_save) {
            out.leftovers.push(name);
        } else if path.is_dir() {
            let checkpoint_dir = RUN_SUBDIRS.contains(&name.as_str()) && path.join(checkpoint::CONFIG_FILE).is_file();
            if checkpoint_dir {
                &mut out.run_entries
            } else {
                &mut out.others
            }
            .push(name);
        } else if RUN_FILES.contains(&name.as_str()) || is_state_tensors_file(&name) {
            out.run_entries.push(name);
        } else {
            out.others.push(name);
        }
    }
    Ok(out)
}

/// Removes `names` from `dir` (files, or directories with everything in them, each locked
/// first so that a run writing one is not pulled from under it), returning their paths.
fn remove_entries(dir: &Path, names: &[String]) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for name in names {
        let path = dir.join(name);
        if path.is_dir() {
            let lock = checkpoint::DirLock::acquire(&path)?;
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            drop(lock);
        } else {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
        removed.push(path);
    }
    checkpoint::sync_dir(dir)?;
    Ok(removed)
}

/// Prepares `dir` for a fresh run: removes leftovers of interrupted writes, and refuses a
/// directory that holds files a run writes (a finished model, a user's `config.json`), so that
/// nothing is silently replaced and no directory ends up with files of two runs. Other files
/// (notes, data) are left alone and do not stop the run.
fn ensure_fresh_output(dir: &Path) -> Result<()> {
    let contents = inspect_output(dir)?;
    remove_entries(dir, &contents.leftovers)?;
    if contents.run_entries.is_empty() {
        return Ok(());
    }
    let found = &contents.run_entries;
    let shown = found.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    let more = if found.len() > 5 {
        format!(" and {} more", found.len() - 5)
    } else {
        String::new()
    };
    Err(Error::checkpoint(
        dir,
        format!(
            "the directory holds {shown}{more} but no training state ({STATE_FILE}) to resume; \
             a new run will not write over it: choose a new or empty directory, or clear this one \
             (the CLI's --overwrite removes a previous run's files)"
        ),
    ))
}

/// Removes what a previous training run left in `dir`: its checkpoint, training state, loss
/// plot and records, leftovers of interrupted writes, and the checkpoint subdirectories trained
/// for its model (`ar/`, `classifier/`, `classifier-latent/`), so that a new run can start there
/// without files of two runs mixed. Other files and directories are left alone. Returns the
/// paths removed, in name order. Fails if a training run holds the directory or a subdirectory.
pub fn clear_output_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let _lock = checkpoint::DirLock::acquire(dir)?;
    let contents = inspect_output(dir)?;
    let mut names = contents.leftovers;
    names.extend(contents.run_entries);
    names.sort();
    remove_entries(dir, &names)
}

/// A generic training loop over token-id sequences of one fixed length.
pub struct Trainer<O: Objective> {
    /// The model and loss being trained.
    pub objective: O,
    varmap: VarMap,
    opt: AdamW,
    ema: Ema,
    data: Vec<Vec<u32>>,
    order: Vec<usize>,
    cursor: usize,
    tokenizer: TextTokenizer,
    out_dir: PathBuf,
    state: TrainState,
    rng: StdRng,
    device: Device,
    /// Held for the trainer's life: one run per output directory.
    _lock: checkpoint::DirLock,
}

impl<O: Objective> Trainer<O> {
    /// Sets up a run: initialises the parameters of `specs` from the seed, then builds the objective.
    /// If `out_dir` holds a `train_state.json`, the run resumes from it instead; otherwise
    /// `out_dir` must not hold files a run writes (see [`clear_output_dir`]). The trainer locks `out_dir`
    /// for its lifetime, so a second run on the same directory fails at once.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        specs: &[ParamSpec],
        build: impl FnOnce(VarBuilder) -> Result<O>,
        data: Vec<Vec<u32>>,
        dropped_examples: usize,
        tokenizer: TextTokenizer,
        train: TrainConfig,
        out_dir: &Path,
        device: &Device,
    ) -> Result<Self> {
        train.validate()?;
        if data.is_empty() {
            return Err(Error::Config(
                "no training sequences (all were empty or too long?)".into(),
            ));
        }
        let lock = checkpoint::DirLock::acquire(out_dir)?;
        let resuming = out_dir.join(STATE_FILE).exists();
        if resuming {
            // Temporary files of writes a killed run left behind.
            let leftovers = inspect_output(out_dir)?.leftovers;
            remove_entries(out_dir, &leftovers)?;
        } else {
            ensure_fresh_output(out_dir)?;
        }
        let mut rng = StdRng::seed_from_u64(train.seed);
        let varmap = init_varmap(specs, &mut rng, device)?;
        let objective = build(VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        let mut vars: Vec<(String, candle_core::Var)> = varmap
            .data()
            .lock()
            .map_err(|_| Error::Config("poisoned VarMap".into()))?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let opt = AdamW::new(
            vars,
            AdamWConfig {
                weight_decay: train.weight_decay,
                ..Default::default()
            },
        )?;
        let ema = Ema::new(opt.vars(), train.ema_decay)?;
        let state = TrainState {
            step: 0,
            components: objective.component_names().iter().map(|s| s.to_string()).collect(),
            train,
            history: Vec::new(),
            elapsed_secs: 0.0,
            tokens_seen: 0,
            dropped_examples,
            tensors_file: None,
        };
        let order: Vec<usize> = (0..data.len()).collect();
        let mut trainer = Trainer {
            objective,
            varmap,
            opt,
            ema,
            data,
            order,
            cursor: usize::MAX,
            tokenizer,
            out_dir: out_dir.to_path_buf(),
            state,
            rng,
            device: device.clone(),
            _lock: lock,
        };
        if resuming {
            trainer.resume()?;
        } else {
            // Commit the starting point at once, so a run killed before its first checkpoint
            // resumes (from step 0) instead of finding a directory it may not write over.
            trainer.save()?;
        }
        Ok(trainer)
    }

    /// Restores weights, optimizer moments, EMA and history from `out_dir`.
    fn resume(&mut self) -> Result<()> {
        let dir = self.out_dir.clone();
        let saved: TrainState = read_json(&dir.join(STATE_FILE))?;
        let tensors_file = saved.tensors_file.as_deref().unwrap_or(STATE_TENSORS_FILE);
        if !is_state_tensors_file(tensors_file) {
            return Err(Error::checkpoint(
                &dir,
                format!("{STATE_FILE} names {tensors_file:?}, which is not a state tensors file of this directory"),
            ));
        }
        let tensors = checkpoint::load_tensors(&dir, tensors_file, &self.device)?;
        for (name, var) in self.opt.vars() {
            let key = format!("param.{name}");
            let t = tensors
                .get(&key)
                .ok_or_else(|| Error::checkpoint(&dir, format!("{tensors_file}: `{key}` is missing")))?;
            if t.dims() != var.dims() {
                return Err(Error::checkpoint(
                    &dir,
                    format!(
                        "{tensors_file}: `{key}` has shape {:?}, the model expects {:?}",
                        t.dims(),
                        var.dims()
                    ),
                ));
            }
            var.set(t)?;
        }
        self.opt
            .load_state(&tensors, saved.step)
            .map_err(|m| Error::checkpoint(&dir, m))?;
        let ema = if saved.tensors_file.is_some() {
            tensors
                .iter()
                .filter_map(|(k, t)| k.strip_prefix("ema.").map(|name| (name.to_string(), t.clone())))
                .collect()
        } else {
            checkpoint::load_tensors(&dir, checkpoint::WEIGHTS_FILE, &self.device)?
        };
        self.ema
            .load(&ema, saved.step)
            .map_err(|m| Error::checkpoint(&dir, m))?;
        // Keep the new run's step budget and settings; carry history and counters over.
        self.state.step = saved.step;
        self.state.history = saved.history;
        self.state.elapsed_secs = saved.elapsed_secs;
        self.state.tokens_seen = saved.tokens_seen;
        self.rng =
            StdRng::seed_from_u64(self.state.train.seed ^ (saved.step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        Ok(())
    }

    /// Starts the run from `weights` (a trained model's, to fine-tune it) instead of the
    /// seed's random initialisation; the EMA starts from them too. Every parameter must be there
    /// with its shape, and only a run that has not taken a step can start over.
    pub fn init_from(&mut self, weights: &HashMap<String, Tensor>) -> Result<()> {
        if self.state.step > 0 {
            return Err(Error::Config(format!(
                "cannot start from other weights: this run already took {} steps (it resumed from {})",
                self.state.step,
                self.out_dir.display()
            )));
        }
        for (name, var) in self.opt.vars() {
            let t = weights
                .get(name)
                .ok_or_else(|| Error::Config(format!("the initial weights have no `{name}`")))?;
            if t.dims() != var.dims() {
                return Err(Error::Config(format!(
                    "initial weight `{name}` has shape {:?}, the model expects {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(&t.to_device(&self.device)?.to_dtype(var.dtype())?)?;
        }
        self.ema = Ema::new(self.opt.vars(), self.state.train.ema_decay)?;
        Ok(())
    }

    /// Steps completed so far.
    pub fn step_count(&self) -> usize {
        self.state.step
    }

    /// The run's state (history, counters).
    pub fn state(&self) -> &TrainState {
        &self.state
    }

    /// The EMA weights by parameter name.
    pub fn ema_weights(&self) -> &HashMap<String, Tensor> {
        self.ema.tensors()
    }

    /// Whether the optimizer state holds autograd graphs (a leak; see `AdamW::step`).
    pub fn optimizer_state_records_ops(&self) -> bool {
        self.opt.state_records_ops()
    }

    /// The current (raw) weights by parameter name.
    pub fn raw_weights(&self) -> Result<HashMap<String, Tensor>> {
        Ok(self
            .opt
            .vars()
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect())
    }

    fn next_batch(&mut self) -> Result<Tensor> {
        let b = self.state.train.batch_size;
        let l = self.data[0].len();
        let mut ids = Vec::with_capacity(b * l);
        for _ in 0..b {
            if self.cursor >= self.order.len() {
                self.order.shuffle(&mut self.rng);
                self.cursor = 0;
            }
            ids.extend_from_slice(&self.data[self.order[self.cursor]]);
            self.cursor += 1;
        }
        Ok(Tensor::from_vec(ids, (b, l), &self.device)?)
    }

    /// One optimizer step; returns the loss components.
    pub fn train_step(&mut self) -> Result<Vec<f64>> {
        let batch = self.next_batch()?;
        if !self.device.is_cpu() && !crate::nn::kernels::fused_on(&self.device) {
            // Dropout masks on a GPU without the fused kernels come from the device's generator
            // (see `nn::dropout`), seeded from the run's seed and the step, so a resumed run draws
            // the same masks. (With the fused CUDA kernels each mask is seeded by one draw from the
            // run's generator instead: recreating candle's CUDA generator every step was slow.)
            let seed = self.state.train.seed ^ (self.state.step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            self.device.set_seed(seed)?;
        }
        let (loss, parts) = self.objective.loss(&batch, &mut self.rng)?;
        if !parts[0].is_finite() {
            return Err(Error::Config(format!(
                "loss became {} at step {}; lower the learning rate or enable gradient clipping",
                parts[0], self.state.step
            )));
        }
        let grads = loss.backward()?;
        let t = &self.state.train;
        let lr = linear_lr(t.lr, self.state.step, t.steps, t.warmup_steps);
        let params = self.opt.step(&grads, lr, t.grad_clip)?;
        self.ema.update(&params)?;
        self.state.step += 1;
        self.state.tokens_seen += batch.elem_count() as u64;
        Ok(parts)
    }

    /// Trains until `steps`, with a progress bar (or log lines when `progress` is false or
    /// stderr is not a terminal, where a bar would not show), checkpoints every
    /// `checkpoint_every` steps and at the end.
    pub fn run(&mut self, progress: bool) -> Result<TrainSummary> {
        let progress = progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
        let total = self.state.train.steps;
        let start_step = self.state.step;
        let bar = if progress {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg} (eta {eta})")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            bar.set_position(start_step as u64);
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        let started = Instant::now();
        let elapsed_before = self.state.elapsed_secs;
        let tokens_before = self.state.tokens_seen;
        let mut acc = vec![0f64; self.state.components.len()];
        let mut acc_n = 0usize;
        let mut last = Vec::new();
        while self.state.step < total {
            let parts = self.train_step()?;
            for (a, p) in acc.iter_mut().zip(&parts) {
                *a += p;
            }
            acc_n += 1;
            last = parts;
            let secs = started.elapsed().as_secs_f64();
            let tps = (self.state.tokens_seen - tokens_before) as f64 / secs.max(1e-9);
            self.state.elapsed_secs = elapsed_before + secs;
            let step = self.state.step;
            if step % self.state.train.log_every.max(1) == 0 || step == total {
                let means: Vec<f64> = acc.iter().map(|a| a / acc_n as f64).collect();
                let msg = self
                    .state
                    .components
                    .iter()
                    .zip(&means)
                    .map(|(n, v)| format!("{n} {v:.4}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                bar.set_message(format!("{msg} | {tps:.0} tok/s"));
                if !progress {
                    // A closed stderr must not stop training.
                    use std::io::Write;
                    let _ = writeln!(
                        std::io::stderr(),
                        "step {step}/{total} {msg} | {tps:.0} tok/s | {:.1}s",
                        self.state.elapsed_secs
                    );
                }
                self.state.history.push(HistoryPoint { step, values: means });
                acc.iter_mut().for_each(|a| *a = 0.0);
                acc_n = 0;
            }
            bar.set_position(step as u64);
            if step % self.state.train.checkpoint_every.max(1) == 0 && step < total {
                self.save()?;
            }
        }
        bar.finish();
        self.save()?;
        let secs = started.elapsed().as_secs_f64();
        Ok(TrainSummary {
            steps: self.state.step - start_step,
            final_losses: last,
            elapsed_secs: self.state.elapsed_secs,
            tokens_per_sec: (self.state.tokens_seen - tokens_before) as f64 / secs.max(1e-9),
        })
    }

    /// Writes the checkpoint (EMA weights), the resumable training state and the loss plot.
    ///
    /// Every file is replaced atomically ([`checkpoint::write_atomic`]), in an order that leaves
    /// a usable directory at every instant, whenever the process is killed:
    ///
    /// 1. the state tensors (raw weights, AdamW moments, EMA weights) go to a new file named after
    ///    the step, `train_state.<step>.safetensors`;
    /// 2. the checkpoint (`config.json`, `tokenizer.json`, `model.safetensors`);
    /// 3. `train_state.json`, which names the tensors file of step 1: this rename is the commit,
    ///    so the state a run resumes from is always one step's, whole;
    /// 4. every other state tensors file is removed, and `loss.png` is drawn.
    ///
    /// A crash between 2 and 3 leaves `model.safetensors` one checkpoint ahead of the state (a
    /// whole model all the same); the resumed run's next save replaces it.
    pub fn save(&self) -> Result<()> {
        let dir = &self.out_dir;
        let mut tensors = self.opt.state_tensors()?;
        for (name, var) in self.opt.vars() {
            tensors.insert(format!("param.{name}"), var.as_tensor().clone());
        }
        for (name, t) in self.ema.tensors() {
            tensors.insert(format!("ema.{name}"), t.clone());
        }
        let tensors_file = state_tensors_name(self.state.step);
        checkpoint::save_tensors(&dir.join(&tensors_file), &tensors)?;
        checkpoint::save_checkpoint(dir, self.objective.config(), &self.tokenizer, self.ema.tensors())?;
        let state = TrainState {
            tensors_file: Some(tensors_file.clone()),
            ..self.state.clone()
        };
        write_json(&dir.join(STATE_FILE), &state)?;
        // Best effort: the state is committed; a file that cannot be removed now goes next time.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if is_state_tensors_file(&name) && name != tensors_file {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        if self.state.history.len() >= 2 {
            let series: Vec<(&str, Vec<(f64, f64)>)> = self
                .state
                .components
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    (
                        name.as_str(),
                        self.state
                            .history
                            .iter()
                            .map(|h| (h.step as f64, h.values[i]))
                            .collect(),
                    )
                })
                .collect();
            checkpoint::write_atomic(&dir.join(LOSS_PLOT_FILE), |tmp| {
                crate::train::plot::loss_curve(tmp, "training loss", &series)
            })?;
        }
        Ok(())
    }

    /// Access to the variables (for tests that check gradients).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }
}

/// Encodes texts to fixed-length id sequences, dropping those that do not fit.
/// Returns the sequences and the number dropped.
pub fn encode_corpus(tokenizer: &TextTokenizer, texts: &[&str], len: usize) -> Result<(Vec<Vec<u32>>, usize)> {
    let mut out = Vec::with_capacity(texts.len());
    let mut dropped = 0;
    for text in texts {
        let mut ids = tokenizer.encode(text)?;
        if ids.is_empty() || ids.len() > len {
            dropped += 1;
            continue;
        }
        ids.resize(len, tokenizer.pad_id());
        out.push(ids);
    }
    Ok((out, dropped))
}

/// Builds a [`Trainer`] for the Diffusion-LM objective on `texts`.
pub fn diffusion_trainer(
    cfg: ModelConfig,
    tokenizer: TextTokenizer,
    texts: &[&str],
    train: TrainConfig,
    out_dir: &Path,
    device: &Device,
) -> Result<Trainer<DiffusionObjective>> {
    cfg.validate()?;
    if tokenizer.vocab_size() != cfg.vocab_size || tokenizer.pad_id() != cfg.pad_id {
        return Err(Error::Config(format!(
            "tokenizer (vocab {}, PAD {}) does not match the model config (vocab {}, PAD {})",
            tokenizer.vocab_size(),
            tokenizer.pad_id(),
            cfg.vocab_size,
            cfg.pad_id
        )));
    }
    let (data, dropped) = encode_corpus(&tokenizer, texts, cfg.seq_len)?;
    let specs = Denoiser::param_specs(&cfg);
    Trainer::new(
        &specs,
        |vb| DiffusionObjective::new(vb, &cfg),
        data,
        dropped,
        tokenizer,
        train,
        out_dir,
        device,
    )
}

/// Trains a diffusion LM on `texts` (no progress bar) and returns it with its EMA weights.
pub fn train_diffusion(
    cfg: ModelConfig,
    tokenizer: TextTokenizer,
    texts: &[&str],
    train: TrainConfig,
    out_dir: &Path,
    device: &Device,
) -> Result<DiffusionLm> {
    let mut trainer = diffusion_trainer(cfg.clone(), tokenizer.clone(), texts, train, out_dir, device)?;
    trainer.run(false)?;
    DiffusionLm::from_weights(cfg, tokenizer, trainer.ema_weights().clone(), device)
}
