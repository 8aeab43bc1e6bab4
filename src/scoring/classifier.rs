//! Attribute classifiers on noisy latents, for classifier-gradient guidance.
//!
//! Diffusion-LM steers generation toward an attribute `c` by adding `∇_x log p(c | x_t)` to every
//! denoising update. That needs a classifier that reads the *noisy* latent `x_t` (and `t`), not
//! text: [`LatentClassifier`] is a small bidirectional transformer over `x_t` with one softmax head
//! per field (for E2E: name, eatType, food, priceRange, customer rating, area, familyFriendly,
//! near; each with a `none` class for an absent field). It is trained on the diffusion model's own
//! forward process: a training sentence is embedded with the diffusion model's (frozen) word
//! embeddings, noised to a random `t` under the same `sqrt` schedule, and classified
//! ([`classifier_trainer`], `diffusion-lm train-classifier`).
//!
//! A classifier can also read the diffusion model's *prediction* of the clean text,
//! `x̂0(x_t)`, instead of `x_t` itself (`ClassifierConfig::reads` =
//! [`GuideInput::Prediction`], `train-classifier --reads prediction`): trained on the
//! denoiser's own predictions at every noise level, it is far more accurate than a classifier of
//! raw latents, and its guidance gradient flows back through the denoiser, moving the latent toward what makes the model *write* the attribute.
//!
//! The controllers crate's `Attribute` guide follows `log p(field = value | ·)` of a classifier
//! ([`LatentClassifier::log_prob`]).
//!
//! ```
//! use diffusion_lm::scoring::classifier::{ClassifierConfig, FieldSpec, LatentClassifier};
//! use diffusion_lm::nn::{init_varmap, Mode};
//! use candle_core::{DType, Device, Tensor};
//! # fn main() -> diffusion_lm::Result<()> {
//! let cfg = ClassifierConfig {
//!     fields: vec![FieldSpec { name: "food".into(), values: vec!["none".into(), "Italian".into()] }],
//!     ..ClassifierConfig::small(8, 16, 200)
//! };
//! let mut rng = rand::SeedableRng::seed_from_u64(0);
//! let vars = init_varmap(&LatentClassifier::param_specs(&cfg), &mut rng, &Device::Cpu)?;
//! let clf = LatentClassifier::new(candle_nn::VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu), &cfg)?;
//! let x = Tensor::zeros((2, 16, 8), DType::F32, &Device::Cpu)?;
//! let logits = clf.forward(&x, &[10, 10], &mut Mode::Infer)?;
//! assert_eq!(logits[0].dims(), &[2, 2]);
//! # Ok(()) }
//! ```
//!
//! ## Tensor names (`model.safetensors` of a classifier directory)
//!
//! `input_up.weight` `[h, d]`, `input_up.bias`; `time_embed.0.*` `[4h, h]`, `time_embed.2.*`
//! `[h, 4h]`; `position_embedding.weight` `[L, h]`; `blocks.{i}.*` (as in the denoiser);
//! `final_norm.*`; `heads.{j}.weight` `[values_j, h]`, `heads.{j}.bias` for field `j` of
//! `config.json`'s `fields`.

use std::path::Path;

use candle_core::{Device, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::engine::denoiser::{timestep_embedding, Denoiser};
use crate::nn::{self, Block, Init, LayerNorm, Mode, ParamSpec};
use crate::steer::GuideInput;
use crate::text::corpus::Example;
use crate::train::checkpoint;
use crate::train::{Objective, TrainConfig, Trainer};
use crate::{Error, NoiseSchedule, Result, TextTokenizer};

/// The class of an absent field.
pub const NONE: &str = "none";

/// One predicted field and its classes (`values[0]` is [`NONE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSpec {
    /// The field's name (for E2E, a meaning-representation key such as `food`).
    pub name: String,
    /// The field's classes, in head-output order; `values[0]` is [`NONE`].
    pub values: Vec<String>,
}

/// Sizes of a latent classifier (`config.json` of its directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    /// Always `"latent-classifier"`, so a classifier directory is not mistaken for a model.
    pub model_type: String,
    /// Dimension of the latent (the diffusion model's `embed_dim`).
    pub embed_dim: usize,
    /// Most latent positions it reads (the length of its position embedding).
    pub seq_len: usize,
    /// Transformer width.
    pub hidden: usize,
    /// Number of transformer blocks.
    pub layers: usize,
    /// Attention heads per block; divides `hidden`.
    pub heads: usize,
    /// Width of each block's feed-forward layer.
    pub ffn_hidden: usize,
    /// Dropout probability during training.
    pub dropout: f32,
    /// T of the diffusion model whose latents it reads.
    pub diffusion_steps: usize,
    /// The predicted fields, one softmax head each.
    pub fields: Vec<FieldSpec>,
    /// What it reads: the noisy latent `x_t` ([`GuideInput::Latent`], the default of older
    /// configs) or the diffusion model's clean prediction `x̂0(x_t)` ([`GuideInput::Prediction`]).
    #[serde(default)]
    pub reads: GuideInput,
    /// A classifier of masked text ([`GuideInput::Masked`]): the tokenizer's vocabulary `V`; it
    /// learns embeddings for the `V` tokens and the mask (id `V`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<usize>,
}

impl ClassifierConfig {
    /// A small classifier (2 layers of width 128) for latents of `embed_dim` × `seq_len`, no fields yet.
    pub fn small(embed_dim: usize, seq_len: usize, diffusion_steps: usize) -> Self {
        ClassifierConfig {
            model_type: "latent-classifier".into(),
            embed_dim,
            seq_len,
            hidden: 128,
            layers: 2,
            heads: 4,
            ffn_hidden: 512,
            dropout: 0.1,
            diffusion_steps,
            fields: Vec::new(),
            reads: GuideInput::Latent,
            vocab_size: None,
        }
    }

    /// Checks the model type, the sizes (`hidden` even), and that every field has at least two classes.
    pub fn validate(&self) -> Result<()> {
        nn::check_transformer_config(
            &self.model_type,
            "latent-classifier",
            self.hidden,
            self.heads,
            self.layers,
        )?;
        if self.hidden % 2 != 0 {
            // The sinusoidal time embedding has hidden/2 cosines and as many sines.
            return Err(Error::Config(format!("hidden must be even, got {}", self.hidden)));
        }
        match (self.reads, self.vocab_size) {
            (GuideInput::Masked, None | Some(0)) => {
                return Err(Error::Config(
                    "a classifier of masked text needs the vocabulary size (vocab_size)".into(),
                ))
            }
            (GuideInput::Latent | GuideInput::Prediction, Some(_)) => {
                return Err(Error::Config(
                    "vocab_size is for classifiers of masked text (reads: masked)".into(),
                ))
            }
            _ => {}
        }
        if self.fields.is_empty() {
            return Err(Error::Config("a classifier needs at least one field".into()));
        }
        for f in &self.fields {
            if f.values.len() < 2 {
                return Err(Error::Config(format!("field {:?} needs at least two classes", f.name)));
            }
        }
        Ok(())
    }

    /// Index of `field`, or an error listing the fields.
    pub fn field_index(&self, field: &str) -> Result<usize> {
        self.fields.iter().position(|f| f.name == field).ok_or_else(|| {
            let names: Vec<&str> = self.fields.iter().map(|f| f.name.as_str()).collect();
            Error::Config(format!(
                "unknown field {field:?}; the classifier knows {}",
                names.join(", ")
            ))
        })
    }

    /// Indices of `field` and `value`, or an error listing what exists.
    pub fn target(&self, field: &str, value: &str) -> Result<(usize, usize)> {
        let f = self.field_index(field)?;
        let spec = &self.fields[f];
        let v = spec.values.iter().position(|v| v == value).ok_or_else(|| {
            Error::Config(format!(
                "field {field:?} has no value {value:?}; its values are {}",
                spec.values.join(", ")
            ))
        })?;
        Ok((f, v))
    }
}

/// A transformer classifier over noisy latents `x_t` `[B, L, d]` and their time steps.
pub struct LatentClassifier {
    cfg: ClassifierConfig,
    input_up: Linear,
    time_embed: (Linear, Linear),
    position_embedding: Tensor,
    blocks: Vec<Block>,
    final_norm: LayerNorm,
    heads: Vec<Linear>,
    /// The token embeddings `[V + 1, d]` of a classifier of masked text (the last row is the
    /// mask); `None` for one of latents.
    token_embedding: Option<Tensor>,
}

impl LatentClassifier {
    /// Every parameter: name, shape and initialisation.
    pub fn param_specs(cfg: &ClassifierConfig) -> Vec<ParamSpec> {
        let (d, h) = (cfg.embed_dim, cfg.hidden);
        let mut s = nn::linear_specs("input_up", d, h);
        if let (GuideInput::Masked, Some(v)) = (cfg.reads, cfg.vocab_size) {
            s.push(ParamSpec::new("token_embedding.weight", &[v + 1, d], Init::Normal(1.0)));
        }
        s.extend(nn::linear_specs("time_embed.0", h, 4 * h));
        s.extend(nn::linear_specs("time_embed.2", 4 * h, h));
        s.push(ParamSpec::new(
            "position_embedding.weight",
            &[cfg.seq_len, h],
            Init::Normal(0.02),
        ));
        for i in 0..cfg.layers {
            s.extend(nn::block_specs(&format!("blocks.{i}"), h, cfg.ffn_hidden));
        }
        s.extend(nn::layer_norm_specs("final_norm", h));
        for (j, f) in cfg.fields.iter().enumerate() {
            s.extend(nn::linear_specs(&format!("heads.{j}"), h, f.values.len()));
        }
        s
    }

    /// Builds the classifier from the tensors in `vb`, after validating `cfg`.
    pub fn new(vb: VarBuilder, cfg: &ClassifierConfig) -> Result<Self> {
        cfg.validate()?;
        let (d, h) = (cfg.embed_dim, cfg.hidden);
        Ok(LatentClassifier {
            cfg: cfg.clone(),
            input_up: candle_nn::linear(d, h, vb.pp("input_up"))?,
            time_embed: (
                candle_nn::linear(h, 4 * h, vb.pp("time_embed.0"))?,
                candle_nn::linear(4 * h, h, vb.pp("time_embed.2"))?,
            ),
            position_embedding: vb.get((cfg.seq_len, h), "position_embedding.weight")?,
            blocks: nn::blocks(cfg.layers, h, cfg.heads, cfg.ffn_hidden, cfg.dropout, false, &vb)?,
            final_norm: LayerNorm::new(h, vb.pp("final_norm"))?,
            heads: cfg
                .fields
                .iter()
                .enumerate()
                .map(|(j, f)| Ok(candle_nn::linear(h, f.values.len(), vb.pp(format!("heads.{j}")))?))
                .collect::<Result<Vec<_>>>()?,
            token_embedding: match (cfg.reads, cfg.vocab_size) {
                (GuideInput::Masked, Some(v)) => Some(vb.get((v + 1, d), "token_embedding.weight")?),
                _ => None,
            },
        })
    }

    /// Loads a directory written by `diffusion-lm train-classifier`.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = checkpoint::require_files(dir.as_ref())?;
        let cfg: ClassifierConfig = checkpoint::load_config(&dir)?;
        cfg.validate()
            .map_err(|e| Error::checkpoint(&dir, format!("config.json: {e}")))?;
        let vb = checkpoint::load_weights(&dir, &Self::param_specs(&cfg), device)?;
        Self::new(vb, &cfg)
    }

    /// The token embeddings `[V + 1, d]` of a classifier of masked text (the last row is the
    /// mask, id `V`); `None` for a classifier of latents.
    pub fn token_embeddings(&self) -> Option<&Tensor> {
        self.token_embedding.as_ref()
    }

    /// A classifier of masked text: the embedded tokens `[B, L, d]` of `ids` (`[B, L]`, the mask
    /// is id `V`), to read with [`Self::forward`] at the masked fraction's time index
    /// ([`Self::masked_time`]).
    pub fn embed_tokens(&self, ids: &Tensor) -> Result<Tensor> {
        let table = self
            .token_embedding
            .as_ref()
            .ok_or_else(|| Error::Config("this classifier reads latents, not tokens".into()))?;
        let (b, l) = ids.dims2()?;
        Ok(table
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, l, self.cfg.embed_dim))?)
    }

    /// The time index at which a classifier of masked text reads a text with `fraction` of its
    /// positions masked.
    pub fn masked_time(&self, fraction: f64) -> usize {
        let t = self.cfg.diffusion_steps;
        ((fraction.clamp(0.0, 1.0) * t as f64).round() as usize).min(t.saturating_sub(1))
    }

    /// The classifier's sizes and fields.
    pub fn config(&self) -> &ClassifierConfig {
        &self.cfg
    }

    /// Logits per field, each `[B, values]`, for latents `x_t` `[B, L, d]` at time indices `t`.
    pub fn forward(&self, x_t: &Tensor, t: &[usize], mode: &mut Mode) -> Result<Vec<Tensor>> {
        let (b, l, _) = x_t.dims3()?;
        if t.len() != b || l > self.cfg.seq_len {
            return Err(Error::Sampling(format!(
                "classifier input: {} time steps for a batch of {b}, length {l} (at most {})",
                t.len(),
                self.cfg.seq_len
            )));
        }
        let times: Vec<f64> = t
            .iter()
            .map(|&s| s as f64 * 1000.0 / self.cfg.diffusion_steps as f64)
            .collect();
        let temb = timestep_embedding(&times, self.cfg.hidden, x_t.device())?.to_dtype(x_t.dtype())?;
        let temb = self
            .time_embed
            .1
            .forward(&candle_nn::ops::silu(&self.time_embed.0.forward(&temb)?)?)?;
        let h = self.input_up.forward(x_t)?;
        let h = h
            .broadcast_add(&self.position_embedding.narrow(0, 0, l)?)?
            .broadcast_add(&temb.unsqueeze(1)?)?;
        let mut h = nn::dropout(&h, self.cfg.dropout, mode)?;
        for block in &self.blocks {
            h = block.forward(&h, mode)?;
        }
        let pooled = self.final_norm.forward(&h, mode)?.mean(1)?;
        self.heads.iter().map(|head| Ok(head.forward(&pooled)?)).collect()
    }

    /// `log p(field = value | x_t)` per batch row, `[B]`, differentiable.
    pub fn log_prob(&self, x_t: &Tensor, t: &[usize], field: usize, value: usize) -> Result<Tensor> {
        let logits = self.forward(x_t, t, &mut Mode::Grad)?.swap_remove(field);
        log_prob_of(&logits, value)
    }

    /// [`LatentClassifier::log_prob`] of several `(field, value)` targets from one pass, in order.
    pub fn log_probs(&self, x_t: &Tensor, t: &[usize], targets: &[(usize, usize)]) -> Result<Vec<Tensor>> {
        let logits = self.forward(x_t, t, &mut Mode::Grad)?;
        targets.iter().map(|&(f, v)| log_prob_of(&logits[f], v)).collect()
    }
}

/// `log softmax(logits)[:, value]`, `[B]`.
fn log_prob_of(logits: &Tensor, value: usize) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    Ok(logp.narrow(1, value, 1)?.squeeze(1)?)
}

/// The class index of every field for one example (`none` where the field is absent).
fn labels(fields: &[FieldSpec], example: &Example) -> Vec<u32> {
    fields
        .iter()
        .map(|f| {
            let value = example.labels.as_ref().and_then(|l| l.get(&f.name)).unwrap_or(NONE);
            f.values.iter().position(|v| v == value).unwrap_or(0) as u32
        })
        .collect()
}

/// The classifier's training objective: cross-entropy of every field on `x_t` (or on the frozen
/// denoiser's prediction `x̂0(x_t)`, see [`ClassifierConfig::reads`]), where `x_0` is the
/// (frozen) diffusion embedding of the text plus its small `t = 0` noise and `t` is uniform.
/// For a classifier of masked text, each row is masked at a fraction drawn uniformly from
/// `(0, 1)`, as the masked engine's texts are at its steps.
pub struct ClassifierObjective {
    /// The classifier being trained.
    pub classifier: LatentClassifier,
    input: TrainingInput,
}

/// What a classifier in training reads.
enum TrainingInput {
    /// A continuous model's noisy latents, or its predictions of them.
    Continuous {
        embeddings: Tensor,
        schedule: NoiseSchedule,
        /// The frozen diffusion model, when the classifier reads its predictions.
        denoiser: Option<Denoiser>,
    },
    /// Masked text.
    Masked,
}

impl Objective for ClassifierObjective {
    type Config = ClassifierConfig;
    fn config(&self) -> &ClassifierConfig {
        &self.classifier.cfg
    }
    fn component_names(&self) -> &'static [&'static str] {
        &["loss", "accuracy"]
    }
    /// `batch` rows hold `seq_len` token ids followed by one class index per field.
    fn loss(&self, batch: &Tensor, rng: &mut StdRng) -> Result<(Tensor, Vec<f64>)> {
        let cfg = &self.classifier.cfg;
        let (b, _) = batch.dims2()?;
        let (l, d, nf) = (cfg.seq_len, cfg.embed_dim, cfg.fields.len());
        let device = batch.device();
        let ids = batch.narrow(1, 0, l)?.contiguous()?;
        let labels = batch.narrow(1, l, nf)?.contiguous()?;
        let (input, t) = match &self.input {
            TrainingInput::Continuous {
                embeddings,
                schedule,
                denoiser,
            } => {
                let emb = embeddings.index_select(&ids.flatten_all()?, 0)?.reshape((b, l, d))?;
                let ac = schedule.alphas_cumprod();
                let noise0 = nn::standard_normal(std::slice::from_mut(rng), (b, l, d), device)?;
                let noise = nn::standard_normal(std::slice::from_mut(rng), (b, l, d), device)?;
                let x0 = (&emb + (noise0 * (1.0 - ac[0]).sqrt())?)?;
                let t: Vec<usize> = (0..b).map(|_| rng.gen_range(0..ac.len())).collect();
                let col = |f: &dyn Fn(f64) -> f64| -> Result<Tensor> {
                    let v: Vec<f32> = t.iter().map(|&i| f(ac[i]) as f32).collect();
                    Ok(Tensor::from_vec(v, (b, 1, 1), device)?)
                };
                let x_t =
                    (x0.broadcast_mul(&col(&|a| a.sqrt())?)? + noise.broadcast_mul(&col(&|a| (1.0 - a).sqrt())?)?)?;
                let input = match denoiser {
                    Some(denoiser) => denoiser.forward(&x_t, &t, &mut Mode::Infer)?.detach(),
                    None => x_t,
                };
                (input, t)
            }
            TrainingInput::Masked => {
                let mask = cfg.vocab_size.unwrap_or(0) as u32;
                let mut ids = ids.flatten_all()?.to_vec1::<u32>()?;
                let mut t = Vec::with_capacity(b);
                for row in ids.chunks_mut(l) {
                    let share: f64 = rng.gen();
                    let mut masked = 0;
                    for id in row.iter_mut() {
                        if rng.gen::<f64>() < share {
                            *id = mask;
                            masked += 1;
                        }
                    }
                    t.push(self.classifier.masked_time(masked as f64 / l as f64));
                }
                let ids = Tensor::from_vec(ids, (b, l), device)?;
                (self.classifier.embed_tokens(&ids)?, t)
            }
        };
        let logits = self.classifier.forward(&input, &t, &mut Mode::Train(rng))?;
        let mut loss: Option<Tensor> = None;
        let mut correct = 0usize;
        for (j, lg) in logits.iter().enumerate() {
            let target = labels.narrow(1, j, 1)?.squeeze(1)?.contiguous()?;
            let ce = candle_nn::loss::cross_entropy(lg, &target)?;
            let pred = lg.argmax(D::Minus1)?;
            correct += pred
                .eq(&target)?
                .to_dtype(candle_core::DType::F32)?
                .sum_all()?
                .to_scalar::<f32>()? as usize;
            loss = Some(match loss {
                None => ce,
                Some(acc) => (acc + ce)?,
            });
        }
        let loss = (loss.ok_or_else(|| Error::Config("no fields".into()))? / nf as f64)?;
        let value = loss.to_scalar::<f32>()? as f64;
        Ok((loss, vec![value, correct as f64 / (b * nf) as f64]))
    }
}

/// Builds a [`Trainer`] for a latent classifier of the diffusion model `denoiser` (frozen: its
/// word embeddings make `x_0`, and with `cfg.reads` = [`GuideInput::Prediction`] its
/// predictions are what the classifier reads), on labelled `examples` (examples with
/// [`Example::labels`]; others are skipped).
#[allow(clippy::too_many_arguments)]
pub fn classifier_trainer(
    cfg: ClassifierConfig,
    denoiser: &Denoiser,
    tokenizer: TextTokenizer,
    examples: &[Example],
    train: TrainConfig,
    out_dir: &Path,
    device: &Device,
) -> Result<Trainer<ClassifierObjective>> {
    cfg.validate()?;
    let embeddings = denoiser.embeddings();
    if cfg.reads == GuideInput::Masked {
        return Err(Error::Config(
            "a classifier of masked text trains without a continuous model (masked_classifier_trainer)".into(),
        ));
    }
    if embeddings.dim(1)? != cfg.embed_dim {
        return Err(Error::Config(format!(
            "the embeddings have dimension {} but the classifier config says {}",
            embeddings.dim(1)?,
            cfg.embed_dim
        )));
    }
    let (rows, dropped) = labelled_rows(&cfg, &tokenizer, examples)?;
    let input = TrainingInput::Continuous {
        embeddings: embeddings.detach().to_device(device)?,
        schedule: denoiser.config().schedule.schedule(cfg.diffusion_steps)?,
        denoiser: (cfg.reads == GuideInput::Prediction).then(|| denoiser.clone()),
    };
    trainer(cfg, input, rows, dropped, tokenizer, train, out_dir, device)
}

/// Builds a [`Trainer`] for a classifier of masked text (`cfg.reads` =
/// [`GuideInput::Masked`], with the tokenizer's vocabulary as `cfg.vocab_size`) on labelled
/// `examples`: the masked engine's guide, which needs no continuous model.
pub fn masked_classifier_trainer(
    cfg: ClassifierConfig,
    tokenizer: TextTokenizer,
    examples: &[Example],
    train: TrainConfig,
    out_dir: &Path,
    device: &Device,
) -> Result<Trainer<ClassifierObjective>> {
    cfg.validate()?;
    if cfg.reads != GuideInput::Masked || cfg.vocab_size != Some(tokenizer.vocab_size()) {
        return Err(Error::Config(format!(
            "a classifier of masked text reads masked text (reads: masked) over the tokenizer's {} tokens",
            tokenizer.vocab_size()
        )));
    }
    let (rows, dropped) = labelled_rows(&cfg, &tokenizer, examples)?;
    trainer(
        cfg,
        TrainingInput::Masked,
        rows,
        dropped,
        tokenizer,
        train,
        out_dir,
        device,
    )
}

/// Every labelled example that fits as a row: its token ids padded to `seq_len`, then one class
/// index per field; and how many were dropped (empty or too long).
fn labelled_rows(
    cfg: &ClassifierConfig,
    tokenizer: &TextTokenizer,
    examples: &[Example],
) -> Result<(Vec<Vec<u32>>, usize)> {
    let mut rows = Vec::new();
    let mut dropped = 0;
    for e in examples.iter().filter(|e| e.labels.is_some()) {
        let mut ids = tokenizer.encode(&e.text)?;
        if ids.is_empty() || ids.len() > cfg.seq_len {
            dropped += 1;
            continue;
        }
        ids.resize(cfg.seq_len, tokenizer.pad_id());
        ids.extend(labels(&cfg.fields, e));
        rows.push(ids);
    }
    if rows.is_empty() {
        return Err(Error::Config(
            "no labelled examples: the classifier trains on examples with labels (E2E rows with meaning representations)".into(),
        ));
    }
    Ok((rows, dropped))
}

#[allow(clippy::too_many_arguments)]
fn trainer(
    cfg: ClassifierConfig,
    input: TrainingInput,
    rows: Vec<Vec<u32>>,
    dropped: usize,
    tokenizer: TextTokenizer,
    train: TrainConfig,
    out_dir: &Path,
    device: &Device,
) -> Result<Trainer<ClassifierObjective>> {
    let specs = LatentClassifier::param_specs(&cfg);
    Trainer::new(
        &specs,
        |vb| {
            Ok(ClassifierObjective {
                classifier: LatentClassifier::new(vb, &cfg)?,
                input,
            })
        },
        rows,
        dropped,
        tokenizer,
        train,
        out_dir,
        device,
    )
}

/// Builds a classifier from named tensors (e.g. a trainer's EMA weights).
pub fn from_weights(
    cfg: &ClassifierConfig,
    weights: std::collections::HashMap<String, Tensor>,
    device: &Device,
) -> Result<LatentClassifier> {
    nn::check_tensors(&LatentClassifier::param_specs(cfg), &weights).map_err(Error::Config)?;
    LatentClassifier::new(VarBuilder::from_tensors(weights, candle_core::DType::F32, device), cfg)
}

#[cfg(test)]
mod tests {
    use super::ClassifierConfig;
    use crate::steer::GuideInput;

    #[test]
    fn what_a_classifier_reads_round_trips_and_defaults_to_the_latent() {
        assert_eq!("prediction".parse::<GuideInput>().unwrap(), GuideInput::Prediction);
        assert!("x0".parse::<GuideInput>().unwrap_err().to_string().contains("expected"));
        let cfg = ClassifierConfig {
            reads: GuideInput::Prediction,
            ..ClassifierConfig::small(4, 8, 100)
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains(r#""reads":"prediction""#), "{json}");
        assert_eq!(serde_json::from_str::<ClassifierConfig>(&json).unwrap(), cfg);
        // Configs written before `reads` existed describe classifiers of latents.
        let old = json.replace(r#","reads":"prediction""#, "");
        assert_eq!(
            serde_json::from_str::<ClassifierConfig>(&old).unwrap().reads,
            GuideInput::Latent
        );
    }
}
