#![warn(missing_docs)]
//! # diffusion-lm
//!
//! Controllable text generation with diffusion language models: the continuous engine of
//! Diffusion-LM (Li et al. 2022, arXiv:2205.14217) and the masked engine of MDLM and LLaDA
//! ([`masked`]), under one stack of exact constraints.
//!
//! In the continuous engine, words are embedded in a small continuous space; a transformer [`Denoiser`] learns to predict
//! the clean embeddings `x0` from noisy `x_t` under the `sqrt` [`NoiseSchedule`], with the
//! embeddings learned end to end through a rounding loss ([`train`]). Sampling runs the reverse
//! process ([`Sampler`]: the prediction re-noised each step, DDPM or DDIM) with the clamping trick and rounds to tokens at the end
//! ([`Generator`]). A [`Stack`] of controllers steers it: hard [`Constraint`]s hold in every
//! output (exact projection of token scores), [`Guide`]s pull toward what they prefer (gradient
//! of a differentiable objective) and [`Repair`]s name positions to rewrite.
//!
//! ```
//! use diffusion_lm::{DiffusionLm, Generator};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let lm = DiffusionLm::load(DiffusionLm::default_dir(), &candle_core::Device::Cpu)?;
//! for sample in Generator::new(&lm).steps(50).seed(1).generate(2)? {
//!     println!("{}", sample.text);
//! }
//! # Ok(()) }
//! ```
//!
//! | piece | module |
//! | --- | --- |
//! | the continuous engine: schedule, denoiser, sampler, a loaded model | [`engine`] |
//! | the steering layer: constraint, guide and repair roles, stack, token index, automata, projection | [`steer`] |
//! | the generation pipeline and its config | [`generate`] |
//! | the masked engine (MDLM, LLaDA): model, objective, exact constrained sampler | [`masked`] |
//! | pretrained LLaDA, Dream and DiffuCoder snapshots on the masked engine | [`pretrained`] |
//! | neural building blocks, fused kernels, devices | [`nn`] |
//! | training, optimiser, checkpoints | [`train`] |
//! | tokenizer and corpus readers | [`text`] |
//! | attribute classifier, reference LM, sample metrics | [`scoring`] |
//! | the E2E dataset and its evaluation protocols | [`e2e`] |

pub mod e2e;
pub mod engine;
mod error;
pub mod generate;
pub mod masked;
pub mod nn;
pub mod pretrained;
pub mod scoring;
pub mod steer;
pub mod text;
pub mod train;

pub use engine::{Denoiser, DiffusionLm, ModelConfig, NoiseSchedule, Sampler, SamplerKind};
pub use error::{Error, Result};
pub use generate::{GenerationConfig, Generator, GuidanceConfig, GuidanceRule, Sample};
pub use steer::{CheckError, Constraint, Guide, GuideInput, Repair, Stack};
pub use text::TextTokenizer;

/// Start-up tuning of the CPU runtime: the allocator and the thread count. Call once, first
/// thing in `main`, before any other thread starts.
///
/// **Allocator.** candle allocates fresh multi-megabyte buffers for every intermediate tensor;
/// by default glibc serves those with `mmap` and unmaps them on free, so each training step pays
/// for page faults (measured: a third of the training time on CPU). Raising the mmap threshold
/// and turning off heap trimming lets freed buffers be reused: every step reaches the same peak
/// again, and a guided step at batch 64 holds more than a gigabyte of activations for its
/// backward pass, so a trim at the end of one step was paid back in page faults by the next
/// (measured: the guidance gradient at batch 64 took 2.3 s with a 1 GiB trim threshold, 1.4 s
/// without trimming). The price is that the process keeps its peak heap. A no-op on other C
/// libraries.
///
/// **Thread count.** Unless `RAYON_NUM_THREADS` is set, candle works out its CPU thread count
/// on every matrix multiplication, reading `/proc/cpuinfo` each time (measured: 1.2 ms of a
/// 5.9 ms forward pass of the shipped masked model at batch 1). This counts once and sets
/// `RAYON_NUM_THREADS` to candle's own default, so nothing else changes.
pub fn tune_runtime() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", candle_core::utils::get_num_threads().to_string());
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
        libc::mallopt(libc::M_TOP_PAD, 64 * 1024 * 1024);
    }
}
