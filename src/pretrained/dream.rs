//! Dream (Ye et al. 2025, `Dream-org/Dream-v0-Base-7B` / `-Instruct-7B`) and DiffuCoder
//! (`apple/DiffuCoder-7B-*`, the same code): the Qwen2 transformer with bidirectional attention,
//! adapted from Qwen2.5 into a masked diffusion model.
//!
//! ```text
//! ids [B, L] ──embed_tokens──> layers.0..N ──norm──> lm_head ──> out [B, L, vocab_size]
//! layer: x + o_proj(attention(rope(q_proj(n)), rope(k_proj(n)), v_proj(n)))   n = input_layernorm(x)
//!        x + down_proj(silu(gate_proj(m)) · up_proj(m))                      m = post_attention_layernorm(x)
//! ```
//!
//! Because Dream keeps the autoregressive model's output alignment, the output at position `i`
//! scores the token at position `i + 1`: the sampler reads the prediction for position `i` from
//! output `i − 1` (and for position 0 from output 0), as Dream's `generation_utils.py` does;
//! [`Dream::forward`] returns the raw outputs and [`Dream::aligned`] the shifted ones.
//!
//! Tensor and config names follow the published checkpoint (`modeling_dream.py`):
//! `model.embed_tokens.weight`, `model.layers.{i}.self_attn.{q,k,v}_proj.{weight,bias}`,
//! `model.layers.{i}.self_attn.o_proj.weight`, `model.layers.{i}.mlp.{gate,up,down}_proj.weight`,
//! `model.layers.{i}.{input,post_attention}_layernorm.weight`, `model.norm.weight`,
//! `lm_head.weight`.

use candle_core::{Module, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};
use serde::Deserialize;

use super::layers::{self, AttentionSizes, LlamaBlock, RmsNorm, Rope};
use super::snapshot::TensorSpec;
use crate::{Error, Result};

/// The `model_type` of a Dream `config.json` (compared without case).
pub const MODEL_TYPE: &str = "Dream";

/// The fields of Dream's `config.json` the model reads (the file has more; they are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DreamConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Number of layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// Rows of the embedding and of the output layer.
    pub vocab_size: usize,
    /// RoPE base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// The `[MASK]` token.
    pub mask_token_id: u32,
    /// End of text; also what fills the tail of a generation.
    pub eos_token_id: u32,
    /// Padding token (Dream: the EOS token).
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Output layer shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Must be `"silu"`.
    #[serde(default)]
    pub hidden_act: Option<String>,
    /// Must be null (no rope scaling).
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// Must be false.
    #[serde(default)]
    pub use_sliding_window: bool,
}

fn default_theta() -> f64 {
    10_000.0
}
fn default_eps() -> f64 {
    1e-6
}

impl DreamConfig {
    fn sizes(&self) -> AttentionSizes {
        AttentionSizes {
            heads: self.num_attention_heads,
            kv_heads: self.num_key_value_heads,
            head_dim: self.hidden_size / self.num_attention_heads,
        }
    }

    /// Refuses the variants this implementation does not compute.
    pub fn validate(&self) -> Result<()> {
        let unsupported = |what: String| Err(Error::Config(format!("Dream config: {what} is not supported")));
        if self.hidden_act.as_deref().is_some_and(|a| a != "silu") {
            return unsupported(format!("hidden_act {:?}", self.hidden_act));
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return unsupported("rope_scaling".into());
        }
        if self.use_sliding_window {
            return unsupported("use_sliding_window".into());
        }
        let (h, a, k) = (self.hidden_size, self.num_attention_heads, self.num_key_value_heads);
        if h == 0 || a == 0 || h % a != 0 || k == 0 || a % k != 0 {
            return Err(Error::Config(format!(
                "Dream config: hidden_size {h}, num_attention_heads {a}, num_key_value_heads {k}: \
                 the heads must divide the width and the key/value heads the heads"
            )));
        }
        for (name, id) in [
            ("mask_token_id", self.mask_token_id),
            ("eos_token_id", self.eos_token_id),
        ] {
            if id as usize >= self.vocab_size {
                return Err(Error::Config(format!(
                    "Dream config: {name} {id} is outside the vocabulary of {}",
                    self.vocab_size
                )));
            }
        }
        Ok(())
    }

    /// Every tensor the model reads, with its shape.
    pub fn tensors(&self) -> Vec<TensorSpec> {
        let (d, f, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let kv = self.num_key_value_heads * (d / self.num_attention_heads);
        let mut out = vec![
            TensorSpec::new("model.embed_tokens.weight", &[v, d]),
            TensorSpec::new("model.norm.weight", &[d]),
        ];
        if !self.tie_word_embeddings {
            out.push(TensorSpec::new("lm_head.weight", &[v, d]));
        }
        for i in 0..self.num_hidden_layers {
            let p = |n: &str| format!("model.layers.{i}.{n}");
            out.push(TensorSpec::new(p("input_layernorm.weight"), &[d]));
            out.push(TensorSpec::new(p("post_attention_layernorm.weight"), &[d]));
            for (name, o) in [("q_proj", d), ("k_proj", kv), ("v_proj", kv)] {
                out.push(TensorSpec::new(p(&format!("self_attn.{name}.weight")), &[o, d]));
                out.push(TensorSpec::new(p(&format!("self_attn.{name}.bias")), &[o]));
            }
            out.push(TensorSpec::new(p("self_attn.o_proj.weight"), &[d, d]));
            out.push(TensorSpec::new(p("mlp.gate_proj.weight"), &[f, d]));
            out.push(TensorSpec::new(p("mlp.up_proj.weight"), &[f, d]));
            out.push(TensorSpec::new(p("mlp.down_proj.weight"), &[d, f]));
        }
        out
    }
}

/// The Dream transformer.
pub struct Dream {
    cfg: DreamConfig,
    embed_tokens: Embedding,
    layers: Vec<LlamaBlock>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
}

impl Dream {
    /// Builds the model from `vb` (rooted at the checkpoint's top level).
    pub fn new(vb: VarBuilder, cfg: &DreamConfig) -> Result<Self> {
        cfg.validate()?;
        let (d, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let kv = cfg.num_key_value_heads * (d / cfg.num_attention_heads);
        let m = vb.pp("model");
        let embed_tokens = candle_nn::embedding(v, d, m.pp("embed_tokens"))?;
        let lm_head = if cfg.tie_word_embeddings {
            Linear::new(embed_tokens.embeddings().clone(), None)
        } else {
            layers::linear(d, v, false, vb.pp("lm_head"))?
        };
        let eps = cfg.rms_norm_eps;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = m.pp("layers").pp(i);
                let a = l.pp("self_attn");
                let p = l.pp("mlp");
                Ok(LlamaBlock {
                    attn_norm: RmsNorm::new(d, eps, l.pp("input_layernorm"))?,
                    mlp_norm: RmsNorm::new(d, eps, l.pp("post_attention_layernorm"))?,
                    q: layers::linear(d, d, true, a.pp("q_proj"))?,
                    k: layers::linear(d, kv, true, a.pp("k_proj"))?,
                    v: layers::linear(d, kv, true, a.pp("v_proj"))?,
                    o: layers::linear(d, d, false, a.pp("o_proj"))?,
                    gate: layers::linear(d, f, false, p.pp("gate_proj"))?,
                    up: layers::linear(d, f, false, p.pp("up_proj"))?,
                    down: layers::linear(f, d, false, p.pp("down_proj"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Dream {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm: RmsNorm::new(d, eps, m.pp("norm"))?,
            lm_head,
            rope: Rope::new(cfg.rope_theta, d / cfg.num_attention_heads, false),
        })
    }

    /// The config.
    pub fn config(&self) -> &DreamConfig {
        &self.cfg
    }

    /// The raw outputs `[B, L, vocab_size]` for ids `[B, L]`: output `i` scores token `i + 1`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.outputs(ids, 0, ids.dim(1)?)
    }

    /// Raw outputs `lo..hi` only (the output layer runs on those rows alone).
    fn outputs(&self, ids: &Tensor, lo: usize, hi: usize) -> Result<Tensor> {
        let s = self.cfg.sizes();
        let mut x = self.embed_tokens.forward(ids)?;
        for l in &self.layers {
            x = l.forward(&x, &self.rope, s)?;
        }
        let x = x.narrow(1, lo, hi - lo)?;
        Ok(self.lm_head.forward(&self.norm.forward(&x)?)?)
    }

    /// Scores aligned with the positions: row `i` scores token `i` (output `i − 1`; row 0 is
    /// output 0, as in Dream's sampler, and position 0 is always part of the prompt there).
    pub fn aligned(&self, ids: &Tensor) -> Result<Tensor> {
        shift_right(&self.forward(ids)?)
    }

    /// The aligned scores of positions `from..L` only.
    pub fn aligned_from(&self, ids: &Tensor, from: usize) -> Result<Tensor> {
        let l = ids.dim(1)?;
        match from.min(l) {
            // Row 0 is output 0: the shift of every output.
            0 => self.aligned(ids),
            // Rows from..L are outputs from−1..L−1.
            f => self.outputs(ids, f - 1, l - 1),
        }
    }
}

/// `[B, L, V]` → `[B, L, V]` with row `i` taken from row `i − 1` (row 0 kept).
pub(crate) fn shift_right(out: &Tensor) -> Result<Tensor> {
    let l = out.dim(1)?;
    if l <= 1 {
        return Ok(out.clone());
    }
    Ok(Tensor::cat(&[&out.narrow(1, 0, 1)?, &out.narrow(1, 0, l - 1)?], 1)?)
}
