//! Transformer building blocks shared by the denoiser and the autoregressive reference LM.
//!
//! Every block runs in one of two modes ([`Mode`]): `Infer` uses candle-nn's fused layer-norm and
//! softmax kernels (fast, but they record no backward pass in candle-nn 0.11), while `Train` uses
//! differentiable forms built from elementary ops and applies dropout with masks drawn from a
//! seeded generator, so training runs are reproducible.
//!
//! Parameters are described once by [`ParamSpec`] (name, shape, initialisation); the same list
//! initialises a model, documents the safetensors tensor names and checks checkpoints.

use candle_core::{DType, Device, Module, Tensor, D};
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
    pub fn is_differentiable(&self) -> bool {
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
            let mask = if x.device().is_cpu() {
                let mask: Vec<f32> = (0..x.elem_count())
                    .map(|_| if rng.gen::<f32>() < p { 0.0 } else { keep })
                    .collect();
                Tensor::from_vec(mask, x.shape(), x.device())?
            } else {
                // On a GPU, drawing the mask on the host and copying it over would cost more than
                // the whole step; the device's generator is seeded from the run's generator at every
                // training step (see `Trainer::train_step`), so runs stay reproducible.
                let u = Tensor::rand(0f32, 1f32, x.shape(), x.device())?;
                (u.ge(p as f64)?.to_dtype(DType::F32)? * keep as f64)?
            };
            Ok(x.mul(&mask.to_dtype(x.dtype())?)?)
        }
        _ => Ok(x.clone()),
    }
}

/// Softmax over the last dimension: fused for inference, differentiable for training.
pub fn softmax_last(x: &Tensor, mode: &Mode) -> Result<Tensor> {
    if mode.is_differentiable() {
        Ok(candle_nn::ops::softmax(x, D::Minus1)?)
    } else {
        Ok(candle_nn::ops::softmax_last_dim(&x.contiguous()?)?)
    }
}

/// `x + b`, where `b`'s shape is the trailing dimensions of `x`'s (a bias, a position table).
///
/// In differentiable modes the broadcast is written as a product with a column of ones, so the
/// backward pass sums `b`'s gradient with a matrix product. candle's CPU backward of a plain
/// broadcast sums over leading dimensions with a single-threaded loop that divides per element;
/// it took a fifth of a training step.
pub fn add_trailing(x: &Tensor, b: &Tensor, mode: &Mode) -> Result<Tensor> {
    if mode.is_differentiable() {
        Ok((x + expand_leading(b, x)?)?)
    } else {
        Ok(x.broadcast_add(b)?)
    }
}

/// `x · g` (elementwise), with `g` shaped like `x`'s trailing dimensions; see [`add_trailing`].
pub fn mul_trailing(x: &Tensor, g: &Tensor, mode: &Mode) -> Result<Tensor> {
    if mode.is_differentiable() {
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
/// differentiable modes one 2-D product plus [`add_trailing`]'s bias.
pub fn linear(layer: &Linear, x: &Tensor, mode: &Mode) -> Result<Tensor> {
    if !mode.is_differentiable() {
        return Ok(layer.forward(x)?);
    }
    let w = layer.weight();
    let mut dims = x.dims().to_vec();
    let k = dims.pop().unwrap_or(1);
    let y = x.reshape((x.elem_count() / k.max(1), k))?.matmul(&w.t()?)?;
    let y = match layer.bias() {
        Some(b) => add_trailing(&y, b, mode)?,
        None => y,
    };
    dims.push(w.dim(0)?);
    Ok(y.reshape(dims)?)
}

/// Layer normalisation over the last dimension.
#[derive(Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(LayerNorm {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps: 1e-5,
        })
    }

    pub fn forward(&self, x: &Tensor, mode: &Mode) -> Result<Tensor> {
        if mode.is_differentiable() {
            let mean = x.mean_keepdim(D::Minus1)?;
            let centered = x.broadcast_sub(&mean)?;
            let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
            let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
            add_trailing(&mul_trailing(&normed, &self.weight, mode)?, &self.bias, mode)
        } else {
            Ok(candle_nn::ops::layer_norm(
                &x.contiguous()?,
                &self.weight,
                &self.bias,
                self.eps as f32,
            )?)
        }
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
    pub fn new(hidden: usize, heads: usize, causal: bool, vb: VarBuilder) -> Result<Self> {
        Ok(SelfAttention {
            qkv: candle_nn::linear(hidden, 3 * hidden, vb.pp("qkv"))?,
            out: candle_nn::linear(hidden, hidden, vb.pp("out"))?,
            heads,
            causal,
        })
    }

    pub fn forward(&self, x: &Tensor, mode: &Mode) -> Result<Tensor> {
        let (b, l, h) = x.dims3()?;
        let hd = h / self.heads;
        let qkv = linear(&self.qkv, x, mode)?
            .reshape((b, l, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let mut scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        if self.causal {
            scores = scores.broadcast_add(&causal_mask(l, x.device(), scores.dtype())?)?;
        }
        let probs = softmax_last(&scores, mode)?;
        let y = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, l, h))?;
        linear(&self.out, &y, mode)
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

    pub fn forward(&self, x: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let a = self.attn.forward(&self.norm1.forward(x, mode)?, mode)?;
        let x = (x + dropout(&a, self.dropout, mode)?)?;
        let hidden = linear(&self.fc1, &self.norm2.forward(&x, mode)?, mode)?.relu()?;
        let f = linear(&self.fc2, &hidden, mode)?;
        Ok((&x + dropout(&f, self.dropout, mode)?)?)
    }
}

/// Checks a checkpoint's `model_type` and the transformer sizes every model here shares, so a
/// directory of one kind is not loaded as another and attention heads split the width evenly.
pub fn check_transformer_config(
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
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
}

impl ParamSpec {
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
pub fn linear_specs(prefix: &str, inp: usize, out: usize) -> Vec<ParamSpec> {
    let a = 1.0 / (inp as f64).sqrt();
    vec![
        ParamSpec::new(format!("{prefix}.weight"), &[out, inp], Init::Uniform(a)),
        ParamSpec::new(format!("{prefix}.bias"), &[out], Init::Uniform(a)),
    ]
}

/// Specs of a layer norm `prefix.weight`, `prefix.bias`.
pub fn layer_norm_specs(prefix: &str, dim: usize) -> Vec<ParamSpec> {
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
pub fn check_tensors(
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
