//! Fused kernels for sampling on a CUDA device, with the same results as candle's operations
//! elsewhere.
//!
//! On a GPU, a sampling step of the shipped model at batch 256 spent half its time outside the
//! matrix products, in candle kernels that each pass over a whole tensor: a broadcast bias add ran
//! at a fifth of PyTorch's speed, the attention's softmax at a quarter, and clamping's argmin at a
//! tenth (`examples/gpu_check.rs` times each, against `benches/pytorch_reference.py`). The
//! kernels here (`src/cuda/kernels.cu`, compiled to PTX by `build.rs` with the `cuda` feature) do
//! that work in one pass each:
//!
//! * [`linear`]: a linear layer's bias, optional activation and the residual connection after
//!   it, fused into one pass over the product;
//! * [`split_heads`]: the attention's input projection split into per-head `q`, `k`, `v`, with
//!   the bias added and `q` scaled, and [`merge_heads`] for the heads' outputs;
//! * [`softmax_last_dim`]: softmax over short rows, one warp per row;
//! * [`nearest_ids`]: the clamping trick's nearest word for each position.
//!
//! Each function runs its kernel on a CUDA tensor of f32 or bf16 and otherwise falls back to the
//! candle operations it replaces, in the same order, so CPU results are unchanged.
//! [`set_enabled`] (or `DIFFUSION_LM_FUSED_KERNELS=0` in the environment) turns the kernels off
//! on CUDA too, e.g. to compare. The kernels record no backward pass: the model calls them when
//! sampling ([`crate::nn::Mode::Infer`]) and for values that custom ops with their own backward
//! passes wrap ([`crate::nn::linear`], `crate::nn::softmax_last`).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use diffusion_lm::nn::kernels::{linear, Activation};
//!
//! # fn main() -> diffusion_lm::Result<()> {
//! let dev = Device::Cpu;
//! let w = Tensor::new(&[[1.0f32, -1.0], [0.5, 0.5]], &dev)?;
//! let b = Tensor::new(&[0.0f32, -10.0], &dev)?;
//! let layer = candle_nn::Linear::new(w, Some(b));
//! let x = Tensor::new(&[[[2.0f32, 1.0]]], &dev)?;
//! let residual = Tensor::new(&[[[1.0f32, 1.0]]], &dev)?;
//! // relu(x·Wᵀ + b) + residual = relu([1, -8.5]) + 1
//! let y = linear(&layer, &x, Activation::Relu, Some(&residual))?;
//! assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![2.0, 1.0]);
//! # Ok(())
//! # }
//! ```

use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::{DType, Module, Tensor, D};
use candle_nn::Linear;

use crate::Result;

/// The activation [`linear`] applies after the bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// No activation: the affine output as is.
    None,
    /// Rectified linear unit, `max(0, y)`.
    Relu,
    /// Hyperbolic tangent.
    Tanh,
}

impl Activation {
    /// The activation applied by candle's operations (off the fused path).
    fn apply(self, y: Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::None => y,
            Activation::Relu => y.relu()?,
            Activation::Tanh => y.tanh()?,
        })
    }

    /// The kernel's code for it.
    #[cfg(feature = "cuda")]
    fn code(self) -> i32 {
        match self {
            Activation::None => 0,
            Activation::Relu => 1,
            Activation::Tanh => 2,
        }
    }
}

/// 0: not yet read from the environment; 1: on; 2: off.
static ENABLED: AtomicU8 = AtomicU8::new(0);

/// Turns the fused kernels on or off for CUDA tensors (on by default, unless
/// `DIFFUSION_LM_FUSED_KERNELS=0`). Off, every function here runs candle's operations.
pub fn set_enabled(on: bool) {
    ENABLED.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

/// Whether the fused kernels run on CUDA tensors.
pub fn enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var("DIFFUSION_LM_FUSED_KERNELS").map_or(true, |v| v != "0");
            set_enabled(on);
            on
        }
        v => v == 1,
    }
}

/// Whether `t` takes the fused path: a contiguous f32 or bf16 tensor on a CUDA device, built
/// with the `cuda` feature, kernels enabled.
fn fused(t: &Tensor) -> bool {
    cfg!(feature = "cuda")
        && t.device().is_cuda()
        && matches!(t.dtype(), DType::F32 | DType::BF16)
        && t.is_contiguous()
        && enabled()
}

/// `act(x · Wᵀ + b) + residual` over the last dimension of `x` (no gradient is recorded on the
/// fused path).
pub fn linear(layer: &Linear, x: &Tensor, act: Activation, residual: Option<&Tensor>) -> Result<Tensor> {
    let w = layer.weight();
    if let Some(b) = layer.bias() {
        if fused(x) && b.dtype() == x.dtype() && w.dtype() == x.dtype() {
            // The product as candle-nn's `Linear` computes it; `bias_act` checks the residual.
            let k = x.dim(D::Minus1)?;
            let mut dims = x.dims().to_vec();
            dims.pop();
            dims.push(w.dim(0)?);
            let product = x
                .reshape((x.elem_count() / k.max(1), k))?
                .matmul(&w.t()?)?
                .reshape(dims)?;
            return bias_act(&product, b, act, residual);
        }
    }
    let y = act.apply(layer.forward(x)?)?;
    Ok(match residual {
        Some(r) => (r + y)?,
        None => y,
    })
}

/// `act(y + b) + residual`, `b` broadcast over the leading dimensions of `y`.
pub fn bias_act(y: &Tensor, b: &Tensor, act: Activation, residual: Option<&Tensor>) -> Result<Tensor> {
    let b_ok = b.rank() == 1 && b.dim(0).ok() == y.dim(D::Minus1).ok() && b.dtype() == y.dtype();
    let r_ok = residual.is_none_or(|r| fused(r) && r.shape() == y.shape() && r.dtype() == y.dtype());
    #[cfg(feature = "cuda")]
    if fused(y) && b_ok && r_ok {
        let b = b.contiguous()?;
        let op = cuda::BiasAct { act: act.code() };
        return Ok(match residual {
            Some(r) => y.apply_op3_no_bwd(&b, r, &op)?,
            None => y.apply_op2_no_bwd(&b, &op)?,
        });
    }
    let _ = (b_ok, r_ok);
    let y = act.apply(y.broadcast_add(b)?)?;
    Ok(match residual {
        Some(r) => (r + y)?,
        None => y,
    })
}

/// The attention's `q`, `k`, `v` `[B, heads, L, hd]` from its input `x` `[B, L, h]` and its
/// input projection `qkv` (`[3h, h]`, rows ordered q, k, v and head by head within each), with
/// `q` multiplied by `scale`. `None` when the fused path does not apply (the caller then runs
/// its own operations).
pub fn split_heads(qkv: &Linear, x: &Tensor, heads: usize, scale: f64) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    let Some(b) = qkv.bias() else {
        return Ok(None);
    };
    let w = qkv.weight();
    if !fused(x) || x.rank() != 3 || w.dtype() != x.dtype() || b.dtype() != x.dtype() {
        return Ok(None);
    }
    let (bsz, l, h) = x.dims3()?;
    if w.dims() != [3 * h, h] || heads == 0 || h % heads != 0 {
        return Ok(None);
    }
    #[cfg(feature = "cuda")]
    {
        let product = x.reshape((bsz * l, h))?.matmul(&w.t()?)?;
        let op = cuda::SplitHeads {
            batch: bsz,
            len: l,
            heads,
            head_dim: h / heads,
            scale: scale as f32,
        };
        let stacked = product.apply_op2_no_bwd(&b.contiguous()?, &op)?;
        return Ok(Some((stacked.get(0)?, stacked.get(1)?, stacked.get(2)?)));
    }
    #[cfg(not(feature = "cuda"))]
    {
        // Unreachable: `fused` is false without the feature.
        let _ = (bsz, l, scale);
        Ok(None)
    }
}

/// The heads' outputs `[B, heads, L, hd]` merged to `[B, L, heads · hd]`.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, heads, l, hd) = x.dims4()?;
    #[cfg(feature = "cuda")]
    if fused(x) && x.elem_count() > 0 {
        return Ok(x.apply_op1_no_bwd(&cuda::MergeHeads)?);
    }
    Ok(x.transpose(1, 2)?.reshape((b, l, heads * hd))?)
}

/// Softmax over the last dimension (candle-nn's `softmax_last_dim` off the fused path).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if fused(x) && x.rank() >= 1 && x.elem_count() > 0 {
        return Ok(x.apply_op1_no_bwd(&cuda::SoftmaxRows)?);
    }
    Ok(candle_nn::ops::softmax_last_dim(x)?)
}

/// Index of the nearest word for each row of `dots = x · Eᵀ` `[R, V]`, given the squared norms
/// `‖E_v‖²` `[V]`: `argmin_v ‖E_v‖² − 2 dots[r, v]`, as u32 `[R]`.
pub fn nearest_ids(dots: &Tensor, sq_norms: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if fused(dots) && dots.dtype() == DType::F32 && dots.rank() == 2 && sq_norms.dtype() == DType::F32 {
        return Ok(dots.apply_op2_no_bwd(&sq_norms.contiguous()?, &cuda::NearestRows)?);
    }
    let dist = sq_norms.broadcast_sub(&(dots * 2.0)?)?;
    Ok(dist.argmin(D::Minus1)?)
}

/// The backward pass of a softmax over the last dimension, `dx = y ⊙ (dy − Σ dy ⊙ y)`, from its
/// output `y`: one kernel on CUDA (f32), `None` elsewhere (the caller runs candle's operations).
pub fn softmax_backward(y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
    #[cfg(feature = "cuda")]
    if fused(y) && y.dtype() == DType::F32 && dy.dtype() == DType::F32 && y.shape() == dy.shape() && y.rank() >= 1 {
        return Ok(Some(y.apply_op2_no_bwd(&dy.contiguous()?, &cuda::SoftmaxRowsBwd)?));
    }
    let _ = (y, dy);
    Ok(None)
}

/// The backward pass of layer norm over the rows of `x` `[rows, h]` with gain `weight` `[h]`, for
/// upstream gradient `dy` `[rows, h]`: `(dx, dy ⊙ x̂)` (the gain's gradient is the second one
/// summed over rows), in one kernel on CUDA (f32); `None` elsewhere.
pub fn layer_norm_backward(
    x: &Tensor,
    dy: &Tensor,
    weight: &Tensor,
    eps: f64,
) -> candle_core::Result<Option<(Tensor, Tensor)>> {
    #[cfg(feature = "cuda")]
    if fused(x)
        && x.rank() == 2
        && x.dtype() == DType::F32
        && dy.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && dy.shape() == x.shape()
        && weight.elem_count() == x.dim(1)?
    {
        let op = cuda::LayerNormBwd { eps: eps as f32 };
        let both = x.apply_op3_no_bwd(&dy.contiguous()?, &weight.contiguous()?, &op)?;
        return Ok(Some((both.get(0)?, both.get(1)?)));
    }
    let _ = (x, dy, weight, eps);
    Ok(None)
}

/// Whether the fused kernels run on `device` (a CUDA device, with the `cuda` feature, enabled).
pub fn fused_on(device: &candle_core::Device) -> bool {
    cfg!(feature = "cuda") && device.is_cuda() && enabled()
}

/// An inverted-dropout mask shaped like `like` (f32): `1 / (1 − p)` with probability `1 − p`,
/// else 0, drawn by one kernel from a counter-based hash of `seed` and the element's index, so
/// it needs no generator on the device (re-seeding candle's CUDA generator every training step
/// recreated it). `None` off the fused path.
pub fn dropout_mask(like: &Tensor, p: f32, seed: u64) -> Result<Option<Tensor>> {
    #[cfg(feature = "cuda")]
    if fused_on(like.device()) && like.dtype() == DType::F32 && (0.0..1.0).contains(&p) {
        return Ok(Some(like.apply_op1_no_bwd(&cuda::DropoutMask { p, seed })?));
    }
    let _ = (like, p, seed);
    Ok(None)
}

#[cfg(feature = "cuda")]
mod cuda {
    //! The custom ops behind the fused path; their CPU forms are never called (the functions above
    //! dispatch on the device), so they say so.
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{CudaView, DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{bail, CpuStorage, CudaStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape};
    use half::bf16;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels.ptx"));
    const MODULE: &str = "diffusion_lm_kernels";

    /// The `cpu_fwd` of an op that runs on CUDA only: the functions of this module dispatch on
    /// the device and never call it elsewhere, so it says so.
    macro_rules! cuda_only {
        (1) => {
            fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
                cpu_only(CustomOp1::name(self))
            }
        };
        (2) => {
            fn cpu_fwd(
                &self,
                _: &CpuStorage,
                _: &Layout,
                _: &CpuStorage,
                _: &Layout,
            ) -> candle_core::Result<(CpuStorage, Shape)> {
                cpu_only(CustomOp2::name(self))
            }
        };
        (3) => {
            #[allow(clippy::too_many_arguments)]
            fn cpu_fwd(
                &self,
                _: &CpuStorage,
                _: &Layout,
                _: &CpuStorage,
                _: &Layout,
                _: &CpuStorage,
                _: &Layout,
            ) -> candle_core::Result<(CpuStorage, Shape)> {
                cpu_only(CustomOp3::name(self))
            }
        };
    }

    /// `$op.$run::<T>(args)` with `T` the Rust type of `$dtype` (f32 or bf16).
    macro_rules! by_dtype {
        ($dtype:expr, $op:ident . $run:ident ( $($arg:expr),* )) => {
            match $dtype {
                DType::F32 => $op.$run::<f32>($($arg),*),
                DType::BF16 => $op.$run::<bf16>($($arg),*),
                other => bail!("fused kernel: unsupported dtype {other:?}"),
            }
        };
    }

    fn cpu_only(name: &str) -> candle_core::Result<(CpuStorage, Shape)> {
        bail!("{name} is a CUDA kernel; diffusion_lm::nn::kernels runs candle's operations on other devices")
    }

    /// The contiguous view of a storage's tensor.
    fn view<'a, T: CudaDType>(s: &'a CudaStorage, l: &Layout) -> candle_core::Result<CudaView<'a, T>> {
        let Some((start, end)) = l.contiguous_offsets() else {
            bail!("fused kernel: input is not contiguous");
        };
        Ok(s.as_cuda_slice::<T>()?.slice(start..end))
    }

    fn suffix(dtype: DType) -> candle_core::Result<&'static str> {
        Ok(match dtype {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            other => bail!("fused kernel: unsupported dtype {other:?}"),
        })
    }

    /// Grid-stride launch over `n` elements.
    fn elementwise(n: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (n.div_ceil(256).clamp(1, 1 << 16) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// One block of 256 threads per row.
    fn per_row(rows: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (rows.max(1) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// One warp per row, eight rows per block.
    fn warp_per_row(rows: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (rows.div_ceil(8).max(1) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    pub struct BiasAct {
        pub act: i32,
    }

    impl BiasAct {
        fn run<T: CudaDType + DeviceRepr>(
            &self,
            y: (&CudaStorage, &Layout),
            b: (&CudaStorage, &Layout),
            r: Option<(&CudaStorage, &Layout)>,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = y.0.device().clone();
            let total = y.1.shape().elem_count();
            let cols = b.1.shape().elem_count();
            let ys = view::<T>(y.0, y.1)?;
            let bs = view::<T>(b.0, b.1)?;
            let rs = r.map(|(s, l)| view::<T>(s, l)).transpose()?;
            let out = unsafe { dev.alloc::<T>(total)? };
            let func = dev.get_or_load_custom_func(&format!("bias_act_{}", suffix(y.0.dtype())?), MODULE, PTX)?;
            let null: u64 = 0;
            let (total_arg, cols_arg, act_arg) = (total as u64, cols as i32, self.act);
            let mut builder = func.builder();
            builder.arg(&ys);
            builder.arg(&bs);
            match &rs {
                Some(rs) => builder.arg(rs),
                None => builder.arg(&null),
            };
            builder.arg(&out);
            builder.arg(&total_arg);
            builder.arg(&cols_arg);
            builder.arg(&act_arg);
            unsafe { builder.launch(elementwise(total)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), y.1.shape().clone()))
        }

        fn dispatch(
            &self,
            y: (&CudaStorage, &Layout),
            b: (&CudaStorage, &Layout),
            r: Option<(&CudaStorage, &Layout)>,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            by_dtype!(y.0.dtype(), self.run(y, b, r))
        }
    }

    impl CustomOp2 for BiasAct {
        fn name(&self) -> &'static str {
            "bias-act"
        }
        cuda_only!(2);
        fn cuda_fwd(
            &self,
            y: &CudaStorage,
            yl: &Layout,
            b: &CudaStorage,
            bl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            self.dispatch((y, yl), (b, bl), None)
        }
    }

    impl CustomOp3 for BiasAct {
        fn name(&self) -> &'static str {
            "bias-act-residual"
        }
        cuda_only!(3);
        #[allow(clippy::too_many_arguments)]
        fn cuda_fwd(
            &self,
            y: &CudaStorage,
            yl: &Layout,
            b: &CudaStorage,
            bl: &Layout,
            r: &CudaStorage,
            rl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            self.dispatch((y, yl), (b, bl), Some((r, rl)))
        }
    }

    pub struct SplitHeads {
        pub batch: usize,
        pub len: usize,
        pub heads: usize,
        pub head_dim: usize,
        pub scale: f32,
    }

    impl SplitHeads {
        fn run<T: CudaDType + DeviceRepr>(
            &self,
            y: &CudaStorage,
            yl: &Layout,
            b: &CudaStorage,
            bl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let (bsz, l, h, d) = (self.batch, self.len, self.heads, self.head_dim);
            let total = bsz * l * 3 * h * d;
            if yl.shape().elem_count() != total || bl.shape().elem_count() != 3 * h * d {
                bail!(
                    "split-heads: shapes {:?} and {:?} do not match the op",
                    yl.shape(),
                    bl.shape()
                );
            }
            let dev = y.device().clone();
            let ys = view::<T>(y, yl)?;
            let bs = view::<T>(b, bl)?;
            let out = unsafe { dev.alloc::<T>(total)? };
            let func = dev.get_or_load_custom_func(&format!("split_heads_{}", suffix(y.dtype())?), MODULE, PTX)?;
            let (b_arg, l_arg, h_arg, d_arg) = (bsz as i32, l as i32, h as i32, d as i32);
            let mut builder = func.builder();
            builder.arg(&ys);
            builder.arg(&bs);
            builder.arg(&out);
            builder.arg(&b_arg);
            builder.arg(&l_arg);
            builder.arg(&h_arg);
            builder.arg(&d_arg);
            builder.arg(&self.scale);
            unsafe { builder.launch(per_row(bsz * l)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((3, bsz, h, l, d))))
        }
    }

    impl CustomOp2 for SplitHeads {
        fn name(&self) -> &'static str {
            "split-heads"
        }
        cuda_only!(2);
        fn cuda_fwd(
            &self,
            y: &CudaStorage,
            yl: &Layout,
            b: &CudaStorage,
            bl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            by_dtype!(y.dtype(), self.run(y, yl, b, bl))
        }
    }

    pub struct SoftmaxRows;

    impl SoftmaxRows {
        fn run<T: CudaDType + DeviceRepr>(
            &self,
            x: &CudaStorage,
            xl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = x.device().clone();
            let total = xl.shape().elem_count();
            let cols = xl.shape().dims().last().copied().unwrap_or(1).max(1);
            let rows = total / cols;
            let xs = view::<T>(x, xl)?;
            let out = unsafe { dev.alloc::<T>(total)? };
            let func = dev.get_or_load_custom_func(&format!("softmax_rows_{}", suffix(x.dtype())?), MODULE, PTX)?;
            let (rows_arg, cols_arg) = (rows as u64, cols as i32);
            let mut builder = func.builder();
            builder.arg(&xs);
            builder.arg(&out);
            builder.arg(&rows_arg);
            builder.arg(&cols_arg);
            unsafe { builder.launch(warp_per_row(rows)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), xl.shape().clone()))
        }
    }

    impl CustomOp1 for SoftmaxRows {
        fn name(&self) -> &'static str {
            "softmax-rows"
        }
        cuda_only!(1);
        fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            by_dtype!(x.dtype(), self.run(x, xl))
        }
    }

    pub struct NearestRows;

    impl CustomOp2 for NearestRows {
        fn name(&self) -> &'static str {
            "nearest-rows"
        }
        cuda_only!(2);
        fn cuda_fwd(
            &self,
            dots: &CudaStorage,
            dl: &Layout,
            norms: &CudaStorage,
            nl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let (rows, v) = dl.shape().dims2()?;
            if nl.shape().elem_count() != v || dots.dtype() != DType::F32 || norms.dtype() != DType::F32 {
                bail!("nearest-rows: expects f32 [R, V] scores and [V] norms");
            }
            let dev = dots.device().clone();
            let ds = view::<f32>(dots, dl)?;
            let ns = view::<f32>(norms, nl)?;
            let out = unsafe { dev.alloc::<u32>(rows)? };
            let func = dev.get_or_load_custom_func("nearest_rows_f32", MODULE, PTX)?;
            let (rows_arg, v_arg) = (rows as u64, v as i32);
            let mut builder = func.builder();
            builder.arg(&ds);
            builder.arg(&ns);
            builder.arg(&out);
            builder.arg(&rows_arg);
            builder.arg(&v_arg);
            unsafe { builder.launch(warp_per_row(rows)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(rows)))
        }
    }

    pub struct SoftmaxRowsBwd;

    impl CustomOp2 for SoftmaxRowsBwd {
        fn name(&self) -> &'static str {
            "softmax-rows-backward"
        }
        cuda_only!(2);
        fn cuda_fwd(
            &self,
            y: &CudaStorage,
            yl: &Layout,
            dy: &CudaStorage,
            dyl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let total = yl.shape().elem_count();
            let cols = yl.shape().dims().last().copied().unwrap_or(1).max(1);
            let rows = total / cols;
            if dyl.shape() != yl.shape() {
                bail!(
                    "softmax-rows-backward: shapes {:?} and {:?} differ",
                    yl.shape(),
                    dyl.shape()
                );
            }
            let dev = y.device().clone();
            let ys = view::<f32>(y, yl)?;
            let dys = view::<f32>(dy, dyl)?;
            let out = unsafe { dev.alloc::<f32>(total)? };
            let func = dev.get_or_load_custom_func("softmax_rows_bwd_f32", MODULE, PTX)?;
            let (rows_arg, cols_arg) = (rows as u64, cols as i32);
            let mut builder = func.builder();
            builder.arg(&ys);
            builder.arg(&dys);
            builder.arg(&out);
            builder.arg(&rows_arg);
            builder.arg(&cols_arg);
            unsafe { builder.launch(warp_per_row(rows)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), yl.shape().clone()))
        }
    }

    pub struct LayerNormBwd {
        pub eps: f32,
    }

    impl CustomOp3 for LayerNormBwd {
        fn name(&self) -> &'static str {
            "layer-norm-backward"
        }
        cuda_only!(3);
        #[allow(clippy::too_many_arguments)]
        fn cuda_fwd(
            &self,
            x: &CudaStorage,
            xl: &Layout,
            dy: &CudaStorage,
            dyl: &Layout,
            w: &CudaStorage,
            wl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let (rows, h) = xl.shape().dims2()?;
            if dyl.shape() != xl.shape() || wl.shape().elem_count() != h {
                bail!(
                    "layer-norm-backward: shapes {:?}, {:?}, {:?} do not fit",
                    xl.shape(),
                    dyl.shape(),
                    wl.shape()
                );
            }
            let dev = x.device().clone();
            let xs = view::<f32>(x, xl)?;
            let dys = view::<f32>(dy, dyl)?;
            let ws = view::<f32>(w, wl)?;
            let out = unsafe { dev.alloc::<f32>(2 * rows * h)? };
            let func = dev.get_or_load_custom_func("layer_norm_bwd_f32", MODULE, PTX)?;
            let (rows_arg, h_arg) = (rows as u64, h as i32);
            let mut builder = func.builder();
            builder.arg(&xs);
            builder.arg(&dys);
            builder.arg(&ws);
            builder.arg(&out);
            builder.arg(&rows_arg);
            builder.arg(&h_arg);
            builder.arg(&self.eps);
            unsafe { builder.launch(warp_per_row(rows)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((2, rows, h))))
        }
    }

    pub struct DropoutMask {
        pub p: f32,
        pub seed: u64,
    }

    impl CustomOp1 for DropoutMask {
        fn name(&self) -> &'static str {
            "dropout-mask"
        }
        cuda_only!(1);
        fn cuda_fwd(&self, like: &CudaStorage, layout: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = like.device().clone();
            let total = layout.shape().elem_count();
            let out = unsafe { dev.alloc::<f32>(total)? };
            let func = dev.get_or_load_custom_func("dropout_mask_f32", MODULE, PTX)?;
            let (total_arg, keep) = (total as u64, 1.0 / (1.0 - self.p));
            let mut builder = func.builder();
            builder.arg(&out);
            builder.arg(&total_arg);
            builder.arg(&self.seed);
            builder.arg(&self.p);
            builder.arg(&keep);
            unsafe { builder.launch(elementwise(total)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), layout.shape().clone()))
        }
    }

    pub struct MergeHeads;

    impl MergeHeads {
        fn run<T: CudaDType + DeviceRepr>(
            &self,
            x: &CudaStorage,
            xl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let (b, h, l, d) = xl.shape().dims4()?;
            let dev = x.device().clone();
            let xs = view::<T>(x, xl)?;
            let out = unsafe { dev.alloc::<T>(b * h * l * d)? };
            let func = dev.get_or_load_custom_func(&format!("merge_heads_{}", suffix(x.dtype())?), MODULE, PTX)?;
            let (l_arg, h_arg, d_arg) = (l as i32, h as i32, d as i32);
            let mut builder = func.builder();
            builder.arg(&xs);
            builder.arg(&out);
            builder.arg(&l_arg);
            builder.arg(&h_arg);
            builder.arg(&d_arg);
            unsafe { builder.launch(per_row(b * l)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((b, l, h * d))))
        }
    }

    impl CustomOp1 for MergeHeads {
        fn name(&self) -> &'static str {
            "merge-heads"
        }
        cuda_only!(1);
        fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            by_dtype!(x.dtype(), self.run(x, xl))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(data: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_vec(data.to_vec(), shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn bias_activation_and_residual_follow_the_unfused_order() {
        let y = t(&[1.0, -2.0, 0.5, 3.0], &[2, 2]);
        let b = t(&[-1.5, 1.0], &[2]);
        let r = t(&[10.0, 20.0, 30.0, 40.0], &[2, 2]);
        let relu = bias_act(&y, &b, Activation::Relu, Some(&r)).unwrap();
        assert_eq!(
            relu.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![10.0, 20.0, 30.0, 44.0]
        );
        let tanh = bias_act(&y, &b, Activation::Tanh, None).unwrap();
        let expected: Vec<f32> = [-0.5f32, -1.0, -1.0, 4.0].iter().map(|v| v.tanh()).collect();
        assert_eq!(tanh.flatten_all().unwrap().to_vec1::<f32>().unwrap(), expected);
    }

    #[test]
    fn nearest_ids_pick_the_closest_embedding() {
        // Embeddings e0 = (0, 0), e1 = (1, 0), e2 = (0, 2); rows x = (0.9, 0.1) and (0.1, 1.5).
        let e = t(&[0.0, 0.0, 1.0, 0.0, 0.0, 2.0], &[3, 2]);
        let x = t(&[0.9, 0.1, 0.1, 1.5], &[2, 2]);
        let dots = x.matmul(&e.t().unwrap()).unwrap();
        let norms = e.sqr().unwrap().sum(1).unwrap();
        let ids = nearest_ids(&dots, &norms).unwrap();
        assert_eq!(ids.to_vec1::<u32>().unwrap(), vec![1, 2]);
    }

    #[test]
    fn merged_heads_put_each_position_s_heads_side_by_side() {
        // [B=1, H=2, L=2, D=2]: head 0 rows (0,1), (2,3); head 1 rows (4,5), (6,7).
        let x = t(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], &[1, 2, 2, 2]);
        let m = merge_heads(&x).unwrap();
        assert_eq!(m.dims(), &[1, 2, 4]);
        assert_eq!(
            m.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0.0, 1.0, 4.0, 5.0, 2.0, 3.0, 6.0, 7.0]
        );
    }

    #[test]
    fn the_cpu_takes_candle_s_path() {
        let x = t(&[1.0; 12], &[1, 2, 6]);
        let w = t(&[0.1; 18 * 6], &[18, 6]);
        let layer = Linear::new(w, Some(t(&[0.0; 18], &[18])));
        assert!(split_heads(&layer, &x, 2, 0.5).unwrap().is_none());
        assert!(softmax_backward(&x, &x).unwrap().is_none());
        assert!(dropout_mask(&x, 0.1, 1).unwrap().is_none());
        let probs = softmax_last_dim(&x).unwrap();
        let sums = probs
            .sum(D::Minus1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-6));
    }
}
