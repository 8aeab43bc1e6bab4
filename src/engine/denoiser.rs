//! The Diffusion-LM denoiser: a bidirectional transformer that predicts clean word embeddings
//! `x0` from noisy ones `x_t` and the time step `t`.
//!
//! ```text
//! x_t [B, L, d] ──input_up (d→h, tanh, h→h)──┐
//!                     + position_embedding[:L] + time_embed(sinusoid(t))
//!                     → input_norm → dropout → blocks.0..N → final_norm
//!                     → output_down (h→h, tanh, h→d) ──> x0_hat [B, L, d]
//! ```
//!
//! With [`X0Head::Softmax`] (`"x0_head": "softmax"` in `config.json`), `output_down` is replaced
//! by `x0_head` (h→V): the transformer's output gives logits over the vocabulary and
//! `x0_hat = softmax(logits) · E`, the embedding those logits expect (CDCD's score
//! interpolation). [`Denoiser::forward_with_logits`] returns the logits too.
//!
//! [`Denoiser::forward_with_context`] takes a mask of *clean* positions, which hold known words'
//! embeddings: they get the time embedding of `t = 0` instead of their row's. A model trained
//! with [`ModelConfig::clean_context`] reads them as context; the mask adds no parameters.
//!
//! Words live in a small continuous space: `word_embedding.weight` `[V, d]` (the paper used
//! d = 16 on E2E). The rounding head that maps a vector back to words is tied to that table:
//! `logits = x · Eᵀ + lm_head.bias`.
//!
//! ## Tensor names (`model.safetensors`)
//!
//! | name | shape |
//! | --- | --- |
//! | `word_embedding.weight` | `[V, d]` |
//! | `lm_head.bias` | `[V]` |
//! | `input_up.0.weight`, `.bias` / `input_up.2.weight`, `.bias` | `[h, d]`, `[h]` / `[h, h]`, `[h]` |
//! | `time_embed.0.weight`, `.bias` / `time_embed.2.weight`, `.bias` | `[4h, h]`, `[4h]` / `[h, 4h]`, `[h]` |
//! | `position_embedding.weight` | `[L, h]` |
//! | `input_norm.weight`, `.bias` | `[h]` |
//! | `blocks.{i}.norm1.*`, `blocks.{i}.attn.qkv.*` `[3h, h]`, `blocks.{i}.attn.out.*` `[h, h]`, `blocks.{i}.norm2.*`, `blocks.{i}.ffn.fc1.*` `[f, h]`, `blocks.{i}.ffn.fc2.*` `[h, f]` | |
//! | `final_norm.weight`, `.bias` | `[h]` |
//! | `output_down.0.weight`, `.bias` / `output_down.2.weight`, `.bias` | `[h, h]`, `[h]` / `[d, h]`, `[d]` (direct head) |
//! | `x0_head.weight`, `.bias` | `[V, h]`, `[V]` (softmax head, instead of `output_down`) |
//!
//! [`Denoiser::param_specs`] lists exactly these, with their initialisation.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::engine::X0Head;
use crate::nn::kernels::{self, Activation};
use crate::nn::{self, Block, Init, LayerNorm, Mode, ParamSpec};
use crate::{ModelConfig, Result};

/// Sinusoidal embedding of (possibly fractional) time values, `[B, dim]`: `[cos(t f_i), sin(t f_i)]`
/// with `f_i = 10000^(-i / (dim/2))`.
pub fn timestep_embedding(t: &[f64], dim: usize, device: &Device) -> Result<Tensor> {
    let half = dim / 2;
    let mut data = Vec::with_capacity(t.len() * dim);
    for &tv in t {
        let freqs = (0..half).map(|i| (-(10000f64.ln()) * i as f64 / half as f64).exp());
        let args: Vec<f64> = freqs.map(|f| tv * f).collect();
        data.extend(args.iter().map(|a| a.cos() as f32));
        data.extend(args.iter().map(|a| a.sin() as f32));
    }
    Ok(Tensor::from_vec(data, (t.len(), 2 * half), device)?)
}

/// The layers after `final_norm` (see [`X0Head`]).
#[derive(Clone)]
enum Output {
    Direct(Linear, Linear),
    Softmax(Linear),
}

/// The denoiser network with its tied rounding head.
#[derive(Clone)]
pub struct Denoiser {
    cfg: ModelConfig,
    word_embedding: Tensor,
    lm_head_bias: Tensor,
    input_up: (Linear, Linear),
    time_embed: (Linear, Linear),
    position_embedding: Tensor,
    input_norm: LayerNorm,
    blocks: Vec<Block>,
    final_norm: LayerNorm,
    output: Output,
    /// `||E_v||²` for every word, cached for nearest-neighbour clamping.
    embedding_sq_norms: Tensor,
    /// The dtype the transformer computes in; inputs, outputs and the embedding table stay F32.
    compute_dtype: DType,
}

impl Denoiser {
    /// Every parameter of a model with this config: its name, shape and initialisation.
    pub fn param_specs(cfg: &ModelConfig) -> Vec<ParamSpec> {
        let (v, d, h, f, l) = (cfg.vocab_size, cfg.embed_dim, cfg.hidden, cfg.ffn_hidden, cfg.seq_len);
        let mut s = vec![
            ParamSpec::new("word_embedding.weight", &[v, d], Init::Normal(1.0)),
            ParamSpec::new("lm_head.bias", &[v], Init::Const(0.0)),
        ];
        s.extend(nn::linear_specs("input_up.0", d, h));
        s.extend(nn::linear_specs("input_up.2", h, h));
        s.extend(nn::linear_specs("time_embed.0", h, 4 * h));
        s.extend(nn::linear_specs("time_embed.2", 4 * h, h));
        s.push(ParamSpec::new("position_embedding.weight", &[l, h], Init::Normal(0.02)));
        s.extend(nn::layer_norm_specs("input_norm", h));
        for i in 0..cfg.layers {
            s.extend(nn::block_specs(&format!("blocks.{i}"), h, f));
        }
        s.extend(nn::layer_norm_specs("final_norm", h));
        match cfg.x0_head {
            X0Head::Direct => {
                s.extend(nn::linear_specs("output_down.0", h, h));
                s.extend(nn::linear_specs("output_down.2", h, d));
            }
            X0Head::Softmax => s.extend(nn::linear_specs("x0_head", h, v)),
        }
        s
    }

    /// Builds the model from a var builder holding the tensors of [`Denoiser::param_specs`].
    pub fn new(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let dtype = vb.dtype();
        Self::with_compute_dtype(vb, cfg, dtype)
    }

    /// Like [`Denoiser::new`], but the transformer's weights are converted to `compute_dtype`
    /// (e.g. `BF16` for faster sampling on a GPU). The word embeddings, the rounding head and
    /// the model's inputs and outputs stay in the var builder's dtype, so clamping and the
    /// sampler's arithmetic keep full precision. Inference only: use F32 for training.
    pub fn with_compute_dtype(vb: VarBuilder, cfg: &ModelConfig, compute_dtype: DType) -> Result<Self> {
        cfg.validate()?;
        let net = vb.clone().set_dtype(compute_dtype);
        let (v, d, h) = (cfg.vocab_size, cfg.embed_dim, cfg.hidden);
        let word_embedding = vb.get((v, d), "word_embedding.weight")?;
        let blocks = nn::blocks(cfg.layers, h, cfg.heads, cfg.ffn_hidden, cfg.dropout, false, &net)?;
        let embedding_sq_norms = word_embedding.sqr()?.sum(1)?;
        Ok(Denoiser {
            cfg: cfg.clone(),
            lm_head_bias: vb.get(v, "lm_head.bias")?,
            input_up: (
                candle_nn::linear(d, h, net.pp("input_up.0"))?,
                candle_nn::linear(h, h, net.pp("input_up.2"))?,
            ),
            time_embed: (
                candle_nn::linear(h, 4 * h, net.pp("time_embed.0"))?,
                candle_nn::linear(4 * h, h, net.pp("time_embed.2"))?,
            ),
            position_embedding: net.get((cfg.seq_len, h), "position_embedding.weight")?,
            input_norm: LayerNorm::new(h, net.pp("input_norm"))?,
            blocks,
            final_norm: LayerNorm::new(h, net.pp("final_norm"))?,
            output: match cfg.x0_head {
                X0Head::Direct => Output::Direct(
                    candle_nn::linear(h, h, net.pp("output_down.0"))?,
                    candle_nn::linear(h, d, net.pp("output_down.2"))?,
                ),
                X0Head::Softmax => Output::Softmax(candle_nn::linear(h, v, net.pp("x0_head"))?),
            },
            word_embedding,
            embedding_sq_norms,
            compute_dtype,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.word_embedding.device()
    }

    /// The word-embedding table `E`, `[V, d]`.
    pub fn embeddings(&self) -> &Tensor {
        &self.word_embedding
    }

    /// Detaches the word embeddings and the rounding head's bias from autograd, so that training
    /// leaves them as they are (see `DiffusionObjective::freeze_embeddings`).
    pub fn freeze_embeddings(&mut self) {
        self.word_embedding = self.word_embedding.detach();
        self.lm_head_bias = self.lm_head_bias.detach();
    }

    /// Recomputes the cached embedding norms; call after the embedding table changed in place
    /// (training updates its variables in place).
    pub fn refresh_cache(&mut self) -> Result<()> {
        self.embedding_sq_norms = self.word_embedding.sqr()?.sum(1)?;
        Ok(())
    }

    /// The model's time input for original step index `t` of `0..T`: rescaled to `[0, 1000)` so
    /// the sinusoid frequencies do not depend on T.
    pub fn time_input(&self, t: usize) -> f64 {
        t as f64 * 1000.0 / self.cfg.diffusion_steps as f64
    }

    /// The time MLP over the sinusoids of model time inputs, `[n, 1, h]`.
    fn time_embedding(&self, times: &[f64], mode: &mut Mode) -> Result<Tensor> {
        let device = self.word_embedding.device();
        let temb = timestep_embedding(times, self.cfg.hidden, device)?.to_dtype(self.compute_dtype)?;
        let temb = candle_nn::ops::silu(&nn::linear(&self.time_embed.0, &temb, mode)?)?;
        Ok(nn::linear(&self.time_embed.1, &temb, mode)?.unsqueeze(1)?)
    }

    /// Predicts `x0` from `x_t` `[B, L, d]` (L ≤ seq_len) at original step indices `t` (one per row).
    pub fn forward(&self, x_t: &Tensor, t: &[usize], mode: &mut Mode) -> Result<Tensor> {
        Ok(self.forward_with_logits(x_t, t, mode)?.0)
    }

    /// [`Denoiser::forward`], and with [`X0Head::Softmax`] the logits `[B, L, V]` whose expected
    /// embedding is the prediction (`None` with the direct head).
    pub fn forward_with_logits(&self, x_t: &Tensor, t: &[usize], mode: &mut Mode) -> Result<(Tensor, Option<Tensor>)> {
        self.forward_with_context(x_t, t, None, mode)
    }

    /// [`Denoiser::forward_with_logits`] where the positions `clean` marks (`[B, L, 1]`, 1 or
    /// 0) hold clean embeddings: they are given time 0 instead of their row's `t`. Only a
    /// model trained so ([`ModelConfig::clean_context`]) knows what to make of them.
    pub fn forward_with_context(
        &self,
        x_t: &Tensor,
        t: &[usize],
        clean: Option<&Tensor>,
        mode: &mut Mode,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (b, l, _) = x_t.dims3()?;
        if t.len() != b {
            return Err(crate::Error::Sampling(format!(
                "{} time steps given for a batch of {b}",
                t.len()
            )));
        }
        if l > self.cfg.seq_len {
            return Err(crate::Error::Sampling(format!(
                "sequence length {l} exceeds the model's {}",
                self.cfg.seq_len
            )));
        }
        let out_dtype = x_t.dtype();
        let x_t = &x_t.to_dtype(self.compute_dtype)?;
        let times: Vec<f64> = t.iter().map(|&s| self.time_input(s)).collect();
        let temb = self.time_embedding(&times, mode)?;
        let clean_shift = match clean {
            Some(mask) => {
                let zero = self.time_embedding(&[0.0], mode)?;
                let shift = zero.broadcast_sub(&temb)?;
                let mask = mask.reshape((b, l, 1))?.to_dtype(self.compute_dtype)?;
                Some(mask.broadcast_mul(&shift)?)
            }
            None => None,
        };
        let h = if mode.is_differentiable() {
            nn::linear(&self.input_up.0, x_t, mode)?.tanh()?
        } else {
            kernels::linear(&self.input_up.0, x_t, Activation::Tanh, None)?
        };
        let h = nn::linear(&self.input_up.1, &h, mode)?;
        let pos = self.position_embedding.narrow(0, 0, l)?;
        let h = nn::add_trailing(&h, &pos, mode)?;
        // The time embedding is per row: repeated over positions by a batched product with ones
        // when differentiable on the CPU, for the same reason as `nn::add_trailing`.
        let h = if mode.is_differentiable() && x_t.device().is_cpu() && temb.track_op() {
            let ones = Tensor::ones((b, l, 1), temb.dtype(), temb.device())?;
            (h + ones.matmul(&temb)?)?
        } else {
            h.broadcast_add(&temb)?
        };
        let h = match clean_shift {
            Some(shift) => (h + shift)?,
            None => h,
        };
        let mut h = nn::dropout(&self.input_norm.forward(&h, mode)?, self.cfg.dropout, mode)?;
        for block in &self.blocks {
            h = block.forward(&h, mode)?;
        }
        let h = self.final_norm.forward(&h, mode)?;
        match &self.output {
            Output::Direct(down, out) => {
                let x0 = if mode.is_differentiable() {
                    nn::linear(down, &h, mode)?.tanh()?
                } else {
                    kernels::linear(down, &h, Activation::Tanh, None)?
                };
                let x0 = nn::linear(out, &x0, mode)?;
                Ok((x0.to_dtype(out_dtype)?, None))
            }
            Output::Softmax(head) => {
                let logits = nn::linear(head, &h, mode)?.to_dtype(out_dtype)?;
                let v = self.cfg.vocab_size;
                let probs = nn::softmax_last(&logits.reshape((b * l, v))?, mode)?;
                let x0 = probs
                    .matmul(&self.word_embedding)?
                    .reshape((b, l, self.cfg.embed_dim))?;
                Ok((x0, Some(logits)))
            }
        }
    }

    /// Rounding logits `x · Eᵀ + b`, `[B, L, V]`.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.logits_in(x, &Mode::Infer)
    }

    /// [`Denoiser::logits`] in a given mode (training differentiates through them).
    pub fn logits_in(&self, x: &Tensor, mode: &Mode) -> Result<Tensor> {
        let (b, l, d) = x.dims3()?;
        let flat = x.reshape((b * l, d))?.matmul(&self.word_embedding.t()?)?;
        Ok(nn::add_trailing(&flat, &self.lm_head_bias, mode)?.reshape((b, l, self.cfg.vocab_size))?)
    }

    /// Embeddings of token ids `[B, L]` → `[B, L, d]`.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        let flat = self.word_embedding.index_select(&ids.flatten_all()?, 0)?;
        Ok(flat.reshape((b, l, self.cfg.embed_dim))?)
    }

    /// Clamping scores `−‖x_p − E_v‖² + ‖x_p‖² = 2 x_p·E_v − ‖E_v‖²`, `[B, L, V]`: per position, the
    /// nearest embedding has the highest score (the `‖x_p‖²` term, equal for every v, is dropped).
    pub fn clamp_scores(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, d) = x.dims3()?;
        let dots = x.reshape((b * l, d))?.matmul(&self.word_embedding.t()?)?;
        let scores = (dots * 2.0)?.broadcast_sub(&self.embedding_sq_norms)?;
        Ok(scores.reshape((b, l, self.cfg.vocab_size))?)
    }

    /// Id of the nearest word embedding (Euclidean) for every vector of `x` `[B, L, d]` → `[B, L]` u32.
    ///
    /// One matrix product: `argmin_v ||E_v||² − 2 x·E_v` (`||x||²` is the same for every v).
    pub fn nearest_tokens(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, d) = x.dims3()?;
        let dots = x.reshape((b * l, d))?.matmul(&self.word_embedding.t()?)?;
        Ok(crate::nn::kernels::nearest_ids(&dots, &self.embedding_sq_norms)?.reshape((b, l))?)
    }

    /// The clamping trick: replaces each vector by its nearest word embedding, returning the ids
    /// and the clamped tensor (exact rows of `E`).
    pub fn clamp(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let ids = self.nearest_tokens(x)?;
        let clamped = self.embed(&ids)?;
        Ok((ids, clamped))
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.word_embedding.dtype()
    }

    /// The dtype the transformer computes in (see [`Denoiser::with_compute_dtype`]).
    pub fn compute_dtype(&self) -> DType {
        self.compute_dtype
    }
}
