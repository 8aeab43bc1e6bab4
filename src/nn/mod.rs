//! Transformer building blocks shared by the denoiser and the autoregressive reference LM.
//!
//! Every block runs in one of three modes ([`Mode`]). All of them compute layer norm and softmax
//! with candle-nn's fused kernels. Those kernels record no backward pass in candle-nn 0.11, so in
//! the differentiable modes (`Grad`, `Train`) their output is joined to the graph by a custom op
//! carrying a hand-written backward pass ([`layer_norm`], `softmax_last`): a few whole-tensor
//! ops instead of the dozens that autograd records for the same function written with elementary
//! ops (and candle adds two more per graph edge while accumulating gradients). `Train` also
//! applies dropout with masks drawn from a seeded generator, so training runs are reproducible.
//!
//! Parameters are described once by [`ParamSpec`] (name, shape, initialisation); the same list
//! initialises a model, documents the safetensors tensor names and checks checkpoints.

pub mod device;
// Public for the benches and the GPU check; hidden from the docs: not a stable API.
#[doc(hidden)]
pub mod kernels;

use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, Layout, MetalStorage, Shape, Tensor, D,
};
use candle_nn::{Linear, VarBuilder};
use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::Result;

/// How a forward pass runs.
pub enum Mode<'a> {
    /// Sampling / evaluation: fused kernels, no dropout.
    Infer,
    /// Differentiable ops, no dropout: for gradients with respect to the input (guidance).
    Grad,
    /// Training: differentiable ops; dropout masks come from this generator.
    Train(&'a mut StdRng),
}

impl Mode<'_> {
    /// Whether the pass must record a backward graph (differentiable forms instead of fused kernels).
    pub(crate) fn is_differentiable(&self) -> bool {
        !matches!(self, Mode::Infer)
    }
}

/// Standard normal noise of `shape`, drawing `shape.elem_count() / rngs.len()` values from each
/// generator in turn (one generator per batch row when sampling, a single one when training).
pub fn standard_normal(rngs: &mut [StdRng], shape: (usize, usize, usize), device: &Device) -> Result<Tensor> {
    let total = shape.0 * shape.1 * shape.2;
    let per_rng = total / rngs.len().max(1);
    let mut data = vec![0f32; per_rng * rngs.len()];
    let fill = |rng: &mut StdRng, out: &mut [f32]| {
        for z in out {
            *z = StandardNormal.sample(rng);
        }
    };
    // Large batches draw in parallel (one chunk of generators per thread; each generator fills its
    // own slice, so the numbers do not depend on the thread count). At batch 256 this is a few ms
    // per step, which would otherwise dominate a GPU's denoising step.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(rngs.len());
    if total >= 1 << 16 && threads > 1 && per_rng > 0 {
        let rows_per_thread = rngs.len().div_ceil(threads);
        std::thread::scope(|scope| {
            for (rng_chunk, out_chunk) in rngs
                .chunks_mut(rows_per_thread)
                .zip(data.chunks_mut(rows_per_thread * per_rng))
            {
                scope.spawn(move || {
                    for (rng, out) in rng_chunk.iter_mut().zip(out_chunk.chunks_mut(per_rng)) {
                        fill(rng, out);
                    }
                });
            }
        });
    } else if per_rng > 0 {
        for (rng, out) in rngs.iter_mut().zip(data.chunks_mut(per_rng)) {
            fill(rng, out);
        }
    }
    Ok(Tensor::from_vec(data, shape, device)?)
}

/// Inverted dropout with a mask from the mode's generator; identity in inference.
pub fn dropout(x: &Tensor, p: f32, mode: &mut Mode) -> Result<Tensor> {
    match mode {
        Mode::Train(rng) if p > 0.0 => {
            let keep = 1.0 / (1.0 - p);
            // On CUDA: one kernel, seeded by one draw from the run's generator.
            let fused_mask = if crate::nn::kernels::fused_on(x.device()) && x.dtype() == DType::F32 {
                crate::nn::kernels::dropout_mask(x, p, rng.gen())?
            } else {
                None
            };
            let mask = if let Some(mask) = fused_mask {
                mask
            } else if x.device().is_cpu() {
                let mask: Vec<f32> = (0..x.elem_count())
                    .map(|_| if rng.gen::<f32>() < p { 0.0 } else { keep })
                    .collect();
                Tensor::from_vec(mask, x.shape(), x.device())?
            } else {
                // On another GPU (or with the fused kernels off), drawing the mask on the host and
                // copying it over would cost more than the whole step; the device's generator is
                // seeded from the run's seed at every training step (see `Trainer::train_step`), so
                // runs stay reproducible.
                let u = Tensor::rand(0f32, 1f32, x.shape(), x.device())?;
                (u.ge(p as f64)?.to_dtype(DType::F32)? * keep as f64)?
            };
            Ok(x.mul(&mask.to_dtype(x.dtype())?)?)
        }
        _ => Ok(x.clone()),
    }
}

/// Softmax over the last dimension, with candle-nn's fused kernel in every mode; differentiable
/// in `Grad` and `Train` (see the module docs).
pub(crate) fn softmax_last(x: &Tensor, mode: &Mode) -> Result<Tensor> {
    let x = x.contiguous()?;
    let value = crate::nn::kernels::softmax_last_dim(&x.detach())?;
    if !mode.is_differentiable() || !x.track_op() {
        return Ok(value);
    }
    Ok(x.apply_op1(FusedSoftmax {
        value: FusedValue::new(value)?,
    })?)
}

/// Layer normalisation of `x` over its last dimension, `(x − μ) / √(σ² + eps) · weight + bias`,
/// with candle-nn's fused kernel in every mode; differentiable in `Grad` and `Train`.
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// use diffusion_lm::nn::{layer_norm, Mode};
///
/// # fn main() -> diffusion_lm::Result<()> {
/// let x = Var::new(&[[1.0f32, 2.0, 4.0]], &Device::Cpu)?;
/// let (w, b) = (Tensor::ones(3, candle_core::DType::F32, &Device::Cpu)?, Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu)?);
/// let y = layer_norm(x.as_tensor(), &w, &b, 1e-5, &Mode::Grad)?;
/// // The output has zero mean, so the gradient of its sum is zero.
/// let grad = y.sum_all()?.backward()?.get(x.as_tensor()).unwrap().abs()?.sum_all()?.to_scalar::<f32>()?;
/// assert!(grad < 1e-5);
/// # Ok(())
/// # }
/// ```
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64, mode: &Mode) -> Result<Tensor> {
    let x = x.contiguous()?;
    let value = if x.dtype() == DType::F64 {
        // candle-nn's CPU kernel has no f64 form (f64 runs only in finite-difference tests).
        let centered = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
        normed.broadcast_mul(weight)?.broadcast_add(bias)?.detach()
    } else {
        candle_nn::ops::layer_norm(&x, weight, bias, eps as f32)?
    };
    if !mode.is_differentiable() || !(x.track_op() || weight.track_op() || bias.track_op()) {
        return Ok(value);
    }
    Ok(x.apply_op3(
        weight,
        bias,
        FusedLayerNorm {
            value: FusedValue::new(value)?,
            eps,
        },
    )?)
}

/// The output of a fused kernel, handed to a custom op whose forward pass returns it unchanged
/// (one copy) so that the op's backward pass can be attached to the graph.
struct FusedValue(Tensor);

impl FusedValue {
    fn new(t: Tensor) -> Result<Self> {
        // The forward passes below copy the whole storage, so it must be exactly this tensor.
        let t = if t.is_contiguous() && t.layout().start_offset() == 0 {
            t
        } else {
            t.copy()?
        };
        Ok(FusedValue(t))
    }

    fn storage_copy(&self) -> candle_core::Result<(candle_core::Storage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::Storage;
        let (storage, layout) = self.0.storage_and_layout();
        let copy = match &*storage {
            Storage::Cpu(s) => Storage::Cpu(s.try_clone(layout)?),
            Storage::Cuda(s) => Storage::Cuda(s.try_clone(layout)?),
            Storage::Metal(s) => Storage::Metal(s.try_clone(layout)?),
        };
        Ok((copy, layout.shape().clone()))
    }

    fn cpu(&self) -> candle_core::Result<(candle_core::CpuStorage, Shape)> {
        match self.storage_copy()? {
            (candle_core::Storage::Cpu(s), shape) => Ok((s, shape)),
            _ => candle_core::bail!("fused value is not on the CPU"),
        }
    }

    fn cuda(&self) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        match self.storage_copy()? {
            (candle_core::Storage::Cuda(s), shape) => Ok((s, shape)),
            _ => candle_core::bail!("fused value is not on a CUDA device"),
        }
    }

    fn metal(&self) -> candle_core::Result<(candle_core::MetalStorage, Shape)> {
        match self.storage_copy()? {
            (candle_core::Storage::Metal(s), shape) => Ok((s, shape)),
            _ => candle_core::bail!("fused value is not on a Metal device"),
        }
    }
}

/// The device forwards of a custom op whose value was computed beforehand (a [`FusedValue`] in
/// `self.value`), for an op of one, two or three arguments.
macro_rules! fused_value_forwards {
    ($($arg:ident),+) => {
        fn cpu_fwd(&self, $($arg: &CpuStorage, _: &Layout),+) -> candle_core::Result<(CpuStorage, Shape)> {
            self.value.cpu()
        }
        fn cuda_fwd(&self, $($arg: &CudaStorage, _: &Layout),+) -> candle_core::Result<(CudaStorage, Shape)> {
            self.value.cuda()
        }
        fn metal_fwd(&self, $($arg: &MetalStorage, _: &Layout),+) -> candle_core::Result<(MetalStorage, Shape)> {
            self.value.metal()
        }
    };
}

/// Softmax over the last dimension; backward `dx = y ⊙ (dy − Σ dy ⊙ y)`.
struct FusedSoftmax {
    value: FusedValue,
}

impl CustomOp1 for FusedSoftmax {
    fn name(&self) -> &'static str {
        "fused-softmax-last-dim"
    }
    fused_value_forwards!(_x);
    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let y = y.detach();
        if let Some(dx) = crate::nn::kernels::softmax_backward(&y, dy)? {
            return Ok(Some(dx));
        }
        let dot = (dy * &y)?.sum_keepdim(D::Minus1)?;
        Ok(Some((dy.broadcast_sub(&dot)? * y)?))
    }
}

/// Layer norm with gain and bias; backward from the normalised input `x̂` recomputed from `x`:
/// `dx = (g − mean(g) − x̂ · mean(g ⊙ x̂)) / σ` with `g = dy ⊙ weight`, `dweight = Σ dy ⊙ x̂`,
/// `dbias = Σ dy` (sums over rows).
struct FusedLayerNorm {
    value: FusedValue,
    eps: f64,
}

impl CustomOp3 for FusedLayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }
    fused_value_forwards!(_x, _w, _b);
    #[allow(clippy::type_complexity)]
    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let h = x.dim(D::Minus1)?;
        let rows = x.elem_count() / h.max(1);
        let x2 = x.detach().reshape((rows, h))?;
        let dy2 = dy.reshape((rows, h))?;
        if let Some((dx, dy_xhat)) = crate::nn::kernels::layer_norm_backward(&x2, &dy2, &weight.detach(), self.eps)? {
            let dweight = weight.track_op().then(|| row_sums(&dy_xhat)).transpose()?;
            let dbias = bias.track_op().then(|| row_sums(&dy2)).transpose()?;
            let dx = x.track_op().then(|| dx.reshape(x.shape())).transpose()?;
            return Ok((dx, dweight, dbias));
        }
        let centered = x2.broadcast_sub(&x2.mean_keepdim(1)?)?;
        let rstd = (centered.sqr()?.mean_keepdim(1)? + self.eps)?.sqrt()?.recip()?;
        let xhat = centered.broadcast_mul(&rstd)?;
        let g = dy2.broadcast_mul(&weight.detach())?;
        let mean_g = g.mean_keepdim(1)?;
        let mean_gx = (&g * &xhat)?.mean_keepdim(1)?;
        let dx = (g.broadcast_sub(&mean_g)? - xhat.broadcast_mul(&mean_gx)?)?.broadcast_mul(&rstd)?;
        // Constant gain and bias (guidance through a loaded model) get no gradient: candle would
        // compute it and throw it away.
        let dweight = weight.track_op().then(|| row_sums(&(&dy2 * &xhat)?)).transpose()?;
        let dbias = bias.track_op().then(|| row_sums(&dy2)).transpose()?;
        let dx = x.track_op().then(|| dx.reshape(x.shape())).transpose()?;
        Ok((dx, dweight, dbias))
    }
}

/// Sums of a `[rows, n]` matrix over its rows, `[n]`, as a product with a row of ones: candle's
/// reduction over a leading dimension is a single-threaded loop on the CPU, and on an H200 it
/// took 75 µs for a `[16384, 576]` matrix where the product takes 15 µs.
fn row_sums(t: &Tensor) -> candle_core::Result<Tensor> {
    let rows = t.dim(0)?;
    Tensor::ones((1, rows), t.dtype(), t.device())?.matmul(t)?.squeeze(0)
}

/// `x + b`, where `b`'s shape is the trailing dimensions of `x`'s (a bias, a position table).
///
/// In differentiable modes on the CPU the broadcast is written as a product with a column of
/// ones, so the backward pass sums `b`'s gradient with a matrix product. candle's CPU backward of
/// a plain broadcast sums over leading dimensions with a single-threaded loop that divides per
/// element; it took a fifth of a training step. On a GPU that reduction is one kernel, fewer
/// launches than the product. A constant `b` (guidance through a loaded model) needs no gradient,
/// so it is a plain broadcast.
pub(crate) fn add_trailing(x: &Tensor, b: &Tensor, mode: &Mode) -> Result<Tensor> {
    if mode.is_differentiable() && x.device().is_cpu() && b.track_op() {
        Ok((x + expand_leading(b, x)?)?)
    } else {
        Ok(x.broadcast_add(b)?)
    }
}

/// `x · g` (elementwise), with `g` shaped like `x`'s trailing dimensions; see [`add_trailing`].
/// Only the tests use it (the layers scale inside the fused layer norm).
#[cfg(test)]
fn mul_trailing(x: &Tensor, g: &Tensor, mode: &Mode) -> Result<Tensor> {
    if mode.is_differentiable() && x.device().is_cpu() && g.track_op() {
        Ok((x * expand_leading(g, x)?)?)
    } else {
        Ok(x.broadcast_mul(g)?)
    }
}

/// `b` repeated over `like`'s leading dimensions, as `ones[rows, 1] · b[1, n]`.
fn expand_leading(b: &Tensor, like: &Tensor) -> Result<Tensor> {
    let n = b.elem_count();
    let rows = like.elem_count() / n.max(1);
    let ones = Tensor::ones((rows, 1), b.dtype(), b.device())?;
    Ok(ones.matmul(&b.reshape((1, n))?)?.reshape(like.shape())?)
}

/// A linear layer `x · Wᵀ + b` over the last dimension of `x`: candle-nn's in inference, and in
/// differentiable modes one custom op whose hand-written backward pass is two products and one
/// sum (`dx = dy · W`, `dW = dyᵀ · x`, `db = Σ dy`), where autograd would record a reshape, a
/// transpose, a product and a broadcast, and accumulate each one's gradient.
pub fn linear(layer: &Linear, x: &Tensor, mode: &Mode) -> Result<Tensor> {
    if !mode.is_differentiable() {
        return crate::nn::kernels::linear(layer, x, crate::nn::kernels::Activation::None, None);
    }
    let w = layer.weight();
    let mut dims = x.dims().to_vec();
    let k = dims.pop().unwrap_or(1);
    dims.push(w.dim(0)?);
    // The value from detached inputs: the custom op below records the only graph node.
    let value = x
        .detach()
        .reshape((x.elem_count() / k.max(1), k))?
        .matmul(&w.detach().t()?)?;
    let value = match layer.bias() {
        Some(b) => crate::nn::kernels::bias_act(&value, &b.detach(), crate::nn::kernels::Activation::None, None)?,
        None => value,
    }
    .reshape(dims)?;
    let tracked = x.track_op() || w.track_op() || layer.bias().is_some_and(|b| b.track_op());
    if !tracked {
        return Ok(value);
    }
    let value = FusedValue::new(value)?;
    Ok(match layer.bias() {
        Some(b) => x.apply_op3(w, b, FusedLinear { value })?,
        None => x.apply_op2(w, FusedLinear { value })?,
    })
}

/// `x · Wᵀ (+ b)`; see [`linear`].
struct FusedLinear {
    value: FusedValue,
}

impl FusedLinear {
    /// `(dx, dW, db)` for upstream gradient `dy`, each only for an argument that is tracked:
    /// guidance differentiates a loaded model with respect to its input alone, and `dW` would
    /// cost as much as `dx`.
    #[allow(clippy::type_complexity)]
    fn grads(
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (out, k) = w.dims2()?;
        let rows = x.elem_count() / k.max(1);
        let dy2 = dy.reshape((rows, out))?;
        let dx = x
            .track_op()
            .then(|| dy2.matmul(&w.detach())?.reshape(x.shape()))
            .transpose()?;
        let dw = w
            .track_op()
            .then(|| dy2.t()?.matmul(&x.detach().reshape((rows, k))?))
            .transpose()?;
        let db = b.filter(|b| b.track_op()).map(|_| row_sums(&dy2)).transpose()?;
        Ok((dx, dw, db))
    }
}

impl CustomOp2 for FusedLinear {
    fn name(&self) -> &'static str {
        "fused-linear"
    }
    fused_value_forwards!(_x, _w);
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = Self::grads(x, w, None, dy)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for FusedLinear {
    fn name(&self) -> &'static str {
        "fused-linear"
    }
    fused_value_forwards!(_x, _w, _b);
    #[allow(clippy::type_complexity)]
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        Self::grads(x, w, Some(b), dy)
    }
}

/// Layer normalisation over the last dimension.
#[derive(Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Loads `weight` and `bias` (both `[dim]`) from `vb`; epsilon is 1e-5.
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(LayerNorm {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps: 1e-5,
        })
    }

    /// Normalises `x` over its last dimension, then scales and shifts it.
    pub fn forward(&self, x: &Tensor, mode: &Mode) -> Result<Tensor> {
        layer_norm(x, &self.weight, &self.bias, self.eps, mode)
    }
}

/// Multi-head self-attention, bidirectional or causal.
#[derive(Clone)]
pub struct SelfAttention {
    qkv: Linear,
    out: Linear,
    heads: usize,
    causal: bool,
}

impl SelfAttention {
    /// Loads the fused `qkv` projection and the `out` projection from `vb`; `heads` must divide `hidden`.
    pub fn new(hidden: usize, heads: usize, causal: bool, vb: VarBuilder) -> Result<Self> {
        Ok(SelfAttention {
            qkv: candle_nn::linear(hidden, 3 * hidden, vb.pp("qkv"))?,
            out: candle_nn::linear(hidden, hidden, vb.pp("out"))?,
            heads,
            causal,
        })
    }

    /// Attention over `x` `[B, L, hidden]`, projected back to `[B, L, hidden]`.
    pub fn forward(&self, x: &Tensor, mode: &Mode) -> Result<Tensor> {
        linear(&self.out, &self.heads_output(x, mode)?, mode)
    }

    /// The heads' outputs, merged to `[B, L, h]`: the attention before its output projection.
    fn heads_output(&self, x: &Tensor, mode: &Mode) -> Result<Tensor> {
        let (b, l, h) = x.dims3()?;
        let hd = h / self.heads;
        // The scale is applied to q (L·hd values per head, not L·L) by the op that also makes it
        // contiguous for the product: one pass fewer over the scores.
        let scale = 1.0 / (hd as f64).sqrt();
        let fused = if mode.is_differentiable() {
            None
        } else {
            crate::nn::kernels::split_heads(&self.qkv, x, self.heads, scale)?
        };
        let (q, k, v) = match fused {
            Some(qkv) => qkv,
            None => {
                let qkv = linear(&self.qkv, x, mode)?
                    .reshape((b, l, 3, self.heads, hd))?
                    .permute((2, 0, 3, 1, 4))?;
                let q = (qkv.get(0)? * scale)?;
                (q, qkv.get(1)?.contiguous()?, qkv.get(2)?.contiguous()?)
            }
        };
        let mut scores = q.matmul(&k.t()?)?;
        if self.causal {
            scores = scores.broadcast_add(&causal_mask(l, x.device(), scores.dtype())?)?;
        }
        let probs = softmax_last(&scores, mode)?;
        let heads = probs.matmul(&v)?;
        if mode.is_differentiable() {
            Ok(heads.transpose(1, 2)?.reshape((b, l, h))?)
        } else {
            crate::nn::kernels::merge_heads(&heads)
        }
    }
}

fn causal_mask(l: usize, device: &Device, dtype: DType) -> Result<Tensor> {
    let mask: Vec<f32> = (0..l)
        .flat_map(|i| (0..l).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(mask, (l, l), device)?.to_dtype(dtype)?)
}

/// A pre-LN transformer block: `x + attn(ln1(x))`, then `x + ffn(ln2(x))`.
#[derive(Clone)]
pub struct Block {
    norm1: LayerNorm,
    attn: SelfAttention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    dropout: f32,
}

impl Block {
    /// Loads the block's norms, attention and feed-forward (`hidden` → `ffn` → `hidden`) from `vb`.
    pub fn new(hidden: usize, heads: usize, ffn: usize, dropout: f32, causal: bool, vb: VarBuilder) -> Result<Self> {
        Ok(Block {
            norm1: LayerNorm::new(hidden, vb.pp("norm1"))?,
            attn: SelfAttention::new(hidden, heads, causal, vb.pp("attn"))?,
            norm2: LayerNorm::new(hidden, vb.pp("norm2"))?,
            fc1: candle_nn::linear(hidden, ffn, vb.pp("ffn.fc1"))?,
            fc2: candle_nn::linear(ffn, hidden, vb.pp("ffn.fc2"))?,
            dropout,
        })
    }

    /// Applies the block to `x` `[B, L, hidden]`; dropout applies only in training mode.
    pub fn forward(&self, x: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        if !mode.is_differentiable() {
            // Sampling: each projection's bias, ReLU and residual connection in one pass (on
            // CUDA; the same operations in the same order elsewhere, see `crate::nn::kernels`).
            use crate::nn::kernels::{linear as fused_linear, Activation};
            let heads = self.attn.heads_output(&self.norm1.forward(x, mode)?, mode)?;
            let x = fused_linear(&self.attn.out, &heads, Activation::None, Some(x))?;
            let hidden = fused_linear(&self.fc1, &self.norm2.forward(&x, mode)?, Activation::Relu, None)?;
            return fused_linear(&self.fc2, &hidden, Activation::None, Some(&x));
        }
        let a = self.attn.forward(&self.norm1.forward(x, mode)?, mode)?;
        let x = (x + dropout(&a, self.dropout, mode)?)?;
        let hidden = linear(&self.fc1, &self.norm2.forward(&x, mode)?, mode)?.relu()?;
        let f = linear(&self.fc2, &hidden, mode)?;
        Ok((&x + dropout(&f, self.dropout, mode)?)?)
    }
}

/// Checks a checkpoint's `model_type` and the transformer sizes every model here shares, so a
/// directory of one kind is not loaded as another and attention heads split the width evenly.
pub(crate) fn check_transformer_config(
    model_type: &str,
    expected: &str,
    hidden: usize,
    heads: usize,
    layers: usize,
) -> Result<()> {
    if model_type != expected {
        return Err(crate::Error::Config(format!(
            "model_type is {model_type:?}, expected {expected:?}"
        )));
    }
    if hidden == 0 || heads == 0 || hidden % heads != 0 || layers == 0 {
        return Err(crate::Error::Config(
            "hidden, heads, layers must be positive and heads must divide hidden".into(),
        ));
    }
    Ok(())
}

/// `layers` transformer blocks under `blocks.{i}` of `vb` (the stack every model here uses).
pub fn blocks(
    layers: usize,
    hidden: usize,
    heads: usize,
    ffn: usize,
    dropout: f32,
    causal: bool,
    vb: &VarBuilder,
) -> Result<Vec<Block>> {
    (0..layers)
        .map(|i| Block::new(hidden, heads, ffn, dropout, causal, vb.pp(format!("blocks.{i}"))))
        .collect()
}

/// How a parameter is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Normal with this standard deviation.
    Normal(f64),
    /// Uniform in `[-a, a]`.
    Uniform(f64),
    /// A constant.
    Const(f64),
}

/// One named parameter: its safetensors name, shape and initialisation.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// The tensor's name in the safetensors file.
    pub name: String,
    /// The tensor's shape.
    pub shape: Vec<usize>,
    /// How its initial value is drawn.
    pub init: Init,
}

impl ParamSpec {
    /// A spec named `name` with shape `shape`, initialised by `init`.
    pub fn new(name: impl Into<String>, shape: &[usize], init: Init) -> Self {
        ParamSpec {
            name: name.into(),
            shape: shape.to_vec(),
            init,
        }
    }

    /// Draws the initial value from `rng` (seeded, so initialisation is reproducible).
    pub fn sample(&self, rng: &mut StdRng, device: &Device) -> Result<Tensor> {
        let n: usize = self.shape.iter().product();
        let data: Vec<f32> = match self.init {
            Init::Normal(std) => (0..n)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(rng);
                    (z * std) as f32
                })
                .collect(),
            Init::Uniform(a) => (0..n).map(|_| rng.gen_range(-a..=a) as f32).collect(),
            Init::Const(c) => vec![c as f32; n],
        };
        Ok(Tensor::from_vec(data, self.shape.as_slice(), device)?)
    }
}

/// Specs of a linear layer `prefix.weight` `[out, in]` and `prefix.bias` `[out]` (PyTorch's init).
pub(crate) fn linear_specs(prefix: &str, inp: usize, out: usize) -> Vec<ParamSpec> {
    let a = 1.0 / (inp as f64).sqrt();
    vec![
        ParamSpec::new(format!("{prefix}.weight"), &[out, inp], Init::Uniform(a)),
        ParamSpec::new(format!("{prefix}.bias"), &[out], Init::Uniform(a)),
    ]
}

/// Specs of a layer norm `prefix.weight`, `prefix.bias`.
pub(crate) fn layer_norm_specs(prefix: &str, dim: usize) -> Vec<ParamSpec> {
    vec![
        ParamSpec::new(format!("{prefix}.weight"), &[dim], Init::Const(1.0)),
        ParamSpec::new(format!("{prefix}.bias"), &[dim], Init::Const(0.0)),
    ]
}

/// Specs of one [`Block`] under `prefix`.
pub fn block_specs(prefix: &str, hidden: usize, ffn: usize) -> Vec<ParamSpec> {
    let mut v = layer_norm_specs(&format!("{prefix}.norm1"), hidden);
    v.extend(linear_specs(&format!("{prefix}.attn.qkv"), hidden, 3 * hidden));
    v.extend(linear_specs(&format!("{prefix}.attn.out"), hidden, hidden));
    v.extend(layer_norm_specs(&format!("{prefix}.norm2"), hidden));
    v.extend(linear_specs(&format!("{prefix}.ffn.fc1"), hidden, ffn));
    v.extend(linear_specs(&format!("{prefix}.ffn.fc2"), ffn, hidden));
    v
}

/// Creates a `VarMap` holding every parameter of `specs`, initialised from `rng`.
pub fn init_varmap(specs: &[ParamSpec], rng: &mut StdRng, device: &Device) -> Result<candle_nn::VarMap> {
    let varmap = candle_nn::VarMap::new();
    {
        let mut data = varmap.data().lock().expect("fresh VarMap lock");
        for spec in specs {
            data.insert(
                spec.name.clone(),
                candle_core::Var::from_tensor(&spec.sample(rng, device)?)?,
            );
        }
    }
    Ok(varmap)
}

/// Checks a loaded set of tensors against `specs`: every name present with its shape, nothing extra.
pub(crate) fn check_tensors(
    specs: &[ParamSpec],
    tensors: &std::collections::HashMap<String, Tensor>,
) -> std::result::Result<(), String> {
    for spec in specs {
        match tensors.get(&spec.name) {
            None => return Err(format!("tensor `{}` is missing", spec.name)),
            Some(t) if t.dims() != spec.shape.as_slice() => {
                return Err(format!(
                    "tensor `{}` has shape {:?}, the config expects {:?}",
                    spec.name,
                    t.dims(),
                    spec.shape
                ))
            }
            Some(t) if t.dtype() != DType::F32 => {
                return Err(format!(
                    "tensor `{}` has dtype {:?}, expected F32",
                    spec.name,
                    t.dtype()
                ))
            }
            _ => {}
        }
    }
    let mut extra: Vec<&String> = tensors
        .keys()
        .filter(|k| !specs.iter().any(|s| &s.name == *k))
        .collect();
    extra.sort();
    if let Some(name) = extra.first() {
        return Err(format!("unexpected tensor `{name}` (not part of this model's config)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;
    use rand::SeedableRng;

    fn random(rng: &mut StdRng, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        let data: Vec<f64> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    /// Gradients of `sum(f(vars) ⊙ r)` for a fixed random `r`, by parameter order.
    fn grads(vars: &[Var], r: &Tensor, f: impl Fn(&[Tensor]) -> Tensor) -> Vec<Tensor> {
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let store = (f(&ts) * r).unwrap().sum_all().unwrap().backward().unwrap();
        vars.iter().map(|v| store.get(v.as_tensor()).unwrap().clone()).collect()
    }

    fn max_abs(t: &Tensor) -> f64 {
        t.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        max_abs(&(a - b).unwrap())
    }

    #[test]
    fn fused_layer_norm_backward_matches_autograd_of_the_elementary_form() {
        let mut rng = StdRng::seed_from_u64(3);
        let vars: Vec<Var> = [&[2usize, 5, 8][..], &[8], &[8]]
            .iter()
            .map(|s| Var::from_tensor(&random(&mut rng, s)).unwrap())
            .collect();
        let r = random(&mut rng, &[2, 5, 8]);
        let eps = 1e-5;
        let fused = grads(&vars, &r, |t| {
            layer_norm(&t[0], &t[1], &t[2], eps, &Mode::Grad).unwrap()
        });
        let elementary = grads(&vars, &r, |t| {
            let centered = t[0].broadcast_sub(&t[0].mean_keepdim(D::Minus1).unwrap()).unwrap();
            let var = centered.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
            let normed = centered.broadcast_div(&(var + eps).unwrap().sqrt().unwrap()).unwrap();
            normed.broadcast_mul(&t[1]).unwrap().broadcast_add(&t[2]).unwrap()
        });
        for (name, (a, b)) in ["x", "weight", "bias"].iter().zip(fused.iter().zip(&elementary)) {
            let d = max_diff(a, b);
            assert!(d < 1e-9, "d/d{name} differs by {d}");
            assert!(max_abs(a) > 1e-3);
        }
        // The forward value is the fused kernel's, whatever the mode.
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let infer = layer_norm(&ts[0], &ts[1], &ts[2], eps, &Mode::Infer).unwrap();
        let grad_mode = layer_norm(&ts[0], &ts[1], &ts[2], eps, &Mode::Grad).unwrap();
        assert_eq!(max_diff(&infer, &grad_mode), 0.0);
    }

    #[test]
    fn fused_linear_backward_matches_autograd_of_the_elementary_form() {
        let mut rng = StdRng::seed_from_u64(5);
        for with_bias in [true, false] {
            let mut shapes: Vec<&[usize]> = vec![&[2, 5, 7], &[3, 7]];
            if with_bias {
                shapes.push(&[3]);
            }
            let vars: Vec<Var> = shapes
                .iter()
                .map(|s| Var::from_tensor(&random(&mut rng, s)).unwrap())
                .collect();
            let r = random(&mut rng, &[2, 5, 3]);
            let layer = |t: &[Tensor]| Linear::new(t[1].clone(), t.get(2).cloned());
            let fused = grads(&vars, &r, |t| linear(&layer(t), &t[0], &Mode::Grad).unwrap());
            let elementary = grads(&vars, &r, |t| {
                let y = t[0].broadcast_matmul(&t[1].t().unwrap()).unwrap();
                match t.get(2) {
                    Some(b) => y.broadcast_add(b).unwrap(),
                    None => y,
                }
            });
            for (i, (a, b)) in fused.iter().zip(&elementary).enumerate() {
                let d = max_diff(a, b);
                assert!(d < 1e-12, "bias {with_bias}: gradient {i} differs by {d}");
            }
            let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
            let infer = linear(&layer(&ts), &ts[0], &Mode::Infer).unwrap();
            let grad_mode = linear(&layer(&ts), &ts[0], &Mode::Grad).unwrap();
            assert!(max_diff(&infer, &grad_mode) < 1e-12);
        }
    }

    /// Guidance differentiates a loaded model (constant weights) with respect to its input: the
    /// input's gradient must be the same as with tracked weights, and the weights get none.
    #[test]
    fn constant_parameters_get_no_gradient_and_leave_the_input_gradient_unchanged() {
        let mut rng = StdRng::seed_from_u64(6);
        let x = Var::from_tensor(&random(&mut rng, &[2, 5, 7])).unwrap();
        let (w, b) = (random(&mut rng, &[3, 7]), random(&mut rng, &[3]));
        let (g, beta) = (random(&mut rng, &[7]), random(&mut rng, &[7]));
        let pos = random(&mut rng, &[5, 7]);
        let f = |x: &Tensor, w: &Tensor, b: &Tensor, g: &Tensor, beta: &Tensor, pos: &Tensor| {
            let h = add_trailing(x, pos, &Mode::Grad).unwrap();
            let h = mul_trailing(&h, g, &Mode::Grad).unwrap();
            let h = layer_norm(&h, g, beta, 1e-5, &Mode::Grad).unwrap();
            linear(&Linear::new(w.clone(), Some(b.clone())), &h, &Mode::Grad).unwrap()
        };
        let r = random(&mut rng, &[2, 5, 3]);
        let store = (f(x.as_tensor(), &w, &b, &g, &beta, &pos) * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (name, t) in [
            ("weight", &w),
            ("bias", &b),
            ("gain", &g),
            ("beta", &beta),
            ("positions", &pos),
        ] {
            assert!(store.get(t).is_none(), "the constant {name} received a gradient");
        }
        let constant_dx = store.get(x.as_tensor()).unwrap().clone();
        let vars: Vec<Var> = [&w, &b, &g, &beta, &pos]
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let tracked = grads(&[x.clone()], &r, |t| {
            let v: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
            f(&t[0], v[0], v[1], v[2], v[3], v[4])
        });
        let d = max_diff(&constant_dx, &tracked[0]);
        assert!(d < 1e-12, "d/dx differs by {d}");
        assert!(max_abs(&constant_dx) > 1e-3);
    }

    #[test]
    fn fused_softmax_backward_matches_autograd_of_the_elementary_form() {
        let mut rng = StdRng::seed_from_u64(4);
        let vars = vec![Var::from_tensor(&random(&mut rng, &[3, 4, 6])).unwrap()];
        let r = random(&mut rng, &[3, 4, 6]);
        let fused = grads(&vars, &r, |t| softmax_last(&t[0], &Mode::Grad).unwrap());
        let elementary = grads(&vars, &r, |t| candle_nn::ops::softmax(&t[0], D::Minus1).unwrap());
        let d = max_diff(&fused[0], &elementary[0]);
        assert!(d < 1e-12, "d/dx differs by {d}");
        assert!(max_abs(&fused[0]) > 1e-3);
    }
}
