//! Pieces the LLaMA-style checkpoints share: RMSNorm, rotary position embeddings and
//! bidirectional multi-head attention with grouped key/value heads.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::Result;

/// RMSNorm as LLaMA, LLaDA and Qwen2 compute it: `w · x / sqrt(mean(x²) + eps)`, the
/// statistics in f32 whatever the compute dtype.
pub(crate) struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub(crate) fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(RmsNorm {
            weight: vb.get(size, "weight")?,
            eps,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(
            &x.contiguous()?,
            &self.weight,
            self.eps as f32,
        )?)
    }
}

/// The cos/sin tables of rotary embeddings (rotate-half form) for positions `0..len`.
pub(crate) struct Rope {
    theta: f64,
    head_dim: usize,
    /// Rotate in f32 whatever the compute dtype (LLaDA's `rope_full_precision`).
    full_precision: bool,
    cache: std::sync::Mutex<Option<(usize, DType, Tensor, Tensor)>>,
}

impl Rope {
    pub(crate) fn new(theta: f64, head_dim: usize, full_precision: bool) -> Self {
        Rope {
            theta,
            head_dim,
            full_precision,
            cache: std::sync::Mutex::new(None),
        }
    }

    /// `(cos, sin)`, each `[len, head_dim / 2]`, cast to `dtype`; kept
    /// for the longest length asked so far.
    fn tables(&self, len: usize, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((have, dt, cos, sin)) = cache.as_ref() {
            if *have >= len && *dt == dtype && cos.device().same_device(device) {
                return Ok((cos.narrow(0, 0, len)?, sin.narrow(0, 0, len)?));
            }
        }
        let half = self.head_dim / 2;
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in 0..len {
            for i in 0..half {
                // In f32 as the reference implementations compute it (`1 / θ^(2i/d)`, then
                // position × frequency), so long positions round the same way.
                let inv_freq = 1.0 / (self.theta as f32).powf((2 * i) as f32 / self.head_dim as f32);
                let angle = (p as f32 * inv_freq) as f64;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let cos = Tensor::from_vec(cos, (len, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (len, half), device)?.to_dtype(dtype)?;
        *cache = Some((len, dtype, cos.clone(), sin.clone()));
        Ok((cos, sin))
    }

    /// Rotates `x` `[B, heads, L, head_dim]` by its positions.
    pub(crate) fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, len, _) = x.dims4()?;
        if self.full_precision && x.dtype() != DType::F32 {
            let (cos, sin) = self.tables(len, DType::F32, x.device())?;
            let rotated = candle_nn::rotary_emb::rope(&x.to_dtype(DType::F32)?.contiguous()?, &cos, &sin)?;
            return Ok(rotated.to_dtype(x.dtype())?);
        }
        let (cos, sin) = self.tables(len, x.dtype(), x.device())?;
        Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)?)
    }
}

/// Sizes of an attention layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionSizes {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// Full (bidirectional) scaled dot-product attention of `q` `[B, heads, L, d]` over `k`, `v`
/// `[B, kv_heads, L, d]`; each key/value head serves `heads / kv_heads` query heads. The scores
/// (queries and keys cast up first) and their softmax are taken in f32.
pub(crate) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, sizes: AttentionSizes) -> Result<Tensor> {
    let (b, h, l, d) = q.dims4()?;
    let group = sizes.heads / sizes.kv_heads;
    let dtype = q.dtype();
    // [B, kv, group, L, d] view of the queries, so each key/value head is used without a copy.
    let q = q.reshape((b, sizes.kv_heads, group * l, d))?.to_dtype(DType::F32)?;
    let k = k.to_dtype(DType::F32)?;
    let scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?;
    let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
    let out = probs.matmul(&v.contiguous()?)?; // [B, kv, group·L, d]
    Ok(out.reshape((b, h, l, d))?)
}

/// `[B, L, heads·d]` → `[B, heads, L, d]`.
pub(crate) fn split_heads(x: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor> {
    let (b, l, _) = x.dims3()?;
    Ok(x.reshape((b, l, heads, head_dim))?.transpose(1, 2)?.contiguous()?)
}

/// `[B, heads, L, d]` → `[B, L, heads·d]`.
pub(crate) fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, l, d) = x.dims4()?;
    Ok(x.transpose(1, 2)?.reshape((b, l, h * d))?)
}

/// A linear layer read from `vb` (`weight` `[out, in]`, and `bias` `[out]` when `bias`).
pub(crate) fn linear(input: usize, output: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    Ok(if bias {
        candle_nn::linear(input, output, vb)?
    } else {
        candle_nn::linear_no_bias(input, output, vb)?
    })
}

/// SwiGLU: `down(silu(gate(x)) · up(x))`.
pub(crate) fn swiglu(x: &Tensor, gate: &Linear, up: &Linear, down: &Linear) -> Result<Tensor> {
    let g = candle_nn::ops::silu(&gate.forward(x)?)?;
    Ok(down.forward(&(g * up.forward(x)?)?)?)
}

/// A pre-norm block of the LLaMA family, as LLaDA's `LLaDALlamaBlock` and Qwen2's decoder layer
/// compute it: `x + o(attention(rope(q(n)), rope(k(n)), v(n)))` with `n = attn_norm(x)`, then
/// `h + down(silu(gate(m)) · up(m))` with `m = mlp_norm(h)`. Each model reads its own tensor
/// names into it.
pub(crate) struct LlamaBlock {
    pub attn_norm: RmsNorm,
    pub mlp_norm: RmsNorm,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl LlamaBlock {
    pub(crate) fn forward(&self, x: &Tensor, rope: &Rope, s: AttentionSizes) -> Result<Tensor> {
        let n = self.attn_norm.forward(x)?;
        let q = rope.apply(&split_heads(&self.q.forward(&n)?, s.heads, s.head_dim)?)?;
        let k = rope.apply(&split_heads(&self.k.forward(&n)?, s.kv_heads, s.head_dim)?)?;
        let v = split_heads(&self.v.forward(&n)?, s.kv_heads, s.head_dim)?;
        let att = merge_heads(&attention(&q, &k, &v, s)?)?;
        let h = (x + self.o.forward(&att)?)?;
        let m = self.mlp_norm.forward(&h)?;
        Ok((&h + swiglu(&m, &self.gate, &self.up, &self.down)?)?)
    }
}
