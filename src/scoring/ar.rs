//! A small causal (autoregressive) transformer LM over the same tokenizer: the reference LM that
//! `eval` uses to score fluency as perplexity, and later the autoregressive baseline.
//!
//! A sequence of content tokens `w_1..w_n` is modelled as
//! `p(w_1..w_n, EOS) = Π p(w_j | PAD, w_<j)`: PAD serves as both the start symbol (position 0) and
//! the end-of-sequence token, so a perplexity also accounts for where a text stops.
//!
//! Tensor names: `token_embedding.weight` `[V, h]` (tied to the output layer),
//! `lm_head.bias` `[V]`, `position_embedding.weight` `[seq_len + 1, h]`, `blocks.{i}.*` (as in
//! the denoiser, causal attention), `final_norm.*`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::nn::{self, Block, Init, LayerNorm, Mode, ParamSpec};
use crate::train::checkpoint;
use crate::train::{Objective, TrainConfig, Trainer};
use crate::{Error, Result, TextTokenizer};

/// Sizes of the causal LM (`config.json` of its checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArConfig {
    /// Always `"causal-lm"`, so an AR checkpoint is not mistaken for a diffusion one.
    pub model_type: String,
    /// Number of tokens in the tokenizer's vocabulary.
    pub vocab_size: usize,
    /// Id of PAD, used as both start symbol and end-of-sequence token.
    pub pad_id: u32,
    /// Most content tokens a text may have.
    pub seq_len: usize,
    /// Transformer width (embedding size).
    pub hidden: usize,
    /// Number of transformer blocks.
    pub layers: usize,
    /// Attention heads per block; divides `hidden`.
    pub heads: usize,
    /// Width of each block's feed-forward layer.
    pub ffn_hidden: usize,
    /// Dropout probability during training.
    pub dropout: f32,
}

impl ArConfig {
    /// Checks the model type and that the sizes are positive and consistent.
    pub fn validate(&self) -> Result<()> {
        nn::check_transformer_config(&self.model_type, "causal-lm", self.hidden, self.heads, self.layers)?;
        if self.pad_id as usize >= self.vocab_size || self.seq_len == 0 {
            return Err(Error::Config(
                "pad_id must be inside the vocabulary and seq_len positive".into(),
            ));
        }
        Ok(())
    }
}

/// The causal transformer LM.
pub struct CausalLm {
    cfg: ArConfig,
    token_embedding: Tensor,
    lm_head_bias: Tensor,
    position_embedding: Tensor,
    blocks: Vec<Block>,
    final_norm: LayerNorm,
}

impl CausalLm {
    /// Every parameter of a model with sizes `cfg`: name, shape and initialisation.
    pub fn param_specs(cfg: &ArConfig) -> Vec<ParamSpec> {
        let h = cfg.hidden;
        let mut s = vec![
            ParamSpec::new("token_embedding.weight", &[cfg.vocab_size, h], Init::Normal(0.02)),
            ParamSpec::new("lm_head.bias", &[cfg.vocab_size], Init::Const(0.0)),
            ParamSpec::new("position_embedding.weight", &[cfg.seq_len + 1, h], Init::Normal(0.02)),
        ];
        for i in 0..cfg.layers {
            s.extend(nn::block_specs(&format!("blocks.{i}"), h, cfg.ffn_hidden));
        }
        s.extend(nn::layer_norm_specs("final_norm", h));
        s
    }

    /// Builds the model from the tensors in `vb`, after validating `cfg`.
    pub fn new(vb: VarBuilder, cfg: &ArConfig) -> Result<Self> {
        cfg.validate()?;
        let h = cfg.hidden;
        Ok(CausalLm {
            cfg: cfg.clone(),
            token_embedding: vb.get((cfg.vocab_size, h), "token_embedding.weight")?,
            lm_head_bias: vb.get(cfg.vocab_size, "lm_head.bias")?,
            position_embedding: vb.get((cfg.seq_len + 1, h), "position_embedding.weight")?,
            blocks: nn::blocks(cfg.layers, h, cfg.heads, cfg.ffn_hidden, cfg.dropout, true, &vb)?,
            final_norm: LayerNorm::new(h, vb.pp("final_norm"))?,
        })
    }

    /// Loads a checkpoint directory written by `diffusion-lm train-ar`.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<(Self, TextTokenizer)> {
        let dir = checkpoint::require_files(dir.as_ref())?;
        let cfg: ArConfig = checkpoint::load_config(&dir)?;
        cfg.validate()
            .map_err(|e| Error::checkpoint(&dir, format!("config.json: {e}")))?;
        let tok = checkpoint::load_tokenizer(&dir, cfg.vocab_size, cfg.pad_id)?;
        let vb = checkpoint::load_weights(&dir, &Self::param_specs(&cfg), device)?;
        Ok((Self::new(vb, &cfg)?, tok))
    }

    /// The model's sizes.
    pub fn config(&self) -> &ArConfig {
        &self.cfg
    }

    /// Next-token logits `[B, L, V]` for input ids `[B, L]` (L ≤ seq_len + 1).
    pub fn forward(&self, ids: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        let h = self.cfg.hidden;
        let x = self
            .token_embedding
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, l, h))?;
        let x = x.broadcast_add(&self.position_embedding.narrow(0, 0, l)?)?;
        let mut x = nn::dropout(&x, self.cfg.dropout, mode)?;
        for block in &self.blocks {
            x = block.forward(&x, mode)?;
        }
        let x = self.final_norm.forward(&x, mode)?.reshape((b * l, h))?;
        let logits = x
            .matmul(&self.token_embedding.t()?)?
            .broadcast_add(&self.lm_head_bias)?;
        Ok(logits.reshape((b, l, self.cfg.vocab_size))?)
    }

    /// Builds the rows `[PAD, w_1..w_n, PAD, ...]` of length `seq_len + 2` (input = row[..-1],
    /// target = row[1..]). `None` if the text needs more than `seq_len` tokens.
    pub fn encode_row(&self, tokenizer: &TextTokenizer, text: &str) -> Result<Option<Vec<u32>>> {
        encode_row(tokenizer, text, self.cfg.seq_len)
    }

    /// Summed negative log-likelihood (nats) of the rows' targets and the number of target tokens
    /// (content tokens plus EOS).
    fn row_nll(&self, rows: &[Vec<u32>], device: &Device, mode: &mut Mode) -> Result<(Tensor, usize)> {
        let (b, w) = (rows.len(), rows[0].len());
        let flat: Vec<u32> = rows.iter().flatten().copied().collect();
        let all = Tensor::from_vec(flat, (b, w), device)?;
        let input = all.narrow(1, 0, w - 1)?;
        let target = all.narrow(1, 1, w - 1)?.flatten_all()?;
        let pad = self.cfg.pad_id;
        // Targets up to and including the first PAD (the EOS) count.
        let mut mask = Vec::with_capacity(b * (w - 1));
        let mut count = 0;
        for row in rows {
            let n = row[1..].iter().position(|&t| t == pad).unwrap_or(w - 1);
            for j in 0..w - 1 {
                let m = (j <= n) as u8 as f32;
                count += m as usize;
                mask.push(m);
            }
        }
        let mask = Tensor::from_vec(mask, b * (w - 1), device)?;
        let logits = self
            .forward(&input, mode)?
            .reshape((b * (w - 1), self.cfg.vocab_size))?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let picked = logp.gather(&target.unsqueeze(1)?, 1)?.squeeze(1)?;
        Ok(((picked * mask)?.sum_all()?.neg()?, count))
    }

    /// Perplexity of `texts` (per token, EOS included). Texts longer than `seq_len` tokens are
    /// skipped; returns (perplexity, texts scored, texts skipped).
    pub fn perplexity(
        &self,
        tokenizer: &TextTokenizer,
        texts: &[&str],
        batch: usize,
        device: &Device,
    ) -> Result<(f64, usize, usize)> {
        let mut rows = Vec::new();
        let mut skipped = 0;
        for t in texts {
            match self.encode_row(tokenizer, t)? {
                Some(r) => rows.push(r),
                None => skipped += 1,
            }
        }
        if rows.is_empty() {
            return Err(Error::Config("no text fits the reference LM's sequence length".into()));
        }
        let (mut nll, mut count) = (0f64, 0usize);
        for chunk in rows.chunks(batch.max(1)) {
            let (n, c) = self.row_nll(chunk, device, &mut Mode::Infer)?;
            nll += n.to_scalar::<f32>()? as f64;
            count += c;
        }
        Ok(((nll / count as f64).exp(), rows.len(), skipped))
    }
}

fn encode_row(tokenizer: &TextTokenizer, text: &str, seq_len: usize) -> Result<Option<Vec<u32>>> {
    let ids = tokenizer.encode(text)?;
    if ids.len() > seq_len {
        return Ok(None);
    }
    let mut row = Vec::with_capacity(seq_len + 2);
    row.push(tokenizer.pad_id());
    row.extend(ids);
    row.resize(seq_len + 2, tokenizer.pad_id());
    Ok(Some(row))
}

/// Next-token cross-entropy over content tokens and EOS.
pub struct ArObjective {
    /// The causal LM being trained.
    pub model: CausalLm,
}

impl Objective for ArObjective {
    type Config = ArConfig;
    fn config(&self) -> &ArConfig {
        &self.model.cfg
    }
    fn component_names(&self) -> &'static [&'static str] {
        &["nll"]
    }
    fn loss(&self, batch: &Tensor, rng: &mut StdRng) -> Result<(Tensor, Vec<f64>)> {
        let rows = batch.to_vec2::<u32>()?;
        let (nll, count) = self.model.row_nll(&rows, batch.device(), &mut Mode::Train(rng))?;
        let loss = (nll / count.max(1) as f64)?;
        let v = loss.to_scalar::<f32>()? as f64;
        Ok((loss, vec![v]))
    }
}

/// Builds a [`Trainer`] for the causal LM on `texts`.
pub fn ar_trainer(
    cfg: ArConfig,
    tokenizer: TextTokenizer,
    texts: &[&str],
    train: TrainConfig,
    out_dir: &Path,
    device: &Device,
) -> Result<Trainer<ArObjective>> {
    cfg.validate()?;
    let mut rows = Vec::new();
    let mut dropped = 0;
    for t in texts {
        match encode_row(&tokenizer, t, cfg.seq_len)? {
            Some(r) => rows.push(r),
            None => dropped += 1,
        }
    }
    let specs = CausalLm::param_specs(&cfg);
    Trainer::new(
        &specs,
        |vb| {
            Ok(ArObjective {
                model: CausalLm::new(vb, &cfg)?,
            })
        },
        rows,
        dropped,
        tokenizer,
        train,
        out_dir,
        device,
    )
}

/// Builds a causal LM from named tensors (e.g. a trainer's EMA weights).
pub fn from_weights(cfg: &ArConfig, weights: HashMap<String, Tensor>, device: &Device) -> Result<CausalLm> {
    nn::check_tensors(&CausalLm::param_specs(cfg), &weights).map_err(Error::Config)?;
    CausalLm::new(VarBuilder::from_tensors(weights, DType::F32, device), cfg)
}
