//! The continuous engine (Diffusion-LM): the noise schedule, the denoiser that predicts clean
//! embeddings, the reverse-process update, and a loaded model.
//!
//! | piece | module |
//! | --- | --- |
//! | model sizes ([`ModelConfig`]) | [`config`] |
//! | noise schedule and respacing ([`NoiseSchedule`]) | [`schedule`] |
//! | denoiser network ([`Denoiser`]) | [`denoiser`] |
//! | reverse-process update ([`Sampler`]) | [`sampler`] |
//! | a loaded checkpoint ([`DiffusionLm`]) | [`lm`] |

pub mod config;
pub mod denoiser;
pub mod lm;
pub mod sampler;
pub mod schedule;

pub use config::{ModelConfig, X0Head};
pub use denoiser::Denoiser;
pub use lm::DiffusionLm;
pub use sampler::{Sampler, SamplerKind};
pub use schedule::{NoiseSchedule, ScheduleKind};
