//! Checkpoint directories: `config.json` + `model.safetensors` + `tokenizer.json`.
//!
//! `model.safetensors` holds the EMA weights under the names of
//! [`Denoiser::param_specs`](crate::Denoiser::param_specs). Loading checks that the three files
//! agree (vocabulary size, PAD id, every tensor's name and shape) and says precisely what is wrong
//! when they do not.
//!
//! Training additionally writes the resumable state (see [`crate::train::Trainer::save`]) and
//! `loss.png`. Every file is written to a temporary name, flushed and renamed
//! ([`write_atomic`]), so an interrupted write never leaves a truncated file, and a training run
//! holds [`DirLock`] on its directory so that two runs cannot write one directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::nn::{check_tensors, ParamSpec};
use crate::{Error, Result, TextTokenizer};

/// Name of the model configuration file in a checkpoint directory.
pub const CONFIG_FILE: &str = "config.json";
/// Name of the weights file (the EMA weights) in a checkpoint directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Name of the tokenizer file in a checkpoint directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Name of the lock file a writer holds in a directory it writes (see [`DirLock`]).
pub const LOCK_FILE: &str = ".lock";

/// Replaces `path` with what `write` puts in a temporary file next to it, so that a reader (or a
/// run that crashes halfway) sees either the old file or the new one, never a truncated mix.
///
/// `write` is handed the temporary path; the file is then flushed to disk, renamed over `path`,
/// and the directory entry is flushed too, so the rename survives a power cut. On an error the
/// temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::io(path, std::io::Error::other("not a file path")))?
        .to_string_lossy();
    // The real name goes last so that writers that pick a format by extension still see it.
    let tmp = dir.join(format!(".{}.tmp.{name}", std::process::id()));
    let written = write(&tmp).and_then(|()| {
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    sync_dir(dir)
}

/// Flushes a directory's entries (renames, removals) to disk; a no-op where directories cannot
/// be opened as files.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// An exclusive lock on a directory that one process writes (a training run's output), held
/// until dropped. The lock is the operating system's advisory file lock on `DIR/.lock`, so it is
/// released when the process ends, however it ends.
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    /// Creates `dir` if needed and locks it, or fails at once, naming the directory, if another
    /// lock on it is held (by another process, or by another `DirLock` of this one). On a file
    /// system that does not support locks the directory is used unlocked.
    pub fn acquire(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::checkpoint(
                dir,
                format!(
                    "another training run is writing this directory (it holds {}); wait for it to end or choose another output directory",
                    path.display()
                ),
            )),
            // A file system without locks (some network mounts): go on unlocked rather than
            // refuse to train there.
            Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                Ok(DirLock { _file: file })
            }
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }
}

/// Whether a directory entry is a temporary file left by [`write_atomic`] (a write that was
/// interrupted); such files are never part of a checkpoint.
pub(crate) fn is_temporary(name: &str) -> bool {
    // `.<pid>.tmp.<name>`
    name.strip_prefix('.')
        .and_then(|rest| rest.split_once(".tmp."))
        .is_some_and(|(pid, real)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && !real.is_empty())
}

/// Writes `value` as pretty JSON, atomically ([`write_atomic`]).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(path, |tmp| {
        std::fs::write(tmp, text + "\n").map_err(|e| Error::io(path, e))
    })
}

/// Reads a JSON file, naming the file in any error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Saves named tensors as safetensors, atomically ([`write_atomic`]).
pub(crate) fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    write_atomic(path, |tmp| {
        candle_core::safetensors::save(tensors, tmp).map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))
    })
}

/// Loads a safetensors file to `device`, naming the file if it is missing or corrupt.
pub fn load_tensors(dir: &Path, file: &str, device: &Device) -> Result<HashMap<String, Tensor>> {
    let path = dir.join(file);
    if !path.exists() {
        return Err(Error::checkpoint(dir, format!("{file} is missing")));
    }
    let tensors = candle_core::safetensors::load(&path, device)
        .map_err(|e| Error::checkpoint(dir, format!("{file} is not a valid safetensors file: {e}")))?;
    check_finite(&tensors).map_err(|m| Error::checkpoint(dir, format!("{file}: {m}")))?;
    Ok(tensors)
}

/// Fails on the first tensor (by name) holding a NaN or an infinity: weights like that produce
/// empty or garbage text without any other sign of trouble.
fn check_finite(tensors: &HashMap<String, Tensor>) -> std::result::Result<(), String> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let t = &tensors[name];
        if !t.dtype().is_float() {
            continue;
        }
        let t = t.to_dtype(DType::F32).map_err(|e| e.to_string())?;
        // 0·x is 0 for every finite x and NaN otherwise.
        let diff = t.affine(0.0, 0.0).map_err(|e| e.to_string())?;
        let bad = diff
            .ne(&diff)
            .and_then(|m| m.to_dtype(DType::F32))
            .and_then(|m| m.sum_all())
            .and_then(|m| m.to_scalar::<f32>())
            .map_err(|e| e.to_string())?;
        if bad > 0.0 {
            return Err(format!(
                "tensor `{name}` has {bad} non-finite values (NaN or infinity) out of {}",
                t.elem_count()
            ));
        }
    }
    Ok(())
}

/// A short fingerprint of a checkpoint's weights (FNV-1a of `model.safetensors`, hex), so a
/// record made with one set of weights is not mistaken for another written to the same path.
///
/// ```
/// let dir = diffusion_lm::DiffusionLm::default_dir();
/// let print = diffusion_lm::train::checkpoint::weights_fingerprint(&dir).unwrap();
/// assert_eq!(print.len(), 16);
/// assert_eq!(print, diffusion_lm::train::checkpoint::weights_fingerprint(&dir).unwrap());
/// ```
pub fn weights_fingerprint(dir: &Path) -> Result<String> {
    let path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    Ok(format!("{:016x}", crate::text::corpus::fnv1a(&bytes)))
}

/// Checks a directory holds the three checkpoint files and returns its path.
pub(crate) fn require_files(dir: &Path) -> Result<PathBuf> {
    if dir.is_file() {
        return Err(Error::checkpoint(
            dir,
            format!("this is a file; a checkpoint is a directory holding {CONFIG_FILE}, {WEIGHTS_FILE} and {TOKENIZER_FILE}"),
        ));
    }
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
    let tok = TextTokenizer::load(dir.join(TOKENIZER_FILE))
        .map_err(|e| Error::checkpoint(dir, format!("{TOKENIZER_FILE}: {e}")))?;
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
pub(crate) fn load_weights(dir: &Path, specs: &[ParamSpec], device: &Device) -> Result<VarBuilder<'static>> {
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
    // Each file is replaced atomically, so an interrupted save leaves whole files only.
    write_json(&dir.join(CONFIG_FILE), config)?;
    write_atomic(&dir.join(TOKENIZER_FILE), |tmp| tokenizer.save(tmp))?;
    save_tensors(&dir.join(WEIGHTS_FILE), weights)
}
