//! The masked engine: discrete (masked) diffusion as in MDLM, LLaDA and Dream.
//!
//! A bidirectional transformer predicts the token at every position of a partly masked
//! sequence ([`MaskedDenoiser`]); it is trained with the masked-diffusion objective
//! ([`MaskedObjective`], [`masked_trainer`]). Sampling starts from an all-`[MASK]` sequence and
//! commits tokens over a number of steps ([`MaskedGenerator`]) under the same hard constraints
//! as the continuous engine (`Regex`, `Length`, `Infill`, `JsonSchema`, `Grammar`), exactly: each
//! step samples a whole valid sequence from the model's scores over (position × automaton
//! state), so every committed token keeps the text completable (see [`sample`]).
//!
//! A checkpoint is a directory like the continuous engine's (`config.json`, `model.safetensors`,
//! `tokenizer.json`); its config says `"model_type": "masked-lm"` ([`engine_of`]).

pub mod model;
pub mod sample;

pub use model::{masked_trainer, MaskedConfig, MaskedDenoiser, MaskedLm, MaskedObjective};
pub use sample::{MaskedGenerator, MaskedSampling, Remasking};

use std::path::Path;

/// Which engine a checkpoint directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The continuous engine (Diffusion-LM): [`crate::DiffusionLm`].
    Continuous,
    /// The masked engine: [`MaskedLm`].
    Masked,
}

/// The engine of the checkpoint in `dir`, from its `config.json`'s `model_type` (absent for the
/// continuous engine).
pub fn engine_of(dir: impl AsRef<Path>) -> crate::Result<Engine> {
    #[derive(serde::Deserialize)]
    struct Probe {
        model_type: Option<String>,
    }
    let dir = crate::train::checkpoint::require_files(dir.as_ref())?;
    let probe: Probe = crate::train::checkpoint::load_config(&dir)?;
    match probe.model_type.as_deref() {
        None => Ok(Engine::Continuous),
        Some(model::MODEL_TYPE) => Ok(Engine::Masked),
        Some(other) => Err(crate::Error::checkpoint(
            &dir,
            format!("config.json: model_type {other:?} is not a generator (expected none or \"masked-lm\")"),
        )),
    }
}
