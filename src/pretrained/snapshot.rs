//! A local Hugging Face snapshot directory: `config.json`, the weights (one `model.safetensors`,
//! or shards listed by `model.safetensors.index.json`), `tokenizer.json` and the optional
//! `tokenizer_config.json` / `generation_config.json`.
//!
//! The shards are memory-mapped; a tensor is read (and converted to the compute dtype) only when
//! the model asks for it. Before any is read, [`Snapshot::check`] compares every tensor the model
//! needs with the shard headers, so a missing shard, a missing tensor, a shape or an unsupported
//! dtype is an error naming the file and the tensor, not a failure halfway through a load.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

use crate::{Error, Result};

const INDEX_FILE: &str = "model.safetensors.index.json";
const SINGLE_FILE: &str = "model.safetensors";

/// A tensor a model reads from a snapshot: its name and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The name in the checkpoint.
    pub name: String,
    /// The expected shape.
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub(crate) fn new(name: impl Into<String>, shape: &[usize]) -> Self {
        TensorSpec {
            name: name.into(),
            shape: shape.to_vec(),
        }
    }
}

/// The memory-mapped weights of a snapshot directory.
pub struct Snapshot {
    dir: PathBuf,
    /// One entry per shard file: its name and its mapping.
    shards: Vec<(String, MmapedSafetensors)>,
    /// Tensor name → index into `shards`.
    routing: HashMap<String, usize>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("dir", &self.dir)
            .field("shards", &self.shards.iter().map(|s| &s.0).collect::<Vec<_>>())
            .field("tensors", &self.routing.len())
            .finish()
    }
}

impl Snapshot {
    /// Maps the weights of `dir`: the shards named by `model.safetensors.index.json` when it
    /// exists, else `model.safetensors`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(Error::checkpoint(&dir, "not a directory"));
        }
        let index_path = dir.join(INDEX_FILE);
        let files: Vec<String> = if index_path.exists() {
            #[derive(serde::Deserialize)]
            struct Index {
                weight_map: HashMap<String, String>,
            }
            let index: Index = crate::train::checkpoint::read_json(&index_path)?;
            let files: BTreeSet<String> = index.weight_map.values().cloned().collect();
            if files.is_empty() {
                return Err(Error::checkpoint(
                    &dir,
                    format!("{INDEX_FILE}: the weight_map is empty"),
                ));
            }
            for f in &files {
                if !dir.join(f).is_file() {
                    let name = index.weight_map.iter().find(|(_, v)| *v == f).map(|(k, _)| k.as_str());
                    return Err(Error::checkpoint(
                        &dir,
                        format!(
                            "shard {f} (listed in {INDEX_FILE}, holding {}) is missing",
                            name.unwrap_or("tensors")
                        ),
                    ));
                }
            }
            files.into_iter().collect()
        } else if dir.join(SINGLE_FILE).is_file() {
            vec![SINGLE_FILE.to_string()]
        } else {
            return Err(Error::checkpoint(
                &dir,
                format!("no weights: neither {INDEX_FILE} nor {SINGLE_FILE}"),
            ));
        };
        let mut shards = Vec::with_capacity(files.len());
        let mut routing = HashMap::new();
        for (i, f) in files.into_iter().enumerate() {
            let path = dir.join(&f);
            // SAFETY: the file is mapped read-only; like every memory-mapped reader, this relies on
            // nobody truncating the checkpoint while it is in use.
            let st = unsafe { MmapedSafetensors::new(&path) }
                .map_err(|e| Error::checkpoint(&dir, format!("{f}: not a readable safetensors file: {e}")))?;
            for (name, _) in st.tensors() {
                routing.insert(name, i);
            }
            shards.push((f, st));
        }
        Ok(Snapshot { dir, shards, routing })
    }

    /// The snapshot directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of weight files.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Whether a tensor of this name is stored.
    pub fn contains(&self, name: &str) -> bool {
        self.routing.contains_key(name)
    }

    /// The stored dtype of `name` (if stored).
    pub fn dtype_of(&self, name: &str) -> Option<DType> {
        let &i = self.routing.get(name)?;
        let view = self.shards[i].1.get(name).ok()?;
        DType::try_from(view.dtype()).ok()
    }

    /// Checks that every tensor in `specs` is stored, with its shape and a float dtype.
    pub fn check(&self, specs: &[TensorSpec]) -> Result<()> {
        for spec in specs {
            let Some(&i) = self.routing.get(&spec.name) else {
                return Err(Error::checkpoint(
                    &self.dir,
                    format!("tensor {} is not in any weight file", spec.name),
                ));
            };
            let (file, st) = &self.shards[i];
            let view = st
                .get(&spec.name)
                .map_err(|e| Error::checkpoint(&self.dir, format!("{file}: tensor {}: {e}", spec.name)))?;
            if view.shape() != spec.shape.as_slice() {
                return Err(Error::checkpoint(
                    &self.dir,
                    format!(
                        "{file}: tensor {} has shape {:?}, the config implies {:?}",
                        spec.name,
                        view.shape(),
                        spec.shape
                    ),
                ));
            }
            let dtype = DType::try_from(view.dtype()).ok();
            if !matches!(dtype, Some(DType::F32 | DType::BF16 | DType::F16)) {
                return Err(Error::checkpoint(
                    &self.dir,
                    format!(
                        "{file}: tensor {} is stored as {:?}; expected F32, BF16 or F16",
                        spec.name,
                        view.dtype()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A [`candle_nn::VarBuilder`] reading from the shards, converting to `dtype` on `device`.
    pub fn var_builder(self, dtype: DType, device: &Device) -> candle_nn::VarBuilder<'static> {
        candle_nn::VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }

    fn load(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let Some(&i) = self.routing.get(name) else {
            candle_core::bail!("{}: tensor {name} is not in any weight file", self.dir.display())
        };
        let (file, st) = &self.shards[i];
        st.load(name, dev)
            .and_then(|t| t.to_dtype(dtype))
            .map_err(|e| candle_core::Error::Msg(format!("{}: {file}: tensor {name}: {e}", self.dir.display())))
    }
}

impl SimpleBackend for Snapshot {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.load(name, dtype, dev)?;
        if t.shape() != &s {
            candle_core::bail!(
                "{}: tensor {name} has shape {:?}, the model expects {:?}",
                self.dir.display(),
                t.shape(),
                s
            )
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.contains(name)
    }
}

/// Random weights in place of a snapshot's, for timing a full-size architecture without its
/// weights: every tensor is drawn from N(0, 0.02²) (norm weights too, which is harmless for
/// timing), directly on the device in the compute dtype.
pub struct RandomWeights;

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        s: Shape,
        _name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        Tensor::randn(0f32, 0.02, s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights: tensor {name} has no known shape")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}
