//! LLaDA (Nie et al. 2025, `GSAI-ML/LLaDA-8B-Base` / `-Instruct`): a LLaMA-shaped transformer
//! with bidirectional attention, trained as a masked diffusion model.
//!
//! ```text
//! ids [B, L] ──wte──> blocks.0..N ──ln_f──> ff_out ──> logits [B, L, embedding_size]
//! block: x + attn_out(attention(rope(q_proj(n)), rope(k_proj(n)), v_proj(n)))   n = attn_norm(x)
//!        x + ff_out(silu(ff_proj(m)) · up_proj(m))                               m = ff_norm(x)
//! ```
//!
//! The logit at position `i` scores the token at position `i` (no shift). Tensor and config
//! names follow the published checkpoint (`modeling_llada.py`, `LLaDALlamaBlock`):
//! `model.transformer.wte.weight`, `model.transformer.blocks.{i}.{attn_norm, ff_norm,
//! q_proj, k_proj, v_proj, attn_out, ff_proj, up_proj, ff_out}.weight`,
//! `model.transformer.ln_f.weight`, `model.transformer.ff_out.weight`.

use candle_core::{Module, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};
use serde::Deserialize;

use super::layers::{self, AttentionSizes, LlamaBlock, RmsNorm, Rope};
use super::snapshot::TensorSpec;
use crate::{Error, Result};

/// The `model_type` of a LLaDA `config.json`.
pub const MODEL_TYPE: &str = "llada";

/// The fields of LLaDA's `config.json` the model reads (the file has more; they are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LladaConfig {
    /// Width of the residual stream.
    pub d_model: usize,
    /// Number of blocks.
    pub n_layers: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Key/value heads (`None`: as many as `n_heads`).
    #[serde(default)]
    pub n_kv_heads: Option<usize>,
    /// Width of the feed-forward layer (`None`: `mlp_ratio · d_model`).
    #[serde(default)]
    pub mlp_hidden_size: Option<usize>,
    /// Feed-forward ratio, used when `mlp_hidden_size` is absent.
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: usize,
    /// Tokenizer vocabulary.
    pub vocab_size: usize,
    /// Rows of the embedding and output matrices (`None`: `vocab_size`).
    #[serde(default)]
    pub embedding_size: Option<usize>,
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
    /// Output layer shares the embedding matrix.
    #[serde(default)]
    pub weight_tying: bool,
    /// Biases on every linear layer.
    #[serde(default)]
    pub include_bias: bool,
    /// Biases on the query/key/value projections.
    #[serde(default)]
    pub include_qkv_bias: bool,
    /// Logits scaled by `1/sqrt(d_model)`.
    #[serde(default)]
    pub scale_logits: bool,
    /// Must be `"llama"`.
    #[serde(default)]
    pub block_type: Option<String>,
    /// Must be `"rms"`.
    #[serde(default)]
    pub layer_norm_type: Option<String>,
    /// Must be true.
    #[serde(default = "yes")]
    pub rope: bool,
    /// Must be false.
    #[serde(default)]
    pub alibi: bool,
    /// Must be false (no query/key norm).
    #[serde(default)]
    pub attention_layer_norm: bool,
    /// Must be false (no norm on the input embeddings).
    #[serde(default)]
    pub input_emb_norm: bool,
    /// Rotate queries and keys in f32 whatever the compute dtype.
    #[serde(default = "yes")]
    pub rope_full_precision: bool,
    /// Must be `"silu"` (with the `llama` block: SwiGLU).
    #[serde(default)]
    pub activation_type: Option<String>,
    /// Must be false or null: norm biases are not read.
    #[serde(default)]
    pub bias_for_layer_norm: Option<bool>,
    /// Must be 1.
    #[serde(default)]
    pub block_group_size: Option<usize>,
}

fn default_mlp_ratio() -> usize {
    4
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

impl LladaConfig {
    /// Rows of the embedding and of the logits.
    pub fn embedding_rows(&self) -> usize {
        self.embedding_size.unwrap_or(self.vocab_size)
    }

    fn kv_heads(&self) -> usize {
        self.n_kv_heads.unwrap_or(self.n_heads)
    }

    fn ffn(&self) -> usize {
        self.mlp_hidden_size.unwrap_or(self.mlp_ratio * self.d_model)
    }

    fn sizes(&self) -> AttentionSizes {
        AttentionSizes {
            heads: self.n_heads,
            kv_heads: self.kv_heads(),
            head_dim: self.d_model / self.n_heads,
        }
    }

    /// Refuses the variants of the LLaDA code this implementation does not compute.
    pub fn validate(&self) -> Result<()> {
        let unsupported = |what: &str| Err(Error::Config(format!("LLaDA config: {what} is not supported")));
        if self.block_type.as_deref().is_some_and(|b| b != "llama") {
            return unsupported(&format!("block_type {:?} (only \"llama\")", self.block_type));
        }
        if self.layer_norm_type.as_deref().is_some_and(|b| b != "rms") {
            return unsupported(&format!("layer_norm_type {:?} (only \"rms\")", self.layer_norm_type));
        }
        if !self.rope || self.alibi {
            return unsupported("a position scheme other than RoPE");
        }
        if self.attention_layer_norm {
            return unsupported("attention_layer_norm");
        }
        if self.input_emb_norm {
            return unsupported("input_emb_norm");
        }
        if self.activation_type.as_deref().is_some_and(|a| a != "silu") {
            return unsupported(&format!("activation_type {:?} (only \"silu\")", self.activation_type));
        }
        if self.bias_for_layer_norm == Some(true) || (self.bias_for_layer_norm.is_none() && self.include_bias) {
            return unsupported("norm biases (bias_for_layer_norm)");
        }
        if self.block_group_size.is_some_and(|g| g != 1) {
            return unsupported(&format!("block_group_size {:?}", self.block_group_size));
        }
        if self.d_model == 0 || self.n_heads == 0 || self.d_model % self.n_heads != 0 {
            return Err(Error::Config(format!(
                "LLaDA config: d_model {} is not a positive multiple of n_heads {}",
                self.d_model, self.n_heads
            )));
        }
        if self.kv_heads() == 0 || self.n_heads % self.kv_heads() != 0 {
            return Err(Error::Config(format!(
                "LLaDA config: n_heads {} is not a multiple of n_kv_heads {}",
                self.n_heads,
                self.kv_heads()
            )));
        }
        for (name, id) in [
            ("mask_token_id", self.mask_token_id),
            ("eos_token_id", self.eos_token_id),
        ] {
            if id as usize >= self.embedding_rows() {
                return Err(Error::Config(format!(
                    "LLaDA config: {name} {id} is outside the {} embedding rows",
                    self.embedding_rows()
                )));
            }
        }
        Ok(())
    }

    /// Every tensor the model reads, with its shape.
    pub fn tensors(&self) -> Vec<TensorSpec> {
        let (d, f, v) = (self.d_model, self.ffn(), self.embedding_rows());
        let kv = self.kv_heads() * (d / self.n_heads);
        let mut out = vec![
            TensorSpec::new("model.transformer.wte.weight", &[v, d]),
            TensorSpec::new("model.transformer.ln_f.weight", &[d]),
        ];
        if !self.weight_tying {
            out.push(TensorSpec::new("model.transformer.ff_out.weight", &[v, d]));
        }
        let qkv_bias = self.include_bias || self.include_qkv_bias;
        for i in 0..self.n_layers {
            let p = |n: &str| format!("model.transformer.blocks.{i}.{n}");
            out.push(TensorSpec::new(p("attn_norm.weight"), &[d]));
            out.push(TensorSpec::new(p("ff_norm.weight"), &[d]));
            for (name, o, inp, bias) in [
                ("q_proj", d, d, qkv_bias),
                ("k_proj", kv, d, qkv_bias),
                ("v_proj", kv, d, qkv_bias),
                ("attn_out", d, d, self.include_bias),
                ("ff_proj", f, d, self.include_bias),
                ("up_proj", f, d, self.include_bias),
                ("ff_out", d, f, self.include_bias),
            ] {
                out.push(TensorSpec::new(p(&format!("{name}.weight")), &[o, inp]));
                if bias {
                    out.push(TensorSpec::new(p(&format!("{name}.bias")), &[o]));
                }
            }
        }
        out
    }
}

/// The LLaDA transformer.
pub struct Llada {
    cfg: LladaConfig,
    wte: Embedding,
    blocks: Vec<LlamaBlock>,
    ln_f: RmsNorm,
    ff_out: Linear,
    rope: Rope,
}

impl Llada {
    /// Builds the model from `vb` (rooted at the checkpoint's top level).
    pub fn new(vb: VarBuilder, cfg: &LladaConfig) -> Result<Self> {
        cfg.validate()?;
        let (d, f, v) = (cfg.d_model, cfg.ffn(), cfg.embedding_rows());
        let kv = cfg.kv_heads() * (d / cfg.n_heads);
        let t = vb.pp("model").pp("transformer");
        let wte = candle_nn::embedding(v, d, t.pp("wte"))?;
        let ff_out = if cfg.weight_tying {
            Linear::new(wte.embeddings().clone(), None)
        } else {
            layers::linear(d, v, false, t.pp("ff_out"))?
        };
        let qkv_bias = cfg.include_bias || cfg.include_qkv_bias;
        let bias = cfg.include_bias;
        let blocks = (0..cfg.n_layers)
            .map(|i| {
                let b = t.pp("blocks").pp(i);
                Ok(LlamaBlock {
                    attn_norm: RmsNorm::new(d, cfg.rms_norm_eps, b.pp("attn_norm"))?,
                    mlp_norm: RmsNorm::new(d, cfg.rms_norm_eps, b.pp("ff_norm"))?,
                    q: layers::linear(d, d, qkv_bias, b.pp("q_proj"))?,
                    k: layers::linear(d, kv, qkv_bias, b.pp("k_proj"))?,
                    v: layers::linear(d, kv, qkv_bias, b.pp("v_proj"))?,
                    o: layers::linear(d, d, bias, b.pp("attn_out"))?,
                    gate: layers::linear(d, f, bias, b.pp("ff_proj"))?,
                    up: layers::linear(d, f, bias, b.pp("up_proj"))?,
                    down: layers::linear(f, d, bias, b.pp("ff_out"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Llada {
            cfg: cfg.clone(),
            wte,
            blocks,
            ln_f: RmsNorm::new(d, cfg.rms_norm_eps, t.pp("ln_f"))?,
            ff_out,
            rope: Rope::new(cfg.rope_theta, d / cfg.n_heads, cfg.rope_full_precision),
        })
    }

    /// The config.
    pub fn config(&self) -> &LladaConfig {
        &self.cfg
    }

    /// Logits `[B, L, embedding_size]` for ids `[B, L]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.forward_from(ids, 0)
    }

    /// The logits of positions `from..L` only (the output layer, the widest matrix product,
    /// runs on those rows alone).
    pub fn forward_from(&self, ids: &Tensor, from: usize) -> Result<Tensor> {
        let s = self.cfg.sizes();
        let mut x = self.wte.forward(ids)?;
        for b in &self.blocks {
            x = b.forward(&x, &self.rope, s)?;
        }
        let l = x.dim(1)?;
        let x = x.narrow(1, from.min(l), l - from.min(l))?;
        let logits = self.ff_out.forward(&self.ln_f.forward(&x)?)?;
        if self.cfg.scale_logits {
            return Ok((logits * (1.0 / (self.cfg.d_model as f64).sqrt()))?);
        }
        Ok(logits)
    }
}
