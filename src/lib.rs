#![warn(missing_docs)]
//! # diffusion-lm
//!
//! Controllable text generation with continuous diffusion language models, after
//! Diffusion-LM (Li et al. 2022, arXiv:2205.14217).
//!
//! Words are embedded in a small continuous space; a transformer [`Denoiser`] learns to predict
//! the clean embeddings `x0` from noisy `x_t` under the `sqrt` [`NoiseSchedule`], with the
//! embeddings learned end to end through a rounding loss ([`train`]). Sampling runs the reverse
//! process ([`Sampler`]: DDPM or DDIM) with the clamping trick and rounds to tokens at the end
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
pub mod scoring;
pub mod steer;
pub mod text;
pub mod train;

pub use engine::{Denoiser, DiffusionLm, ModelConfig, NoiseSchedule, Sampler, SamplerKind};
pub use error::{Error, Result};
pub use generate::{GenerationConfig, Generator, GuidanceConfig, GuidanceRule, Sample};
pub use steer::{CheckError, Constraint, Guide, GuideInput, Repair, Stack};
pub use text::TextTokenizer;

/// Keeps glibc malloc from returning every large tensor buffer to the OS.
///
/// candle allocates fresh multi-megabyte buffers for every intermediate tensor; by default glibc
/// serves those with `mmap` and unmaps them on free, so each training step pays for page faults
/// (measured: a third of the training time on CPU). Raising the mmap threshold and turning off
/// heap trimming lets freed buffers be reused: every step reaches the same peak again, and a
/// guided step at batch 64 holds more than a gigabyte of activations for its backward pass, so a
/// trim at the end of one step was paid back in page faults by the next (measured: the guidance
/// gradient at batch 64 took 2.3 s with a 1 GiB trim threshold, 1.4 s without trimming). The
/// price is that the process keeps its peak heap. Call once at start-up; a no-op on other C
/// libraries.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
        libc::mallopt(libc::M_TOP_PAD, 64 * 1024 * 1024);
    }
}
