//! Pretrained masked diffusion LLMs from a local Hugging Face snapshot: LLaDA ([`llada`]),
//! Dream and DiffuCoder ([`dream`]), run by the masked engine's exact constrained sampler
//! ([`crate::masked::MaskedGenerator`]).
//!
//! A snapshot directory holds `config.json` (whose `model_type` names the architecture), the
//! weights (`model.safetensors`, or shards with `model.safetensors.index.json`; memory-mapped,
//! [`snapshot`]), `tokenizer.json`, and for Instruct models a chat template in
//! `tokenizer_config.json` ([`chat`]). The weights are converted to the compute dtype (f32, bf16
//! or f16) as they are read.
//!
//! The prompt is context: it is prepended to the generated span at every step and never
//! constrained; the constraints hold on the generated span, whose tail is filled with the
//! end-of-text token.
//!
//! ```no_run
//! use diffusion_lm::masked::MaskedGenerator;
//! use diffusion_lm::pretrained::PretrainedLm;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = candle_core::Device::Cpu;
//! let lm = PretrainedLm::load("/models/LLaDA-8B-Instruct", &device, candle_core::DType::BF16)?;
//! let prompt = lm.prompt("Name a French city.", None)?;
//! for s in MaskedGenerator::new(&lm).prompt(prompt).length(32).steps(32).block_size(32).generate(1)? {
//!     println!("{}", s.text);
//! }
//! # Ok(()) }
//! ```
//!
//! Costs: every step runs the whole transformer over prompt and span (no key/value cache), so a
//! generation of `L` tokens in `K` steps costs `K` forward passes over `prompt + L` tokens. On
//! a CPU an 8B model in f32 needs 32 GB of memory and seconds per step; use a GPU.

pub mod chat;
pub mod dream;
mod layers;
pub mod llada;
pub mod snapshot;
mod tokenizer;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};

use crate::masked::MaskedModel;
use crate::steer::TokenIndex;
use crate::{Error, Result, TextTokenizer};

pub use chat::{ChatTemplate, Message};
pub use dream::{Dream, DreamConfig};
pub use llada::{Llada, LladaConfig};
pub use snapshot::Snapshot;

/// Tokens that end an answer before the end-of-text tail: the end of turn of the chat formats
/// (LLaMA 3 / LLaDA, ChatML / Qwen2 / Dream) and DiffuCoder's padding.
const END_OF_TURN: [&str; 3] = ["<|eot_id|>", "<|im_end|>", "<|dlm_pad|>"];

/// The architectures a snapshot can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// LLaDA (`model_type` `llada`).
    Llada,
    /// Dream and DiffuCoder (`model_type` `Dream`).
    Dream,
}

impl Architecture {
    /// The architecture of a `config.json` `model_type`, if supported.
    pub fn from_model_type(t: &str) -> Option<Self> {
        if t.eq_ignore_ascii_case(llada::MODEL_TYPE) {
            Some(Architecture::Llada)
        } else if t.eq_ignore_ascii_case(dream::MODEL_TYPE) {
            Some(Architecture::Dream)
        } else {
            None
        }
    }
}

enum Net {
    Llada(Llada),
    Dream(Dream),
}

/// A pretrained masked diffusion LLM loaded from a snapshot directory.
pub struct PretrainedLm {
    dir: PathBuf,
    arch: Architecture,
    net: Net,
    tokenizer: TextTokenizer,
    index: OnceLock<TokenIndex>,
    chat: Option<ChatTemplate>,
    vocab: usize,
    mask_id: u32,
    eos_id: u32,
    stops: Vec<u32>,
    banned: Vec<u32>,
    bos_id: Option<u32>,
    max_len: usize,
    dtype: DType,
    device: Device,
}

impl PretrainedLm {
    /// Loads the snapshot in `dir` onto `device`, computing in `dtype` (f32, bf16 or f16).
    pub fn load(dir: impl AsRef<Path>, device: &Device, dtype: DType) -> Result<Self> {
        Self::load_inner(dir.as_ref(), device, dtype, false)
    }

    /// The architecture of the snapshot in `dir` (its `config.json` and tokenizer) with random
    /// weights instead of its own, which need not be there: for timing a full-size model
    /// without its weights.
    pub fn with_random_weights(dir: impl AsRef<Path>, device: &Device, dtype: DType) -> Result<Self> {
        Self::load_inner(dir.as_ref(), device, dtype, true)
    }

    fn load_inner(dir: &Path, device: &Device, dtype: DType, random: bool) -> Result<Self> {
        let dir = dir.to_path_buf();
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(Error::Config(format!("dtype {dtype:?}: expected f32, bf16 or f16")));
        }
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::checkpoint(&dir, "config.json is missing"));
        }
        let raw: serde_json::Value = crate::train::checkpoint::read_json(&config_path)?;
        let model_type = raw.get("model_type").and_then(|t| t.as_str()).unwrap_or("");
        let arch = Architecture::from_model_type(model_type).ok_or_else(|| {
            Error::checkpoint(
                &dir,
                format!("config.json: model_type {model_type:?} is not a supported pretrained model (llada, Dream)"),
            )
        })?;
        let parse = |e: serde_json::Error| Error::checkpoint(&dir, format!("config.json: {e}"));
        let invalid = |e: Error| Error::checkpoint(&dir, format!("config.json: {}", e.bare_message()));
        let snapshot = if random { None } else { Some(Snapshot::open(&dir)?) };
        enum Parsed {
            Llada(LladaConfig),
            Dream(DreamConfig),
        }
        let max_field = |name: &str, default: u64| raw.get(name).and_then(|v| v.as_u64()).unwrap_or(default);
        let (parsed, specs, vocab, mask_id, eos_id, max_len) = match arch {
            Architecture::Llada => {
                let c: LladaConfig = serde_json::from_value(raw.clone()).map_err(parse)?;
                c.validate().map_err(invalid)?;
                let (specs, v, m, e) = (c.tensors(), c.embedding_rows(), c.mask_token_id, c.eos_token_id);
                (Parsed::Llada(c), specs, v, m, e, max_field("max_sequence_length", 4096))
            }
            Architecture::Dream => {
                let c: DreamConfig = serde_json::from_value(raw.clone()).map_err(parse)?;
                c.validate().map_err(invalid)?;
                let (specs, v, m, e) = (c.tensors(), c.vocab_size, c.mask_token_id, c.eos_token_id);
                (
                    Parsed::Dream(c),
                    specs,
                    v,
                    m,
                    e,
                    max_field("max_position_embeddings", 32768),
                )
            }
        };
        if let Some(snapshot) = &snapshot {
            snapshot.check(&specs)?;
        }
        let tokenizer = tokenizer::load(&dir, eos_id)?;
        // An Instruct model ends its turn with an end-of-turn token before the end-of-text
        // tail: the answer stops there too.
        let stops: Vec<u32> = END_OF_TURN
            .iter()
            .filter_map(|t| tokenizer.token_id(t))
            .filter(|&t| t != eos_id && (t as usize) < vocab)
            .collect();
        let tokenizer = tokenizer.with_stops(stops.clone());
        // Output rows the tokenizer has no token for (LLaDA pads its 126,464 rows) are never
        // committed.
        let banned: Vec<u32> = (tokenizer.vocab_size() as u32..vocab as u32).collect();
        let bos = raw.get("bos_token_id").and_then(|v| v.as_u64()).map(|v| v as u32);
        if tokenizer.vocab_size() > vocab {
            return Err(Error::checkpoint(
                &dir,
                format!(
                    "tokenizer.json has {} tokens, more than the model's {vocab} output rows",
                    tokenizer.vocab_size()
                ),
            ));
        }
        let chat = ChatTemplate::from_dir(&dir)?;
        let vb = match snapshot {
            Some(snapshot) => snapshot.var_builder(dtype, device),
            None => candle_nn::VarBuilder::from_backend(Box::new(snapshot::RandomWeights), dtype, device.clone()),
        };
        let net = match &parsed {
            Parsed::Llada(c) => Net::Llada(Llada::new(vb, c)?),
            Parsed::Dream(c) => Net::Dream(Dream::new(vb, c)?),
        };
        Ok(PretrainedLm {
            dir,
            arch,
            net,
            tokenizer,
            index: OnceLock::new(),
            chat,
            vocab,
            mask_id,
            eos_id,
            stops,
            banned,
            bos_id: bos,
            max_len: max_len as usize,
            dtype,
            device: device.clone(),
        })
    }

    /// The snapshot directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Which architecture.
    pub fn architecture(&self) -> Architecture {
        self.arch
    }

    /// The compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The end-of-text id, which fills the tail of every generation.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// The settings of LLaDA's reference sampler: 128 tokens in 128 steps, blocks of 32,
    /// low-confidence remasking, temperature 0 (the CLI's defaults for pretrained snapshots).
    pub fn reference_sampling() -> crate::masked::MaskedSampling {
        crate::masked::MaskedSampling {
            steps: 128,
            temperature: 0.0,
            block_size: Some(32),
            length: Some(128),
            batch_size: 8,
            ..Default::default()
        }
    }

    /// The chat template of `tokenizer_config.json`, if the snapshot has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat.as_ref()
    }

    /// The model's raw outputs `[B, L, V]` (for Dream, output `i` scores token `i + 1`).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        match &self.net {
            Net::Llada(m) => m.forward(ids),
            Net::Dream(m) => m.forward(ids),
        }
    }

    /// The prompt's token ids: with a chat template, `text` (and `system`, if given) as chat
    /// messages followed by the assistant's turn; without one, `text` as it is.
    pub fn prompt(&self, text: &str, system: Option<&str>) -> Result<Vec<u32>> {
        let rendered = match &self.chat {
            Some(t) => {
                let mut messages = Vec::new();
                if let Some(s) = system {
                    messages.push(Message::system(s));
                }
                messages.push(Message::user(text));
                t.render(&messages, true)?
            }
            None => match system {
                Some(s) => format!("{s}\n\n{text}"),
                None => text.to_string(),
            },
        };
        self.tokenizer.encode(&rendered)
    }
}

impl MaskedModel for PretrainedLm {
    fn logits(&self, ids: &Tensor) -> Result<Tensor> {
        match &self.net {
            Net::Llada(m) => m.forward(ids),
            Net::Dream(m) => m.aligned(ids),
        }
    }
    fn logits_from(&self, ids: &Tensor, from: usize) -> Result<Tensor> {
        match &self.net {
            Net::Llada(m) => m.forward_from(ids, from),
            Net::Dream(m) => m.aligned_from(ids, from),
        }
    }
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn mask_id(&self) -> u32 {
        self.mask_id
    }
    fn pad_id(&self) -> u32 {
        self.eos_id
    }
    fn max_len(&self) -> Option<usize> {
        Some(self.max_len)
    }
    fn default_length(&self) -> usize {
        128
    }
    fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }
    fn token_index(&self) -> &TokenIndex {
        self.index
            .get_or_init(|| TokenIndex::with_vocab_size(&self.tokenizer, self.vocab))
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn end_tokens(&self) -> &[u32] {
        &self.stops
    }
    fn banned_tokens(&self) -> &[u32] {
        &self.banned
    }
    fn default_prompt(&self) -> Vec<u32> {
        // Dream's score for position 0 is the output at a prompt position: without a prompt,
        // the begin-of-text token (its config's `bos_token_id`, else end of text) stands in.
        match self.arch {
            Architecture::Dream => vec![self.bos_id.unwrap_or(self.eos_id)],
            Architecture::Llada => Vec::new(),
        }
    }
    fn constraint_support(&self) -> Result<()> {
        if self.tokenizer.is_byte_level() {
            return Ok(());
        }
        Err(Error::Config(format!(
            "{}: the tokenizer is not a byte-level BPE, so the token index cannot read its tokens' \
             bytes; hard constraints need one (LLaDA, Dream and DiffuCoder use one)",
            self.dir.display()
        )))
    }
}
