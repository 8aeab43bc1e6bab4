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
//! `tokenizer.json`); its config says `"model_type": "masked-lm"` ([`engine_of`]). The sampler
//! runs any [`MaskedModel`]: the models trained here ([`MaskedLm`]) and the pretrained LLaDA and
//! Dream checkpoints ([`crate::pretrained::PretrainedLm`]).

pub mod model;
pub mod sample;

pub use model::{masked_trainer, MaskedConfig, MaskedDenoiser, MaskedLm, MaskedObjective};
pub use sample::{MaskedGenerator, MaskedSampling, Remasking, EDIT_LOWEST};

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::steer::TokenIndex;
use crate::TextTokenizer;

/// What the masked sampler needs of a model: scores for every position of a partly masked
/// sequence, and the ids and vocabulary around them.
pub trait MaskedModel: Send + Sync {
    /// Scores `[B, L, V]` for ids `[B, L]` (`[MASK]` allowed): row `i` scores the token at
    /// position `i` (a model whose outputs are shifted, like Dream, aligns them here).
    fn logits(&self, ids: &Tensor) -> crate::Result<Tensor>;
    /// The scores of positions `from..L` only, `[B, L − from, V]` (the sampler reads the
    /// generated span after the prompt; a model can skip its output layer on the prompt).
    fn logits_from(&self, ids: &Tensor, from: usize) -> crate::Result<Tensor> {
        let l = ids.dim(1)?;
        Ok(self.logits(ids)?.narrow(1, from, l - from)?)
    }
    /// `V`: the width of the scores.
    fn vocab_size(&self) -> usize;
    /// The `[MASK]` input id.
    fn mask_id(&self) -> u32;
    /// The token that fills the tail of a generation (PAD, or the end-of-text token).
    fn pad_id(&self) -> u32;
    /// The longest sequence (prompt and generation together) the model takes, if limited.
    fn max_len(&self) -> Option<usize>;
    /// The generation length when none is asked for.
    fn default_length(&self) -> usize;
    /// The tokenizer.
    fn tokenizer(&self) -> &TextTokenizer;
    /// The vocabulary's byte index (built once, shared by every constraint).
    fn token_index(&self) -> &TokenIndex;
    /// Where the model runs.
    fn device(&self) -> &Device;
    /// Tokens that end an answer before the tail (a chat model's end of turn): their
    /// probability is moved to the tail token, which is how the constraints' automata end a
    /// text (default: none).
    fn end_tokens(&self) -> &[u32] {
        &[]
    }
    /// Tokens never to commit (beyond the mask token; default: none).
    fn banned_tokens(&self) -> &[u32] {
        &[]
    }
    /// The prompt used when none is given (Dream reads position 0's scores from a prompt
    /// position; default: empty).
    fn default_prompt(&self) -> Vec<u32> {
        Vec::new()
    }
    /// Why hard constraints cannot run on this model, if they cannot (default: they can).
    fn constraint_support(&self) -> crate::Result<()> {
        Ok(())
    }
}

/// Which engine a checkpoint directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The continuous engine (Diffusion-LM): [`crate::DiffusionLm`].
    Continuous,
    /// The masked engine: [`MaskedLm`].
    Masked,
    /// A pretrained masked diffusion LLM (LLaDA, Dream, DiffuCoder) on the masked engine:
    /// [`crate::pretrained::PretrainedLm`].
    Pretrained,
}

/// The engine of the checkpoint in `dir`, from its `config.json`'s `model_type` (absent for the
/// continuous engine; `llada` or `Dream` for a pretrained snapshot).
pub fn engine_of(dir: impl AsRef<Path>) -> crate::Result<Engine> {
    #[derive(serde::Deserialize)]
    struct Probe {
        model_type: Option<String>,
    }
    let dir = dir.as_ref();
    if dir.is_dir() && dir.join("config.json").is_file() {
        let probe: Probe = crate::train::checkpoint::load_config(dir)?;
        if let Some(t) = probe.model_type.as_deref() {
            if crate::pretrained::Architecture::from_model_type(t).is_some() {
                // A Hugging Face snapshot: its own loader checks its files.
                return Ok(Engine::Pretrained);
            }
        }
    }
    let dir = crate::train::checkpoint::require_files(dir)?;
    let probe: Probe = crate::train::checkpoint::load_config(&dir)?;
    match probe.model_type.as_deref() {
        None => Ok(Engine::Continuous),
        Some(model::MODEL_TYPE) => Ok(Engine::Masked),
        Some(other) => Err(crate::Error::checkpoint(
            &dir,
            format!(
                "config.json: model_type {other:?} is not a generator (expected none, \"masked-lm\", \"llada\" or \"Dream\")"
            ),
        )),
    }
}
