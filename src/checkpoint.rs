//! Checkpoint directories: `config.json` + `model.safetensors` + `tokenizer.json`.
//!
//! `model.safetensors` holds the EMA weights under the names of
//! [`Denoiser::param_specs`](crate::Denoiser::param_specs). Loading checks that the three files
//! agree (vocabulary size, PAD id, every tensor's name and shape) and says precisely what is wrong
//! when they do not.
//!
//! Training additionally writes `train_state.safetensors` (raw weights and AdamW moments) and
//! `train_state.json` (step, loss history) so a run can resume, and `loss.png`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::nn::{check_tensors, ParamSpec};
use crate::{Error, Result, TextTokenizer};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Writes `value` as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}

/// Reads a JSON file, naming the file in any error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Saves named tensors as safetensors.
pub fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    candle_core::safetensors::save(tensors, path).map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))
}

/// Loads a safetensors file to `device`, naming the file if it is missing or corrupt.
pub fn load_tensors(dir: &Path, file: &str, device: &Device) -> Result<HashMap<String, Tensor>> {
    let path = dir.join(file);
    if !path.exists() {
        return Err(Error::checkpoint(dir, format!("{file} is missing")));
    }
    candle_core::safetensors::load(&path, device)
        .map_err(|e| Error::checkpoint(dir, format!("{file} is not a valid safetensors file: {e}")))
}

/// A short fingerprint of a checkpoint's weights (FNV-1a of `model.safetensors`, hex), so a
/// record made with one set of weights is not mistaken for another written to the same path.
///
/// ```
/// let dir = diffusion_lm::DiffusionLm::default_dir();
/// let print = diffusion_lm::checkpoint::weights_fingerprint(&dir).unwrap();
/// assert_eq!(print.len(), 16);
/// assert_eq!(print, diffusion_lm::checkpoint::weights_fingerprint(&dir).unwrap());
/// ```
pub fn weights_fingerprint(dir: &Path) -> Result<String> {
    let path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    Ok(format!("{:016x}", crate::corpus::fnv1a(&bytes)))
}

/// Checks a directory holds the three checkpoint files and returns its path.
pub fn require_files(dir: &Path) -> Result<PathBuf> {
    if !dir.is_dir() {
        return Err(Error::checkpoint(dir, "directory does not exist"));
    }
    for file in [CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE] {
        if !dir.join(file).exists() {
            return Err(Error::checkpoint(dir, format!("{file} is missing")));
        }
    }
    Ok(dir.to_path_buf())
}

/// Loads `config.json` (of any model type) with a checkpoint-flavoured error.
pub fn load_config<T: DeserializeOwned>(dir: &Path) -> Result<T> {
    read_json(&dir.join(CONFIG_FILE)).map_err(|e| Error::checkpoint(dir, e.to_string()))
}

/// Loads the tokenizer and checks it matches the config's vocabulary and PAD id.
pub fn load_tokenizer(dir: &Path, vocab_size: usize, pad_id: u32) -> Result<TextTokenizer> {
    let tok = TextTokenizer::load(dir.join(TOKENIZER_FILE)).map_err(|e| Error::checkpoint(dir, e.to_string()))?;
    if tok.vocab_size() != vocab_size {
        return Err(Error::checkpoint(
            dir,
            format!(
                "vocabulary size mismatch: {TOKENIZER_FILE} has {} tokens, {CONFIG_FILE} says {vocab_size}",
                tok.vocab_size()
            ),
        ));
    }
    if tok.pad_id() != pad_id {
        return Err(Error::checkpoint(
            dir,
            format!(
                "PAD id mismatch: {TOKENIZER_FILE} has {}, {CONFIG_FILE} says {pad_id}",
                tok.pad_id()
            ),
        ));
    }
    Ok(tok)
}

/// Loads `model.safetensors`, checks it against `specs` and returns a var builder over it.
pub fn load_weights(dir: &Path, specs: &[ParamSpec], device: &Device) -> Result<VarBuilder<'static>> {
    let tensors = load_tensors(dir, WEIGHTS_FILE, device)?;
    check_tensors(specs, &tensors).map_err(|m| Error::checkpoint(dir, format!("{WEIGHTS_FILE}: {m}")))?;
    Ok(VarBuilder::from_tensors(tensors, DType::F32, device))
}

/// Writes a complete checkpoint directory.
pub fn save_checkpoint<C: Serialize>(
    dir: &Path,
    config: &C,
    tokenizer: &TextTokenizer,
    weights: &HashMap<String, Tensor>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_json(&dir.join(CONFIG_FILE), config)?;
    tokenizer.save(dir.join(TOKENIZER_FILE))?;
    // Write to a temporary name first so an interrupted save never leaves a truncated model.
    let tmp = dir.join(format!("{WEIGHTS_FILE}.tmp"));
    save_tensors(&tmp, weights)?;
    std::fs::rename(&tmp, dir.join(WEIGHTS_FILE)).map_err(|e| Error::io(dir.join(WEIGHTS_FILE), e))
}
