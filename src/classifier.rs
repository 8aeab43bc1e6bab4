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
//! [`GuidanceInput::Prediction`], `train-classifier --reads prediction`): trained on the
//! denoiser's own predictions at every noise level, it is far more accurate than a classifier of
//! raw latents, and its guidance gradient flows back through the denoiser
//! ([`prediction_gradient`]), moving the latent toward what makes the model *write* the attribute.
//!
//! Any differentiable score of the latent can drive guidance through [`LatentScore`];
//! [`LatentClassifier::field_score`] gives the score of one `field = value` target, and the
//! controllers crate wraps it as the `Attribute` controller.
//!
//! ```
//! use diffusion_lm::classifier::{ClassifierConfig, FieldSpec, LatentClassifier};
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
use std::sync::{Arc, Mutex};

use candle_core::{Device, Module, Tensor, TensorId, Var, D};
use candle_nn::{Linear, VarBuilder};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::corpus::{Example, E2E_FIELDS};
use crate::model::{timestep_embedding, Denoiser};
use crate::nn::{self, Block, Init, LayerNorm, Mode, ParamSpec};
use crate::train::{Objective, TrainConfig, Trainer};
use crate::{checkpoint, Error, NoiseSchedule, Result, TextTokenizer};

/// The class of an absent field.
pub const NONE: &str = "none";

/// One predicted field and its classes (`values[0]` is [`NONE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSpec {
    pub name: String,
    pub values: Vec<String>,
}

/// Sizes of a latent classifier (`config.json` of its directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    /// Always `"latent-classifier"`, so a classifier directory is not mistaken for a model.
    pub model_type: String,
    /// Dimension of the latent (the diffusion model's `embed_dim`).
    pub embed_dim: usize,
    pub seq_len: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn_hidden: usize,
    pub dropout: f32,
    /// T of the diffusion model whose latents it reads.
    pub diffusion_steps: usize,
    pub fields: Vec<FieldSpec>,
    /// What it reads: the noisy latent `x_t` ([`GuidanceInput::Latent`], the default of older
    /// configs) or the diffusion model's clean prediction `x̂0(x_t)` ([`GuidanceInput::Prediction`]).
    #[serde(default)]
    pub reads: GuidanceInput,
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
            reads: GuidanceInput::Latent,
        }
    }

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
    /// The differentiable pass of the current guidance update, shared by every target read from
    /// the same input (see [`LatentClassifier::shared_log_prob`]).
    shared_pass: Mutex<Option<SharedPass>>,
}

/// Logits of one differentiable pass, and the input and time steps they were computed for.
struct SharedPass {
    input: TensorId,
    t: Vec<usize>,
    logits: Vec<Tensor>,
}

impl LatentClassifier {
    /// Every parameter: name, shape and initialisation.
    pub fn param_specs(cfg: &ClassifierConfig) -> Vec<ParamSpec> {
        let (d, h) = (cfg.embed_dim, cfg.hidden);
        let mut s = nn::linear_specs("input_up", d, h);
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
            shared_pass: Mutex::new(None),
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

    /// [`LatentClassifier::log_prob`] for guidance, where several targets are asked of the same
    /// differentiable input (one update with several attributes guiding on the prediction): they
    /// share one pass, whose logits are kept, keyed by the input tensor and time steps, until
    /// [`LatentClassifier::end_shared_pass`]. Their summed objective is then differentiated
    /// through the classifier once. Whoever calls this must end the pass when the update is done:
    /// the kept logits hold the graph of everything they were computed from (the denoiser's
    /// differentiable pass too, on the prediction). A constant input keeps nothing.
    pub fn shared_log_prob(&self, x_t: &Tensor, t: &[usize], field: usize, value: usize) -> Result<Tensor> {
        if !x_t.track_op() {
            return self.log_prob(x_t, t, field, value);
        }
        let key = x_t.id();
        let kept = self
            .shared_pass()
            .as_ref()
            .filter(|pass| pass.input == key && pass.t == t)
            .map(|pass| pass.logits[field].clone());
        let logits = match kept {
            Some(logits) => logits,
            None => {
                // Computed without the lock held: generators sharing the classifier run in parallel.
                let logits = self.forward(x_t, t, &mut Mode::Grad)?;
                let out = logits[field].clone();
                *self.shared_pass() = Some(SharedPass {
                    input: key,
                    t: t.to_vec(),
                    logits,
                });
                out
            }
        };
        log_prob_of(&logits, value)
    }

    /// Drops the pass kept by [`LatentClassifier::shared_log_prob`], and with it the graph it
    /// holds.
    pub fn end_shared_pass(&self) {
        *self.shared_pass() = None;
    }

    /// The kept pass. It is only a cache, so a lock poisoned by a panic elsewhere is taken as is.
    fn shared_pass(&self) -> std::sync::MutexGuard<'_, Option<SharedPass>> {
        self.shared_pass
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The score of one `field = value` target, for guidance.
    pub fn field_score(self: &Arc<Self>, field: &str, value: &str) -> Result<FieldScore> {
        let (f, v) = self.cfg.target(field, value)?;
        Ok(FieldScore {
            classifier: Arc::clone(self),
            field: f,
            value: v,
        })
    }
}

/// `log softmax(logits)[:, value]`, `[B]`.
fn log_prob_of(logits: &Tensor, value: usize) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    Ok(logp.narrow(1, value, 1)?.squeeze(1)?)
}

/// A differentiable score `log p(c | x_t)` of a batch of latents: what classifier guidance follows.
///
/// Implement it for your own classifier and wrap it in the controllers crate's
/// `ClassifierGuidance`; [`score_gradient`] differentiates it by autograd.
pub trait LatentScore: Send + Sync {
    /// A short description, e.g. `food = Italian`.
    fn describe(&self) -> String;
    /// `log p(c | x)` per batch row (`[B]`) for latents `x` `[B, L, d]` at model time index `t`.
    /// Must be built from differentiable ops (no fused kernels; see [`crate::nn::Mode`]).
    fn log_prob(&self, x: &Tensor, t: usize) -> Result<Tensor>;
    /// What `x` is: the noisy latent (the default) or the denoiser's prediction of `x_0` from a
    /// latent at time index `t`.
    fn reads(&self) -> GuidanceInput {
        GuidanceInput::Latent
    }
    /// Called when a guidance update no longer needs anything [`LatentScore::log_prob`] kept to
    /// share between targets (see [`LatentClassifier::shared_log_prob`]); by default nothing is
    /// kept. A score that wraps another must forward it.
    fn end_pass(&self) {}
}

/// `∇_x Σ_b log p(c | x_b)`, by autograd: the guidance gradient of a [`LatentScore`].
pub fn score_gradient(score: &dyn LatentScore, x: &Tensor, t: usize) -> Result<Tensor> {
    gradient(score, x, |x| score.log_prob(x, t))
}

/// `∇_x Σ_b log_prob(x)_b` by autograd, for `score`'s messages.
fn gradient(score: &dyn LatentScore, x: &Tensor, log_prob: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let var = Var::from_tensor(&x.detach())?;
    let objective = log_prob(var.as_tensor());
    score.end_pass();
    let grads = objective?.sum_all()?.backward()?;
    grads
        .get(var.as_tensor())
        .cloned()
        .ok_or_else(|| Error::Sampling(format!("{} does not depend on the latent", score.describe())))
}

/// What a guidance score reads.
///
/// Diffusion-LM's recipe scores the noisy latent itself ([`GuidanceInput::Latent`]): the
/// classifier must then judge `x_t` at every noise level, and at high noise it can only guess.
/// [`GuidanceInput::Prediction`] scores the denoiser's clean prediction `x̂0(x)` instead, as a
/// classifier at `t = 0`, and differentiates through the denoiser: the gradient asks "how should
/// the latent move so that the *text the model is about to write* expresses `c`", which a
/// classifier can answer as well as it reads clean text. It costs one differentiable denoiser
/// pass (forward and backward) per guidance update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuidanceInput {
    /// `∇_x log p(c | x_t)`: the classifier reads the latent at its noise level.
    #[default]
    #[serde(alias = "Latent")]
    Latent,
    /// `∇_x log p(c | x̂0(x))`: the classifier reads the denoiser's prediction.
    #[serde(alias = "Prediction")]
    Prediction,
}

impl std::str::FromStr for GuidanceInput {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "latent" => Ok(GuidanceInput::Latent),
            "prediction" => Ok(GuidanceInput::Prediction),
            other => Err(Error::Config(format!(
                "guidance input {other:?}: expected \"latent\" or \"prediction\""
            ))),
        }
    }
}

/// `∇_x Σ_b log p(c | x̂0(x_b))`: the guidance gradient of a [`LatentScore`] on the denoiser's
/// clean prediction of latents `x` at time index `t` (see [`GuidanceInput::Prediction`]). A score
/// trained on predictions is asked at `t`; one trained on latents reads the prediction as a
/// clean latent, at `t = 0`.
pub fn prediction_gradient(score: &dyn LatentScore, denoiser: &Denoiser, x: &Tensor, t: usize) -> Result<Tensor> {
    let score_t = match score.reads() {
        GuidanceInput::Prediction => t,
        GuidanceInput::Latent => 0,
    };
    gradient(score, x, |x| {
        let x0 = denoiser.forward(x, &vec![t; x.dim(0)?], &mut Mode::Grad)?;
        score.log_prob(&x0, score_t)
    })
}

/// `log p(field = value | x_t)` under a [`LatentClassifier`].
#[derive(Clone)]
pub struct FieldScore {
    classifier: Arc<LatentClassifier>,
    field: usize,
    value: usize,
}

impl FieldScore {
    /// The field's name and the target value.
    pub fn target(&self) -> (&str, &str) {
        let f = &self.classifier.cfg.fields[self.field];
        (&f.name, &f.values[self.value])
    }
}

impl LatentScore for FieldScore {
    fn describe(&self) -> String {
        let (f, v) = self.target();
        format!("{f} = {v}")
    }

    /// Shares the classifier's pass with the other targets asked of the same input until
    /// [`LatentScore::end_pass`] (see [`LatentClassifier::shared_log_prob`]); the guidance paths
    /// ([`score_gradient`], [`prediction_gradient`], `controller::guidance_gradient`) end it.
    fn log_prob(&self, x: &Tensor, t: usize) -> Result<Tensor> {
        let b = x.dim(0)?;
        self.classifier.shared_log_prob(x, &vec![t; b], self.field, self.value)
    }

    fn reads(&self) -> GuidanceInput {
        self.classifier.cfg.reads
    }

    fn end_pass(&self) {
        self.classifier.end_shared_pass();
    }
}

/// The field specs of the E2E examples: every E2E field, with `none` and each value seen
/// (sorted, so the class order does not depend on the corpus order).
pub fn e2e_fields(examples: &[Example]) -> Vec<FieldSpec> {
    E2E_FIELDS
        .iter()
        .map(|(field, _)| {
            let mut values: Vec<String> = examples
                .iter()
                .filter_map(|e| e.mr.as_ref()?.get(field).map(str::to_string))
                .collect();
            values.sort();
            values.dedup();
            values.retain(|v| v != NONE);
            let mut all = vec![NONE.to_string()];
            all.extend(values);
            FieldSpec {
                name: field.to_string(),
                values: all,
            }
        })
        .collect()
}

/// The class index of every field for one example (`none` where the field is absent).
fn labels(fields: &[FieldSpec], example: &Example) -> Vec<u32> {
    fields
        .iter()
        .map(|f| {
            let value = example.mr.as_ref().and_then(|mr| mr.get(&f.name)).unwrap_or(NONE);
            f.values.iter().position(|v| v == value).unwrap_or(0) as u32
        })
        .collect()
}

/// The classifier's training objective: cross-entropy of every field on `x_t` (or on the frozen
/// denoiser's prediction `x̂0(x_t)`, see [`ClassifierConfig::reads`]), where `x_0` is the
/// (frozen) diffusion embedding of the text plus its small `t = 0` noise and `t` is uniform.
pub struct ClassifierObjective {
    pub classifier: LatentClassifier,
    embeddings: Tensor,
    schedule: NoiseSchedule,
    /// The frozen diffusion model, when the classifier reads its predictions.
    denoiser: Option<Denoiser>,
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
        let emb = self
            .embeddings
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, l, d))?;
        let ac = self.schedule.alphas_cumprod();
        let noise0 = nn::standard_normal(std::slice::from_mut(rng), (b, l, d), device)?;
        let noise = nn::standard_normal(std::slice::from_mut(rng), (b, l, d), device)?;
        let x0 = (&emb + (noise0 * (1.0 - ac[0]).sqrt())?)?;
        let t: Vec<usize> = (0..b).map(|_| rng.gen_range(0..ac.len())).collect();
        let col = |f: &dyn Fn(f64) -> f64| -> Result<Tensor> {
            let v: Vec<f32> = t.iter().map(|&i| f(ac[i]) as f32).collect();
            Ok(Tensor::from_vec(v, (b, 1, 1), device)?)
        };
        let x_t = (x0.broadcast_mul(&col(&|a| a.sqrt())?)? + noise.broadcast_mul(&col(&|a| (1.0 - a).sqrt())?)?)?;
        let input = match &self.denoiser {
            Some(denoiser) => denoiser.forward(&x_t, &t, &mut Mode::Infer)?.detach(),
            None => x_t,
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
/// word embeddings make `x_0`, and with `cfg.reads` = [`GuidanceInput::Prediction`] its
/// predictions are what the classifier reads), on labelled `examples` (E2E examples with a
/// meaning representation; others are skipped).
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
    if embeddings.dim(1)? != cfg.embed_dim {
        return Err(Error::Config(format!(
            "the embeddings have dimension {} but the classifier config says {}",
            embeddings.dim(1)?,
            cfg.embed_dim
        )));
    }
    let mut rows = Vec::new();
    let mut dropped = 0;
    for e in examples.iter().filter(|e| e.mr.is_some()) {
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
            "no labelled examples: the classifier trains on E2E rows with meaning representations".into(),
        ));
    }
    let embeddings = embeddings.detach().to_device(device)?;
    let schedule = NoiseSchedule::sqrt(cfg.diffusion_steps)?;
    let denoiser = match cfg.reads {
        GuidanceInput::Prediction => Some(denoiser.clone()),
        GuidanceInput::Latent => None,
    };
    let specs = LatentClassifier::param_specs(&cfg);
    Trainer::new(
        &specs,
        |vb| {
            Ok(ClassifierObjective {
                classifier: LatentClassifier::new(vb, &cfg)?,
                embeddings,
                schedule,
                denoiser,
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
    use super::{ClassifierConfig, GuidanceInput};

    /// Targets asked of one differentiable input share the classifier's pass until it is ended.
    #[test]
    fn targets_of_one_input_share_a_pass_until_it_ends() {
        use super::{FieldSpec, LatentClassifier};
        use crate::nn::init_varmap;
        use candle_core::{DType, Device, Tensor, Var};
        let cfg = ClassifierConfig {
            fields: vec![
                FieldSpec {
                    name: "food".into(),
                    values: vec!["none".into(), "Italian".into()],
                },
                FieldSpec {
                    name: "area".into(),
                    values: vec!["none".into(), "riverside".into()],
                },
            ],
            ..ClassifierConfig::small(4, 8, 100)
        };
        let mut rng = rand::SeedableRng::seed_from_u64(0);
        let vars = init_varmap(&LatentClassifier::param_specs(&cfg), &mut rng, &Device::Cpu).unwrap();
        let clf = LatentClassifier::new(
            candle_nn::VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
            &cfg,
        )
        .unwrap();
        let pass_id = |clf: &LatentClassifier| clf.shared_pass.lock().unwrap().as_ref().map(|p| p.logits[0].id());
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 8, 4), &Device::Cpu).unwrap()).unwrap();
        let food = clf.shared_log_prob(x.as_tensor(), &[5, 5], 0, 1).unwrap();
        let first = pass_id(&clf).expect("a differentiable input keeps its pass");
        let area = clf.shared_log_prob(x.as_tensor(), &[5, 5], 1, 1).unwrap();
        assert_eq!(pass_id(&clf), Some(first), "the second target reused the pass");
        // The shared logits give the same values as separate passes.
        let separate = clf.forward(x.as_tensor(), &[5, 5], &mut crate::nn::Mode::Grad).unwrap();
        let expect = candle_nn::ops::log_softmax(&separate[1], 1)
            .unwrap()
            .narrow(1, 1, 1)
            .unwrap();
        let diff = (area - expect.squeeze(1).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
        // Another time step, or another input, is another pass.
        clf.shared_log_prob(x.as_tensor(), &[6, 6], 0, 1).unwrap();
        assert_ne!(pass_id(&clf), Some(first));
        clf.end_shared_pass();
        assert_eq!(pass_id(&clf), None);
        // A constant input keeps nothing.
        clf.shared_log_prob(&x.as_tensor().detach(), &[5, 5], 0, 1).unwrap();
        assert_eq!(pass_id(&clf), None);
        drop(food);
    }

    #[test]
    fn what_a_classifier_reads_round_trips_and_defaults_to_the_latent() {
        assert_eq!(
            "prediction".parse::<GuidanceInput>().unwrap(),
            GuidanceInput::Prediction
        );
        assert!("x0"
            .parse::<GuidanceInput>()
            .unwrap_err()
            .to_string()
            .contains("expected"));
        let cfg = ClassifierConfig {
            reads: GuidanceInput::Prediction,
            ..ClassifierConfig::small(4, 8, 100)
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains(r#""reads":"prediction""#), "{json}");
        assert_eq!(serde_json::from_str::<ClassifierConfig>(&json).unwrap(), cfg);
        // Configs written before `reads` existed describe classifiers of latents.
        let old = json.replace(r#","reads":"prediction""#, "");
        assert_eq!(
            serde_json::from_str::<ClassifierConfig>(&old).unwrap().reads,
            GuidanceInput::Latent
        );
    }
}
