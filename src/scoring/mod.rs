//! Models and metrics that judge text rather than generate it: the attribute classifier on
//! noisy latents (what attribute guidance follows), the autoregressive reference LM (sample
//! perplexity) and the sample statistics `diffusion-lm eval` reports.

pub mod ar;
pub mod classifier;
pub mod eval;
pub mod quality;
