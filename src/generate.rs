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
use rand_distr::{Distribution, StandardNormal};

use crate::checkpoint;
use crate::nn::{check_tensors, Mode};
use crate::{Denoiser, Error, ModelConfig, NoiseSchedule, Result, Sampler, SamplerKind, TextTokenizer};

/// A trained diffusion LM: config, denoiser (EMA weights) and tokenizer.
pub struct DiffusionLm {
    pub config: ModelConfig,
    pub model: Denoiser,
    pub tokenizer: TextTokenizer,
    weights: HashMap<String, Tensor>,
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
        })
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
        }
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
        let sampler = self.validate()?;
        let bar = self.progress_bar(n, &sampler);
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(self.batch_size) {
            let count = self.batch_size.min(n - start);
            let ids = self.generate_batch(&sampler, start, count, &bar)?;
            for row in ids {
                let text = self.lm.tokenizer.decode_content(&row);
                out.push(Sample { text, ids: row });
            }
        }
        bar.finish_and_clear();
        Ok(out)
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

    /// Runs the reverse process for samples `start..start+count` and returns their token ids.
    fn generate_batch(
        &self,
        sampler: &Sampler,
        start: usize,
        count: usize,
        bar: &indicatif::ProgressBar,
    ) -> Result<Vec<Vec<u32>>> {
        let model = &self.lm.model;
        let device = model.device();
        let d = self.lm.config.embed_dim;
        let mut rngs: Vec<StdRng> = (start..start + count).map(|i| sample_rng(self.seed, i)).collect();
        let mut x = gaussian(&mut rngs, self.length * d, (count, self.length, d), device)?;
        let schedule = sampler.schedule();
        for i in (0..schedule.len()).rev() {
            let t = vec![schedule.timesteps()[i]; count];
            let mut x0 = model.forward(&x, &t, &mut Mode::Infer)?;
            if self.clamp {
                x0 = model.clamp(&x0)?.1;
            }
            let noise = if sampler.needs_noise(i) {
                Some(gaussian(&mut rngs, self.length * d, (count, self.length, d), device)?)
            } else {
                None
            };
            x = sampler.step(&x0, i, &x, noise.as_ref())?;
            bar.inc(1);
        }
        Ok(model.nearest_tokens(&x)?.to_vec2::<u32>()?)
    }
}

/// The noise generator of sample `index` under `seed`.
fn sample_rng(seed: u64, index: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Standard normal noise, `per_row` values from each row's generator.
fn gaussian(rngs: &mut [StdRng], per_row: usize, shape: (usize, usize, usize), device: &Device) -> Result<Tensor> {
    let mut data = Vec::with_capacity(rngs.len() * per_row);
    for rng in rngs.iter_mut() {
        data.extend((0..per_row).map(|_| {
            let z: f32 = StandardNormal.sample(rng);
            z
        }));
    }
    Ok(Tensor::from_vec(data, shape, device)?)
}
