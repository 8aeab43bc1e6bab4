//! Model configuration, stored as `config.json` in every checkpoint directory.
//!
//! Every size of the denoiser lives here, so a checkpoint can be rebuilt from its config alone.
//!
//! ```
//! use diffusion_lm::ModelConfig;
//! let cfg = ModelConfig::tiny(100);
//! assert_eq!(cfg.vocab_size, 100);
//! cfg.validate().unwrap();
//! let json = serde_json::to_string(&cfg).unwrap();
//! let back: ModelConfig = serde_json::from_str(&json).unwrap();
//! assert_eq!(back, cfg);
//! ```

use serde::{Deserialize, Serialize};

use crate::engine::schedule::ScheduleKind;
use crate::{Error, Result};

/// Upper bounds [`ModelConfig::validate`] puts on the sizes: far beyond any trainable model, and
/// small enough that building a model's parameter list or noise schedule from a corrupt config
/// cannot exhaust memory before its weights are checked.
pub const MAX_VOCAB_SIZE: usize = 1 << 24;
/// See [`MAX_VOCAB_SIZE`]; bounds `seq_len`, `embed_dim`, `hidden`, `heads`, `ffn_hidden` and
/// `diffusion_steps`.
pub const MAX_SIZE: usize = 1 << 20;
/// See [`MAX_VOCAB_SIZE`].
pub const MAX_LAYERS: usize = 1 << 12;

/// Sizes and hyper-parameters of the denoiser and its diffusion process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Number of tokens, PAD included. Must equal the tokenizer's vocabulary size.
    pub vocab_size: usize,
    /// Id of the PAD token that fills the tail of each sequence.
    pub pad_id: u32,
    /// Fixed sequence length in tokens.
    pub seq_len: usize,
    /// Dimension d of the word embeddings (the diffusion space). The paper used 16 for E2E.
    pub embed_dim: usize,
    /// Width of the transformer.
    pub hidden: usize,
    /// Number of transformer layers.
    pub layers: usize,
    /// Attention heads per layer; must divide `hidden`.
    pub heads: usize,
    /// Width of each feed-forward block.
    pub ffn_hidden: usize,
    /// Dropout used in training.
    pub dropout: f32,
    /// Number of diffusion steps T.
    pub diffusion_steps: usize,
    /// The noise schedule (`"sqrt"` in `config.json`).
    pub schedule: ScheduleKind,
    /// How the denoiser outputs its prediction of `x0` (`"x0_head"` in `config.json`; absent
    /// means [`X0Head::Direct`], Diffusion-LM's).
    #[serde(default, skip_serializing_if = "X0Head::is_direct")]
    pub x0_head: X0Head,
    /// Whether the denoiser was trained with a random share of each sequence given clean, as
    /// known tokens at time 0 beside the noisy rest (`"clean_context"` in `config.json`; absent
    /// means `false`). Such a model reads tokens the sampler has committed as context, the way a
    /// masked model reads its unmasked tokens (see [`crate::GenerationConfig::commit`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clean_context: bool,
}

/// How the denoiser writes its prediction of the clean embeddings `x0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum X0Head {
    /// A small MLP maps the transformer's output straight to `x0` (Diffusion-LM), trained by
    /// the mean squared error alone.
    #[default]
    Direct,
    /// The transformer's output gives logits over the vocabulary, and `x0` is the embedding
    /// they expect, `softmax(logits) · E` (CDCD's score interpolation). Training adds the
    /// logits' cross-entropy against the clean tokens, a per-token signal the squared error of
    /// a 16-dimensional vector lacks.
    Softmax,
}

impl X0Head {
    /// Whether this is [`X0Head::Direct`] (left out of `config.json`).
    pub fn is_direct(&self) -> bool {
        *self == X0Head::Direct
    }
}

impl std::str::FromStr for X0Head {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "direct" => Ok(X0Head::Direct),
            "softmax" => Ok(X0Head::Softmax),
            _ => Err(format!("unknown x0 head {s:?}: expected direct or softmax")),
        }
    }
}

impl ModelConfig {
    /// A very small model, for tests and examples.
    pub fn tiny(vocab_size: usize) -> Self {
        ModelConfig {
            vocab_size,
            pad_id: 0,
            seq_len: 16,
            embed_dim: 8,
            hidden: 32,
            layers: 1,
            heads: 2,
            ffn_hidden: 64,
            dropout: 0.0,
            diffusion_steps: 200,
            schedule: ScheduleKind::Sqrt,
            x0_head: X0Head::Direct,
            clean_context: false,
        }
    }

    /// The size of the shipped E2E model.
    pub fn e2e_default(vocab_size: usize) -> Self {
        ModelConfig {
            vocab_size,
            pad_id: 0,
            seq_len: 64,
            embed_dim: 16,
            hidden: 128,
            layers: 4,
            heads: 4,
            ffn_hidden: 512,
            dropout: 0.1,
            diffusion_steps: 2000,
            schedule: ScheduleKind::Sqrt,
            x0_head: X0Head::Direct,
            clean_context: false,
        }
    }

    /// Checks that every value is usable, naming the first one that is not.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.vocab_size < 2 {
            return bad(format!("vocab_size must be at least 2, got {}", self.vocab_size));
        }
        for (name, v, max) in [
            ("vocab_size", self.vocab_size, MAX_VOCAB_SIZE),
            ("seq_len", self.seq_len, MAX_SIZE),
            ("embed_dim", self.embed_dim, MAX_SIZE),
            ("hidden", self.hidden, MAX_SIZE),
            ("layers", self.layers, MAX_LAYERS),
            ("heads", self.heads, MAX_SIZE),
            ("ffn_hidden", self.ffn_hidden, MAX_SIZE),
            ("diffusion_steps", self.diffusion_steps, MAX_SIZE),
        ] {
            if v > max {
                return bad(format!("{name} must be at most {max}, got {v}"));
            }
        }
        if self.pad_id as usize >= self.vocab_size {
            return bad(format!(
                "pad_id {} is outside the vocabulary of {}",
                self.pad_id, self.vocab_size
            ));
        }
        for (name, v) in [
            ("seq_len", self.seq_len),
            ("embed_dim", self.embed_dim),
            ("hidden", self.hidden),
            ("layers", self.layers),
            ("heads", self.heads),
            ("ffn_hidden", self.ffn_hidden),
        ] {
            if v == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        if self.hidden % self.heads != 0 {
            return bad(format!(
                "hidden {} is not divisible by heads {}",
                self.hidden, self.heads
            ));
        }
        if self.hidden % 2 != 0 {
            return bad(format!(
                "hidden {} must be even (sinusoidal time embedding)",
                self.hidden
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.diffusion_steps < 2 {
            return bad(format!(
                "diffusion_steps must be at least 2, got {}",
                self.diffusion_steps
            ));
        }
        Ok(())
    }
}
