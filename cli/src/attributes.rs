//! `train-classifier` and `eval-attributes`: the attribute classifiers on noisy latents that
//! drive `--attribute` guidance, and the semantic-content evaluation of that guidance.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use diffusion_lm::e2e::{attribute_expressed, attribute_mentioned};
use diffusion_lm::e2e::{e2e_fields, relexicalize as relexicalize_examples, VERBATIM_FIELDS};
use diffusion_lm::nn::device::DeviceSpec;
use diffusion_lm::scoring::classifier::{
    classifier_trainer, masked_classifier_trainer, ClassifierConfig, LatentClassifier, NONE,
};
use diffusion_lm::steer::GuideInput as GuidanceInput;
use diffusion_lm::train::checkpoint::weights_fingerprint;
use diffusion_lm::{DiffusionLm, Generator, GuidanceConfig};
use diffusion_lm_controllers::Attribute;
use serde::{Deserialize, Serialize};

use crate::{load_split, model_dir, read_data_record, report, AuxTrainArgs};

/// How guidance updates the latent; every setting left out comes from
/// [`GuidanceConfig::recommended`] for what the guidance reads.
#[derive(Args, Clone, Default)]
#[command(next_help_heading = "Soft control")]
pub struct GuidanceArgs {
    /// Guide on `latent` (the classifier reads the noisy latent, Diffusion-LM's recipe) or on
    /// `prediction` (it reads the denoiser's clean prediction, and the gradient goes through the
    /// denoiser). Default: what the classifier was trained to read.
    #[arg(long)]
    pub guide_on: Option<GuidanceInput>,
    /// Gradient updates of the latent per denoising step [default: 3 on the latent, 1 on the
    /// prediction].
    #[arg(long)]
    pub guidance_steps: Option<usize>,
    /// Size of each update [default: 0.3 on the latent (the paper used 0.1), 0.2 on the prediction].
    #[arg(long)]
    pub guidance_step_size: Option<f64>,
    /// How each update moves the latent: `sign` (Diffusion-LM's), `normalized` (the gradient
    /// over its RMS), `adam:LR` or `adagrad:LR` [default: sign on the latent, normalized on the
    /// prediction].
    #[arg(long)]
    pub guidance_rule: Option<diffusion_lm::GuidanceRule>,
    /// Weight λ of the fluency term log p(x_{t-1} | x_t) in each update.
    #[arg(long, default_value_t = GuidanceConfig::default().fluency_weight)]
    pub fluency_weight: f64,
}

impl GuidanceArgs {
    /// What the guidance reads with this classifier, and the update settings.
    pub fn resolve(&self, classifier: &LatentClassifier) -> Result<(GuidanceInput, GuidanceConfig)> {
        // Whether the classifier can read `input` is checked where the guide is built
        // (`Attribute::reading`).
        let input = self.guide_on.unwrap_or(classifier.config().reads);
        let base = GuidanceConfig::recommended(input);
        let step_size = self.guidance_step_size.unwrap_or(base.step_size);
        if !(step_size.is_finite() && step_size > 0.0) {
            bail!("--guidance-step-size must be positive, got {step_size}");
        }
        Ok((
            input,
            GuidanceConfig {
                steps: self.guidance_steps.unwrap_or(base.steps),
                step_size,
                rule: self.guidance_rule.unwrap_or(base.rule),
                fluency_weight: self.fluency_weight,
                ..base
            },
        ))
    }
}

/// Where a model's attribute classifier lives unless `--classifier` says otherwise.
pub fn classifier_dir(model: &Path, arg: Option<PathBuf>) -> PathBuf {
    arg.unwrap_or_else(|| model.join("classifier"))
}

/// Loads the classifier for `--attribute`, with a hint when it is missing.
pub fn load_classifier(
    model: &Path,
    arg: Option<PathBuf>,
    device: &candle_core::Device,
) -> Result<Arc<LatentClassifier>> {
    Ok(Arc::new(load_from(&classifier_dir(model, arg), model, "", device)?))
}

/// The classifier in `dir`; when it cannot be loaded, the error says how to train one for
/// `model` (`train-classifier` with `flags`).
fn load_from(dir: &Path, model: &Path, flags: &str, device: &candle_core::Device) -> Result<LatentClassifier> {
    LatentClassifier::load(dir, device).with_context(|| {
        format!(
            "loading the attribute classifier from {} (train one with `diffusion-lm train-classifier {flags}--model {}`)",
            dir.display(),
            model.display()
        )
    })
}

/// The classifier a masked model guides with: `--classifier`, else MODEL/classifier. It must
/// read masked text (`train-classifier --reads masked`) with the model's tokenizer.
pub fn load_masked_classifier(
    model: &Path,
    arg: Option<PathBuf>,
    device: &candle_core::Device,
) -> Result<Arc<LatentClassifier>> {
    let dir = classifier_dir(model, arg);
    let clf = load_from(&dir, model, "--reads masked ", device)?;
    if clf.config().reads != GuidanceInput::Masked {
        bail!(
            "the attribute classifier in {} reads a continuous model's latents; the masked model in {} guides with a classifier of masked text (`diffusion-lm train-classifier --reads masked --model {}`)",
            dir.display(),
            model.display(),
            model.display()
        );
    }
    let tokenizer = |d: &Path| std::fs::read(d.join(diffusion_lm::train::checkpoint::TOKENIZER_FILE));
    match (tokenizer(&dir), tokenizer(model)) {
        (Ok(a), Ok(b)) if a == b => {}
        _ => bail!(
            "the attribute classifier in {} was trained with another tokenizer than the model in {} (compare their tokenizer.json)",
            dir.display(),
            model.display()
        ),
    }
    Ok(Arc::new(clf))
}

#[derive(Args)]
pub struct TrainClassifierArgs {
    #[command(flatten)]
    aux: AuxTrainArgs,
    /// What the classifier reads: `latent` (the noisy latent x_t, Diffusion-LM's recipe) or
    /// `prediction` (the diffusion model's clean prediction x̂0(x_t); guidance then
    /// differentiates through the denoiser), for a continuous model; `masked` (text with a
    /// share of its tokens masked, the masked engine's guide; MODEL defaults to the shipped
    /// masked model).
    #[arg(long, default_value = "latent")]
    reads: GuidanceInput,
    /// Add this many relexicalized copies of every labelled example: the name, `near` and food
    /// values the text writes are swapped for other values of their field, drawn uniformly. The
    /// E2E data ties values together (every `near[Avalon]` row is about The Cricketers); the
    /// copies untie them and make rare values as frequent as common ones, so the classifier
    /// reads each value's own words and guidance writes them.
    #[arg(long, default_value_t = 0)]
    relexicalize: usize,
    /// Start from the classifier in this directory (fine-tuning) instead of random weights. Its
    /// config (architecture, fields, what it reads) replaces --hidden, --layers, --heads,
    /// --dropout and --reads.
    #[arg(long)]
    init: Option<PathBuf>,
}

/// The model a classifier is trained for.
enum Frozen {
    Continuous(DiffusionLm),
    Masked(diffusion_lm::masked::MaskedLm),
}

/// Token-embedding width of a classifier of masked text.
const MASKED_EMBED_DIM: usize = 64;
/// Time indices of a classifier of masked text (its masked fraction, in steps of 1/1000).
const MASKED_TIME_STEPS: usize = 1000;

pub fn train_classifier(
    TrainClassifierArgs {
        aux: a,
        reads,
        relexicalize,
        init,
    }: TrainClassifierArgs,
) -> Result<()> {
    let device = a.device.open()?;
    let masked = reads == GuidanceInput::Masked;
    let dir = match a.model {
        Some(dir) => dir,
        None if masked => diffusion_lm::masked::MaskedLm::default_dir(),
        None => model_dir(None),
    };
    if masked != (diffusion_lm::masked::engine_of(&dir)? == diffusion_lm::masked::Engine::Masked) {
        bail!(
            "--reads {}: {} holds a {} model; a classifier of masked text is for a masked model, one of latents or predictions for a continuous model",
            if masked { "masked" } else { "latent/prediction" },
            dir.display(),
            if masked { "continuous or pretrained" } else { "masked or pretrained" }
        );
    }
    let out = a.out.clone().unwrap_or_else(|| dir.join("classifier"));
    crate::check_output(&out, a.overwrite)?;
    let model = if masked {
        Frozen::Masked(diffusion_lm::masked::MaskedLm::load(&dir, &device)?)
    } else {
        Frozen::Continuous(DiffusionLm::load(&dir, &device)?)
    };
    let record = read_data_record(&dir)?;
    let (mut train_ex, _) = load_split(&record.corpus, record.json_records, record.heldout)?;
    let fields = e2e_fields(&train_ex);
    let initial = match &init {
        Some(path) => {
            let clf = LatentClassifier::load(path, &device)
                .with_context(|| format!("loading the classifier to start from ({})", path.display()))?;
            let weights = diffusion_lm::train::checkpoint::load_tensors(
                path,
                diffusion_lm::train::checkpoint::WEIGHTS_FILE,
                &device,
            )?;
            if clf.config().fields != fields {
                bail!(
                    "--init {}: its fields and values differ from those of the corpus in {}",
                    path.display(),
                    dir.join("data.json").display()
                );
            }
            Some((clf.config().clone(), weights))
        }
        None => None,
    };
    let cfg = match &initial {
        Some((cfg, _)) => cfg.clone(),
        None => {
            let base = match &model {
                Frozen::Continuous(lm) => {
                    ClassifierConfig::small(lm.config.embed_dim, lm.config.seq_len, lm.config.diffusion_steps)
                }
                Frozen::Masked(lm) => ClassifierConfig {
                    vocab_size: Some(lm.tokenizer.vocab_size()),
                    ..ClassifierConfig::small(MASKED_EMBED_DIM, lm.config.seq_len, MASKED_TIME_STEPS)
                },
            };
            ClassifierConfig {
                hidden: a.hidden,
                layers: a.layers,
                heads: a.heads,
                ffn_hidden: 4 * a.hidden,
                dropout: a.dropout,
                fields,
                reads,
                ..base
            }
        }
    };
    if relexicalize > 0 {
        let copies = relexicalize_examples(&train_ex, &VERBATIM_FIELDS, relexicalize, a.opt.seed);
        status!(
            "relexicalized {} copies ({} per example with a written name, near or food value)",
            copies.len(),
            relexicalize
        );
        train_ex.extend(copies);
    }
    let labelled = train_ex.iter().filter(|e| e.labels.is_some()).count();
    if labelled == 0 {
        bail!(
            "the corpus in {} has no E2E meaning representations to learn from",
            dir.join("data.json").display()
        );
    }
    let classes: usize = cfg.fields.iter().map(|f| f.values.len()).sum();
    status!(
        "attribute classifier: {labelled} labelled examples, {} fields, {classes} classes",
        cfg.fields.len()
    );
    cfg.validate()?;
    crate::clear_output(&out, a.overwrite)?;
    let mut trainer = match &model {
        Frozen::Continuous(lm) => classifier_trainer(
            cfg,
            &lm.model,
            lm.tokenizer.clone(),
            &train_ex,
            a.opt.config(),
            &out,
            &device,
        )?,
        Frozen::Masked(lm) => {
            masked_classifier_trainer(cfg, lm.tokenizer.clone(), &train_ex, a.opt.config(), &out, &device)?
        }
    };
    if let Some((_, weights)) = &initial {
        if trainer.step_count() == 0 {
            trainer.init_from(weights)?;
        } else {
            status!("resuming the run in {}; --init is not used again", out.display());
        }
    }
    report(&trainer.run(!a.no_progress)?, &out);
    Ok(())
}

#[derive(Args)]
pub struct EvalAttributesArgs {
    /// Checkpoint directory (default: the shipped continuous model, or $DIFFUSION_LM_MODEL); a
    /// masked model (`models/e2e-masked`) is sampled with its recommended settings and guided
    /// with its classifier of masked text.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The attribute classifier (default: MODEL/classifier).
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// The autoregressive reference LM for fluency (default: MODEL/ar; for a masked model without
    /// one, the shipped continuous model's).
    #[arg(long)]
    ar_model: Option<PathBuf>,
    /// How many field:value targets (0 = every pair the classifier knows), taken round-robin over
    /// the fields so each field is represented.
    #[arg(long, default_value_t = 0)]
    targets: usize,
    /// Samples per target (guided), and unguided samples with the same seeds.
    #[arg(long, default_value_t = 50)]
    samples: usize,
    /// Reverse diffusion steps, respaced from the model's T [default: 200; on a masked model,
    /// its recommended 64].
    #[arg(long)]
    steps: Option<usize>,
    /// Random seed (a whole number from 0 to 2^64 - 1): the same seed gives the same result.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = crate::parse_seed)]
    seed: u64,
    /// Guidance weight of every target.
    #[arg(long, default_value_t = 1.0)]
    weight: f64,
    #[command(flatten)]
    guidance: GuidanceArgs,
    /// Sequences denoised together (the output does not depend on it).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Self-correction rounds after sampling, guided and unguided alike (see `generate
    /// --self-correct`; 0 = off, the protocol of the figures in docs/results.md).
    #[arg(long, default_value_t = 0)]
    self_correct: usize,
    /// With --self-correct: the doubt threshold.
    #[arg(long, default_value_t = 0.3)]
    self_correct_threshold: f64,
    /// Candidates per sample, the most natural kept (see `generate --best-of`), guided and
    /// unguided alike [default: the model's own, 4 on models/e2e, 2 on models/e2e-masked].
    #[arg(long, value_name = "K")]
    best_of: Option<usize>,
    /// Write the full report (every target, with its samples) as JSON here. It is rewritten after
    /// every target (marked `"partial": true` until the run ends), so an interrupted run keeps
    /// what it measured.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Continue the interrupted run whose partial report is at --report: its finished targets are
    /// kept and only the rest are sampled (each target's samples depend only on the seed, so the
    /// result equals an uninterrupted run's). The settings must match the partial report's. With
    /// no report there yet, starts afresh.
    #[arg(long, requires = "report")]
    resume: bool,
    /// Stop after sampling this many more targets, leaving a partial report to --resume later:
    /// splits a long evaluation (hours on a CPU) into runs that fit the time at hand.
    #[arg(long, requires = "report", value_parser = clap::value_parser!(u64).range(1..))]
    stop_after_targets: Option<u64>,
    /// `cpu`, `cuda[:N]` or `metal[:N]`.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
}

#[derive(Serialize, Deserialize)]
struct TargetResult {
    field: String,
    value: String,
    /// Share of guided samples that mention the value (the paper's criterion).
    guided_mentioned: f64,
    /// Share of guided samples that express it in the field's role.
    guided_expressed: f64,
    unguided_mentioned: f64,
    unguided_expressed: f64,
    samples: Vec<String>,
}

/// What a run's results depend on; a resumed run must match its partial report's.
#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
struct EvalSettings {
    model: PathBuf,
    classifier: PathBuf,
    /// Fingerprints of the model's and the classifier's weights
    /// ([`diffusion_lm::train::checkpoint::weights_fingerprint`]): new weights at the same path are
    /// other settings.
    #[serde(default)]
    weights: (String, String),
    /// Floating-point results differ (slightly) between devices.
    device: String,
    targets: Vec<(String, String)>,
    samples_per_target: usize,
    steps: usize,
    seed: u64,
    /// Numbers as written (shortest round-trip form), so a JSON round trip compares exactly.
    weight: String,
    guidance: String,
    self_correct: (usize, String),
    /// Candidates per sample, resolved for the model.
    best_of: usize,
}

/// The report as written after each target.
#[derive(Serialize, Deserialize)]
struct PartialReport {
    partial: bool,
    settings: EvalSettings,
    /// Time of the runs so far, added up.
    seconds: f64,
    /// The unguided samples (the same for every target), so a resumed run does not redo them.
    #[serde(default)]
    unguided: Vec<String>,
    results: Vec<TargetResult>,
}

/// Whether `path` holds the partial report of an interrupted run (which a fresh run would
/// overwrite).
fn is_partial_report(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .is_some_and(|v| v.get("partial").and_then(|p| p.as_bool()) == Some(true))
}

/// The partial report at `path` (an empty one when there is no file), checked against this
/// run's settings.
fn resume_from(path: &Path, settings: &EvalSettings) -> Result<PartialReport> {
    if !path.exists() {
        status!("--resume: no report at {} yet; starting afresh", path.display());
        return Ok(PartialReport::empty(settings));
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if value.get("partial").and_then(|p| p.as_bool()) != Some(true) {
        bail!(
            "--resume: {} is a finished report, not a partial one; nothing to resume",
            path.display()
        );
    }
    let partial: PartialReport = serde_json::from_value(value).with_context(|| {
        format!(
            "--resume: {} is not a partial report of this version of eval-attributes",
            path.display()
        )
    })?;
    if &partial.settings != settings {
        bail!(
            "--resume: the settings differ from those of the partial report at {}\n  report: {:?}\n  now:    {:?}",
            path.display(),
            partial.settings,
            settings
        );
    }
    if partial.results.len() > settings.targets.len() {
        bail!("--resume: {} holds more targets than the run has", path.display());
    }
    for (i, (r, (field, value))) in partial.results.iter().zip(&settings.targets).enumerate() {
        if (&r.field, &r.value) != (field, value) {
            bail!(
                "--resume: result {i} of {} is {}={}, but target {i} is {field}={value}",
                path.display(),
                r.field,
                r.value
            );
        }
    }
    status!(
        "--resume: {} of {} targets already done ({:.0} s)",
        partial.results.len(),
        settings.targets.len(),
        partial.seconds
    );
    Ok(partial)
}

impl PartialReport {
    fn empty(settings: &EvalSettings) -> Self {
        PartialReport {
            partial: true,
            settings: settings.clone(),
            seconds: 0.0,
            unguided: Vec::new(),
            results: Vec::new(),
        }
    }
}

#[derive(Serialize)]
struct AttributeReport {
    targets: usize,
    samples_per_target: usize,
    steps: usize,
    weight: f64,
    guidance: String,
    /// Self-correction rounds and threshold (0 rounds: off).
    self_correct: (usize, f64),
    guided_mentioned: f64,
    guided_expressed: f64,
    unguided_mentioned: f64,
    unguided_expressed: f64,
    guided_perplexity: f64,
    unguided_perplexity: f64,
    per_field: BTreeMap<String, [f64; 4]>,
    seconds: f64,
    /// The unguided samples, the same for every target.
    unguided_samples: Vec<String>,
    results: Vec<TargetResult>,
}

/// Every `field = value` pair of the classifier (except `none`), round-robin over the fields.
fn pick_targets(cfg: &ClassifierConfig, n: usize) -> Vec<(String, String)> {
    let lists: Vec<Vec<(String, String)>> = cfg
        .fields
        .iter()
        .map(|f| {
            f.values
                .iter()
                .filter(|v| *v != NONE)
                .map(|v| (f.name.clone(), v.clone()))
                .collect()
        })
        .collect();
    let total: usize = lists.iter().map(Vec::len).sum();
    let n = if n == 0 { total } else { n.min(total) };
    let mut out = Vec::with_capacity(n);
    let mut round = 0;
    while out.len() < n {
        for list in &lists {
            if let Some(t) = list.get(round) {
                if out.len() < n {
                    out.push(t.clone());
                }
            }
        }
        round += 1;
    }
    out
}

fn share(texts: &[String], f: impl Fn(&str) -> bool) -> f64 {
    texts.iter().filter(|t| f(t)).count() as f64 / texts.len().max(1) as f64
}

/// The model `eval-attributes` samples from.
enum Sampled {
    Continuous(DiffusionLm),
    Masked(diffusion_lm::masked::MaskedLm),
}

pub fn eval_attributes(a: EvalAttributesArgs) -> Result<()> {
    let device = a.device.open()?;
    let dir = model_dir(a.model.clone());
    let engine = diffusion_lm::masked::engine_of(&dir)?;
    let (lm, classifier, steps) = match engine {
        diffusion_lm::masked::Engine::Continuous => (
            Sampled::Continuous(DiffusionLm::load(&dir, &device)?),
            load_classifier(&dir, a.classifier.clone(), &device)?,
            a.steps.unwrap_or(200),
        ),
        diffusion_lm::masked::Engine::Masked => (
            Sampled::Masked(diffusion_lm::masked::MaskedLm::load(&dir, &device)?),
            load_masked_classifier(&dir, a.classifier.clone(), &device)?,
            a.steps
                .unwrap_or(diffusion_lm::masked::MaskedLm::recommended_sampling().steps),
        ),
        diffusion_lm::masked::Engine::Pretrained => {
            bail!(
                "{}: eval-attributes runs models trained here (E2E), not pretrained snapshots",
                dir.display()
            )
        }
    };
    // A masked model shares the continuous model's tokenizer, and its reference LM.
    let ar_dir = a.ar_model.clone().unwrap_or_else(|| match &lm {
        Sampled::Masked(_) if !dir.join("ar").is_dir() => DiffusionLm::default_dir().join("ar"),
        _ => dir.join("ar"),
    });
    let (ar, ar_tok) = diffusion_lm::scoring::ar::CausalLm::load(&ar_dir, &device)
        .with_context(|| format!("loading the reference LM from {}", ar_dir.display()))?;
    if a.samples == 0 {
        bail!("--samples must be at least 1");
    }
    if !(a.self_correct_threshold > 0.0 && a.self_correct_threshold <= 1.0) {
        bail!(
            "--self-correct-threshold must be in (0, 1], got {}",
            a.self_correct_threshold
        );
    }
    let targets = pick_targets(classifier.config(), a.targets);
    let (input, guidance) = a.guidance.resolve(&classifier)?;
    if a.best_of == Some(0) {
        bail!("--best-of must be at least 1");
    }
    let recommended = diffusion_lm::masked::MaskedLm::recommended_sampling();
    let masked_sampling = diffusion_lm::masked::MaskedSampling {
        steps,
        seed: a.seed,
        batch_size: a.batch_size,
        best_of: a.best_of.unwrap_or(recommended.best_of),
        ..recommended
    };
    let best_of = match &lm {
        Sampled::Continuous(lm) => diffusion_lm::generate::GenerationConfig {
            best_of: a.best_of,
            ..Default::default()
        }
        .best_of_for(&lm.config),
        Sampled::Masked(_) => masked_sampling.best_of,
    };
    let guidance_used = match &lm {
        Sampled::Continuous(_) => format!("{guidance:?}, on the {input:?}"),
        Sampled::Masked(_) => format!(
            "masked engine, guidance scale {}, the recommended sampling",
            masked_sampling.guidance_scale
        ),
    };
    let settings = EvalSettings {
        model: dir.clone(),
        classifier: classifier_dir(&dir, a.classifier.clone()),
        weights: (
            weights_fingerprint(&dir)?,
            weights_fingerprint(&classifier_dir(&dir, a.classifier.clone()))?,
        ),
        device: a.device.to_string(),
        targets: targets.clone(),
        samples_per_target: a.samples,
        steps,
        seed: a.seed,
        weight: a.weight.to_string(),
        guidance: guidance_used.clone(),
        self_correct: (a.self_correct, a.self_correct_threshold.to_string()),
        best_of,
    };
    let resumed = match (&a.report, a.resume) {
        (Some(path), true) => resume_from(path, &settings)?,
        (Some(path), false) if is_partial_report(path) => bail!(
            "{} holds a partial report: continue it with --resume, or remove it to start afresh",
            path.display()
        ),
        _ => PartialReport::empty(&settings),
    };
    let (mut results, earlier_seconds) = (resumed.results, resumed.seconds);
    let started = std::time::Instant::now();
    // The samples of one target (`None`: unguided), on either engine.
    let draw = |attr: Option<Attribute>, progress: bool| -> Result<Vec<String>> {
        let samples = match &lm {
            Sampled::Continuous(lm) => {
                let g = Generator::new(lm)
                    .steps(steps)
                    .seed(a.seed)
                    .batch_size(a.batch_size)
                    .self_correct(a.self_correct, a.self_correct_threshold)
                    .best_of(best_of)
                    .progress(progress);
                match attr {
                    Some(attr) => g.guide(attr).guidance(guidance).generate(a.samples)?,
                    None => g.generate(a.samples)?,
                }
            }
            Sampled::Masked(lm) => {
                let g =
                    diffusion_lm::masked::MaskedGenerator::with_config(lm, masked_sampling.clone()).progress(progress);
                match attr {
                    Some(attr) => g.guide(attr).generate(a.samples)?,
                    None => g.generate(a.samples)?,
                }
            }
        };
        Ok(samples.into_iter().map(|s| s.text).collect())
    };
    let unguided: Vec<String> = if resumed.unguided.len() == a.samples {
        resumed.unguided
    } else {
        status!("unguided: {} samples", a.samples);
        draw(None, true)?
    };
    let bar = indicatif::ProgressBar::new(targets.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} targets [{bar:30}] {pos}/{len} {msg} ({eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_position(results.len() as u64);
    let mut all_guided: Vec<String> = results.iter().flat_map(|r| r.samples.iter().cloned()).collect();
    let todo = targets.len() - results.len();
    let this_run = a
        .stop_after_targets
        .map_or(todo, |n| usize::try_from(n).map_or(todo, |n| n.min(todo)));
    for (field, value) in &targets[results.len()..results.len() + this_run] {
        bar.set_message(format!("{field}={value}"));
        let attr = Attribute::new(&classifier, field, value, a.weight)?.reading(match &lm {
            Sampled::Continuous(_) => input,
            Sampled::Masked(_) => GuidanceInput::Masked,
        })?;
        let guided = draw(Some(attr), false)?;
        results.push(TargetResult {
            field: field.clone(),
            value: value.clone(),
            guided_mentioned: share(&guided, |t| attribute_mentioned(t, field, value)),
            guided_expressed: share(&guided, |t| attribute_expressed(t, field, value)),
            unguided_mentioned: share(&unguided, |t| attribute_mentioned(t, field, value)),
            unguided_expressed: share(&unguided, |t| attribute_expressed(t, field, value)),
            samples: guided.clone(),
        });
        all_guided.extend(guided);
        bar.inc(1);
        if let Some(path) = &a.report {
            // Written after every target, so an interrupted run keeps what it measured.
            let partial = serde_json::json!({
                "partial": true,
                "settings": &settings,
                "seconds": earlier_seconds + started.elapsed().as_secs_f64(),
                "unguided": &unguided,
                "results": &results,
            });
            write_atomically(path, &serde_json::to_string_pretty(&partial)?)?;
        }
    }
    bar.finish_and_clear();
    if results.len() < targets.len() {
        status!(
            "stopped after {this_run} targets: {} of {} done; continue with --resume",
            results.len(),
            targets.len()
        );
        return Ok(());
    }
    let mean = |f: &dyn Fn(&TargetResult) -> f64| results.iter().map(f).sum::<f64>() / results.len().max(1) as f64;
    let mut per_field: BTreeMap<String, [f64; 4]> = BTreeMap::new();
    for f in classifier.config().fields.iter().map(|f| &f.name) {
        let rows: Vec<&TargetResult> = results.iter().filter(|r| &r.field == f).collect();
        if rows.is_empty() {
            continue;
        }
        let m = |g: &dyn Fn(&TargetResult) -> f64| rows.iter().map(|r| g(r)).sum::<f64>() / rows.len() as f64;
        per_field.insert(
            f.clone(),
            [
                m(&|r| r.guided_mentioned),
                m(&|r| r.guided_expressed),
                m(&|r| r.unguided_mentioned),
                m(&|r| r.unguided_expressed),
            ],
        );
    }
    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let (guided_ppl, _, _) = ar.perplexity(&ar_tok, &refs(&all_guided), 64, &device)?;
    let (unguided_ppl, _, _) = ar.perplexity(&ar_tok, &refs(&unguided), 64, &device)?;
    let report = AttributeReport {
        targets: results.len(),
        samples_per_target: a.samples,
        steps,
        weight: a.weight,
        guidance: guidance_used,
        self_correct: (a.self_correct, a.self_correct_threshold),
        guided_mentioned: mean(&|r| r.guided_mentioned),
        guided_expressed: mean(&|r| r.guided_expressed),
        unguided_mentioned: mean(&|r| r.unguided_mentioned),
        unguided_expressed: mean(&|r| r.unguided_expressed),
        guided_perplexity: guided_ppl,
        unguided_perplexity: unguided_ppl,
        per_field,
        seconds: earlier_seconds + started.elapsed().as_secs_f64(),
        unguided_samples: unguided,
        results,
    };
    let mut table = vec![
        "| field | targets | guided: value mentioned | guided: field-aware | unguided: mentioned | unguided: field-aware |".to_string(),
        "| --- | --- | --- | --- | --- | --- |".to_string(),
    ];
    for (f, v) in &report.per_field {
        let n = report.results.iter().filter(|r| &r.field == f).count();
        table.push(format!(
            "| {f} | {n} | {:.1}% | {:.1}% | {:.1}% | {:.1}% |",
            v[0] * 100.0,
            v[1] * 100.0,
            v[2] * 100.0,
            v[3] * 100.0
        ));
    }
    table.push(format!(
        "| **all** | {} | **{:.1}%** | **{:.1}%** | {:.1}% | {:.1}% |",
        report.targets,
        report.guided_mentioned * 100.0,
        report.guided_expressed * 100.0,
        report.unguided_mentioned * 100.0,
        report.unguided_expressed * 100.0
    ));
    table.push(format!(
        "perplexity under the reference LM: guided {:.2}, unguided {:.2}; {:.0} s",
        report.guided_perplexity, report.unguided_perplexity, report.seconds
    ));
    // The report first: a closed standard output must not lose hours of evaluation.
    if let Some(path) = &a.report {
        write_atomically(path, &serde_json::to_string_pretty(&report)?)?;
    }
    crate::out(&table.join("\n"))
}

/// Writes `text` to `path` atomically ([`diffusion_lm::train::checkpoint::write_atomic`]), so an
/// interrupted write never leaves a truncated report for `--resume` to find.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    diffusion_lm::train::checkpoint::write_atomic(path, |tmp| {
        std::fs::write(tmp, text).map_err(|e| diffusion_lm::Error::Io {
            path: tmp.to_path_buf(),
            source: e,
        })
    })?;
    Ok(())
}
