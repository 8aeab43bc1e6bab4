//! # diffusion-lm
//!
//! Controllable text generation with continuous diffusion language models, after
//! Diffusion-LM (Li et al. 2022, arXiv:2205.14217).
//!
//! Words are embedded in a small continuous space; a transformer [`Denoiser`] learns to predict
//! the clean embeddings `x0` from noisy `x_t` under the `sqrt` [`NoiseSchedule`], with the
//! embeddings learned end to end through a rounding loss ([`train`]). Sampling runs the reverse
//! process ([`Sampler`]: DDPM or DDIM) with the clamping trick and rounds to tokens at the end
//! ([`Generator`]).
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
//! | noise schedule and respacing | [`schedule`] |
//! | denoiser network | [`model`] |
//! | reverse-process update | [`sampler`] |
//! | generation pipeline | [`generate`] |
//! | training | [`train`], [`optim`] |
//! | checkpoints | [`checkpoint`] |
//! | corpora | [`corpus`] |
//! | tokenizer | [`tokenizer`] |
//! | autoregressive reference LM | [`ar`] |
//! | attribute classifiers on noisy latents (guidance) | [`classifier`] |
//! | evaluation | [`eval`] |

pub mod ar;
pub mod automaton;
pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod controller;
pub mod corpus;
pub mod device;
pub mod error;
pub mod eval;
pub mod generate;
pub mod kernels;
pub mod model;
pub mod nn;
pub mod optim;
pub mod plot;
pub mod projection;
pub mod sampler;
pub mod schedule;
pub mod token_index;
pub mod tokenizer;
pub mod train;

pub use config::ModelConfig;
pub use controller::{Controller, GuidanceConfig, GuidanceRule, HardConstraint, UnaryConstraint};
pub use error::{Error, Result};
pub use generate::{DiffusionLm, Generator, Sample};
pub use model::Denoiser;
pub use sampler::{Sampler, SamplerKind};
pub use schedule::NoiseSchedule;
pub use tokenizer::TextTokenizer;

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
