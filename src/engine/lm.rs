//! A trained model ready to generate: [`DiffusionLm`] holds the config, the denoiser (EMA
//! weights), the tokenizer and the vocabulary's token index.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::engine::config::ModelConfig;
use crate::engine::denoiser::Denoiser;
use crate::nn::check_tensors;
use crate::steer::TokenIndex;
use crate::train::checkpoint;
use crate::{Error, Result, TextTokenizer};

/// A trained diffusion LM: config, denoiser (EMA weights) and tokenizer.
pub struct DiffusionLm {
    /// The model's sizes and diffusion settings.
    pub config: ModelConfig,
    /// The denoiser (with the word embeddings).
    pub model: Denoiser,
    /// The tokenizer.
    pub tokenizer: TextTokenizer,
    weights: HashMap<String, Tensor>,
    index: std::sync::OnceLock<TokenIndex>,
    lexicon: Option<crate::text::lexicon::Lexicon>,
    phrases: Option<crate::text::phrases::Phrases>,
    /// The lexicon's token automaton, built on first use (`None`: no lexicon, or too large).
    lexicon_automaton: std::sync::OnceLock<Option<crate::steer::automaton::TokenAutomaton>>,
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
        let mut lm = Self::from_weights(config, tokenizer, weights, device)?;
        let lexicon = dir.join(crate::text::lexicon::LEXICON_FILE);
        if lexicon.exists() {
            lm.set_lexicon(Some(crate::text::lexicon::Lexicon::load(lexicon)?));
        }
        let phrases = dir.join(crate::text::phrases::PHRASES_FILE);
        if phrases.exists() {
            lm.set_phrases(Some(crate::text::phrases::Phrases::load(phrases)?));
        }
        Ok(lm)
    }

    /// Loads a checkpoint directory on the device and in the compute dtype `config` names.
    pub fn load_for(dir: impl AsRef<Path>, config: &crate::generate::GenerationConfig) -> Result<Self> {
        let device = config.device.open()?;
        let mut lm = Self::load(dir, &device)?;
        if config.dtype.dtype() != DType::F32 {
            lm.set_compute_dtype(config.dtype.dtype())?;
        }
        Ok(lm)
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
            lexicon: None,
            phrases: None,
            lexicon_automaton: std::sync::OnceLock::new(),
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

    /// The words of the model's training corpus ([`crate::text::lexicon`]), when its checkpoint
    /// holds them (`lexicon.txt`); [`crate::GenerationConfig::lexicon`] keeps constrained text
    /// to them.
    pub fn lexicon(&self) -> Option<&crate::text::lexicon::Lexicon> {
        self.lexicon.as_ref()
    }

    /// Sets (or removes) the model's lexicon.
    pub fn set_lexicon(&mut self, lexicon: Option<crate::text::lexicon::Lexicon>) {
        self.lexicon = lexicon;
        self.lexicon_automaton = std::sync::OnceLock::new();
    }

    /// The word 4-grams of the model's training corpus ([`crate::text::phrases`]), when its
    /// checkpoint holds them (`phrases.txt`); [`crate::GenerationConfig::phrases`] prefers
    /// best-of candidates made of them.
    pub fn phrases(&self) -> Option<&crate::text::phrases::Phrases> {
        self.phrases.as_ref()
    }

    /// Sets (or removes) the model's phrases.
    pub fn set_phrases(&mut self, phrases: Option<crate::text::phrases::Phrases>) {
        self.phrases = phrases;
    }

    /// The lexicon's token automaton, built once; `None` without a lexicon, or when it exceeds
    /// [`crate::steer::stack::MAX_PRODUCT_STATES`] states.
    pub(crate) fn lexicon_automaton(&self) -> Option<&crate::steer::automaton::TokenAutomaton> {
        self.lexicon_automaton
            .get_or_init(|| {
                let lex = self.lexicon.as_ref()?;
                lex.automaton(self.token_index(), crate::steer::stack::MAX_PRODUCT_STATES)
                    .ok()
            })
            .as_ref()
    }
}
