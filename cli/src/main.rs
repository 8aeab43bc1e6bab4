//! The `diffusion-lm` command line: train, generate, evaluate.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use diffusion_lm::e2e::E2eOptions;
use diffusion_lm::masked::{masked_trainer, MaskedConfig, MaskedModel, MaskedSampling, Remasking};
use diffusion_lm::nn::device::{ComputeDtype, DeviceSpec};
use diffusion_lm::text::corpus::{self, Example};
use diffusion_lm::train::{diffusion_trainer, TrainConfig};
use diffusion_lm::{DiffusionLm, GenerationConfig, Generator, ModelConfig, SamplerKind, Stack, TextTokenizer};
use diffusion_lm_controllers::{
    Grammar, GrammarConfig, Infill, JsonSchema, JsonSchemaConfig, Layout, Length, Limits, Regex, SyntaxTree,
};

#[macro_use]
mod output;
mod attributes;
#[cfg(test)]
mod fuzz_tests;
mod quality;
mod schemas;
use output::out;
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(
    name = "diffusion-lm",
    version,
    about = "Controllable text generation with diffusion language models (continuous and masked engines)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text with a trained model (the shipped E2E model by default).
    Generate(GenerateArgs),
    /// Train a diffusion LM (and its tokenizer) on a corpus.
    Train(TrainArgs),
    /// Train the autoregressive reference LM used by `eval` for perplexity.
    TrainAr(TrainArArgs),
    /// Evaluate unconditional samples: perplexity, diversity, copy rate.
    Eval(EvalArgs),
    /// Train the attribute classifiers on noisy latents that drive `--attribute` guidance.
    TrainClassifier(attributes::TrainClassifierArgs),
    /// Semantic-content control: success of `--attribute` guidance on every E2E field:value
    /// target against unguided sampling with the same seeds, and fluency.
    EvalAttributes(attributes::EvalAttributesArgs),
    /// Check the JSON Schema controller on real schemas with labelled instances (compile rate,
    /// agreement, compile time, validity of generated documents).
    EvalSchemas(schemas::EvalSchemasArgs),
    /// The quality protocol: sample a fixed task set with one system (`sample`), pool systems
    /// into a blind reading sheet (`blind`), and tabulate proxies and judgments (`score`).
    EvalQuality(quality::EvalQualityArgs),
    /// Write a continuous checkpoint's lexicon (lexicon.txt: the words of the training split of
    /// the corpus its data.json records), which keeps constrained text to words the model has
    /// read, and its phrases (phrases.txt: that split's word 4-grams), which best-of prefers
    /// for free prose; `train` writes both itself.
    Lexicon(LexiconArgs),
}

#[derive(Args)]
struct LexiconArgs {
    /// The checkpoint directory (with its data.json).
    #[arg(long)]
    model: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EngineArg {
    /// Diffusion-LM: embeddings in a continuous space, a denoiser predicting x0.
    Continuous,
    /// Masked diffusion (MDLM, LLaDA): a bidirectional transformer predicting masked tokens.
    Masked,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Jsonl,
}

#[derive(Args)]
struct GenerateArgs {
    /// Checkpoint directory (default: the shipped masked model, models/e2e-masked; the
    /// continuous models/e2e when a flag only the continuous engine takes is given, such as
    /// --attribute, --syntax or --sampler; $DIFFUSION_LM_MODEL, if set, instead of both).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Number of samples.
    #[arg(long, default_value_t = 8)]
    samples: usize,
    /// Generation settings from a JSON file (a `GenerationConfig`: steps, seed, sampler, length,
    /// batch_size, clamp, guidance, soft_projection, retries, rewrite, self_correct, mbr, device,
    /// dtype); every flag given overrides the file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    control: ControlArgs,
    #[command(flatten)]
    masked: MaskedArgs,
    /// How samples are printed.
    #[arg(long, value_enum, default_value_t = Format::Text, help_heading = "Output")]
    format: Format,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Settings of the masked engine (models whose config.json says `"model_type": "masked-lm"`,
/// and pretrained LLaDA / Dream snapshots).
#[derive(Args, Clone, Default)]
#[command(next_help_heading = "Masked engine")]
struct MaskedArgs {
    /// A prompt (pretrained snapshots): context the generation follows, never constrained. With
    /// the snapshot's chat template it is sent as the user's message.
    #[arg(long)]
    prompt: Option<String>,
    /// A system message in front of the prompt (chat templates only).
    #[arg(long, requires = "prompt")]
    system: Option<String>,
    /// Send the prompt as it is, without the chat template.
    #[arg(long, requires = "prompt")]
    raw_prompt: bool,
    /// Classifier-free guidance scale with a prompt (LLaDA's cfg_scale; a second forward pass
    /// per step) [default: 0, off].
    #[arg(long)]
    cfg_scale: Option<f32>,
    /// With --attribute: the power of the classifier's probability in each guided commit,
    /// times the attribute's weight (1: the Bayes update) [default: 6].
    #[arg(long)]
    guidance_scale: Option<f64>,
    /// Temperature of the token scores; 0 commits the best sequence [default: 0.8 on a masked
    /// model trained here, 1 otherwise].
    #[arg(long)]
    temperature: Option<f32>,
    /// Which masked positions each step commits first: low-confidence, random, entropy or
    /// margin [default: entropy on a masked model trained here, low-confidence otherwise].
    #[arg(long)]
    remasking: Option<Remasking>,
    /// Commit block by block, left to right (semi-autoregressive) [default: one block].
    #[arg(long)]
    block_size: Option<usize>,
    /// Keep only the k most probable tokens at each masked position [default: all].
    #[arg(long)]
    top_k: Option<usize>,
    /// Keep only the most probable tokens up to this probability mass (nucleus) [default: all].
    #[arg(long)]
    top_p: Option<f32>,
    /// Parallel decoding (Fast-dLLM): each step also commits every position at least this
    /// confident, and --steps becomes an upper bound; it needs the low-confidence order, which
    /// it brings without --remasking [default: off].
    #[arg(long)]
    confidence_threshold: Option<f32>,
    /// Lookahead under hard constraints: the first N commits each weigh their candidate tokens
    /// by the model's prediction of the rest with that token in place (a forward pass per
    /// candidate) [default: 4 on a masked model trained here, 0 for pretrained snapshots].
    #[arg(long)]
    lookahead: Option<usize>,
    /// Candidate tokens weighed at each lookahead commit [default: 4].
    #[arg(long)]
    lookahead_candidates: Option<usize>,
    /// Draw each text's length from the model before its words, and commit the padding at once
    /// (true or false): texts of the corpus's length instead of the shorter ones low-confidence
    /// commits give [default: false].
    #[arg(long, value_name = "BOOL")]
    length_first: Option<bool>,
    /// Drop a word that repeats the one before it ("located located") after sampling, where the
    /// text without it still satisfies the constraints, true or false [default: true on a masked
    /// model trained here and on the continuous engine, false for pretrained snapshots].
    #[arg(long, value_name = "BOOL")]
    drop_doubled_words: Option<bool>,
    /// Rounds of edits after self-correction: the token least likely from its left is kept,
    /// deleted or given a new token before it, whichever reads best [default: 2 on a masked model
    /// trained here, 0 for pretrained snapshots].
    #[arg(long, value_name = "N")]
    edits: Option<usize>,
}

impl MaskedArgs {
    /// `base` with the settings these flags give.
    fn sampling(&self, base: MaskedSampling, finishing: &FinishingArgs) -> MaskedSampling {
        MaskedSampling {
            self_correct: finishing.self_correct.unwrap_or(base.self_correct),
            self_correct_threshold: finishing
                .self_correct_threshold
                .map_or(base.self_correct_threshold, |t| t as f32),
            temperature: self.temperature.unwrap_or(base.temperature),
            // The threshold's keys are low-confidence confidences: without --remasking, it
            // brings that order with it.
            remasking: self.remasking.unwrap_or(if self.confidence_threshold.is_some() {
                Remasking::LowConfidence
            } else {
                base.remasking
            }),
            block_size: self.block_size.or(base.block_size),
            top_k: self.top_k.or(base.top_k),
            top_p: self.top_p.or(base.top_p),
            cfg_scale: self.cfg_scale.unwrap_or(base.cfg_scale),
            guidance_scale: self.guidance_scale.unwrap_or(base.guidance_scale),
            confidence_threshold: self.confidence_threshold.or(base.confidence_threshold),
            lookahead: self.lookahead.unwrap_or(base.lookahead),
            lookahead_candidates: self.lookahead_candidates.unwrap_or(base.lookahead_candidates),
            length_first: self.length_first.unwrap_or(base.length_first),
            best_of: finishing.best_of.unwrap_or(base.best_of),
            drop_doubled_words: self.drop_doubled_words.unwrap_or(base.drop_doubled_words),
            edits: self.edits.unwrap_or(base.edits),
            ..base
        }
    }

    /// The masked-engine flags given.
    fn given(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.prompt.is_some() {
            out.push("--prompt");
        }
        if self.cfg_scale.is_some() {
            out.push("--cfg-scale");
        }
        if self.guidance_scale.is_some() {
            out.push("--guidance-scale");
        }
        if self.temperature.is_some() {
            out.push("--temperature");
        }
        if self.remasking.is_some() {
            out.push("--remasking");
        }
        if self.block_size.is_some() {
            out.push("--block-size");
        }
        if self.top_k.is_some() {
            out.push("--top-k");
        }
        if self.top_p.is_some() {
            out.push("--top-p");
        }
        if self.confidence_threshold.is_some() {
            out.push("--confidence-threshold");
        }
        if self.lookahead.is_some() {
            out.push("--lookahead");
        }
        if self.lookahead_candidates.is_some() {
            out.push("--lookahead-candidates");
        }
        if self.length_first.is_some() {
            out.push("--length-first");
        }
        if self.edits.is_some() {
            out.push("--edits");
        }
        out
    }
}

/// The reverse process. Defaults are `GenerationConfig`'s, shown in brackets.
#[derive(Args, Clone, Default)]
#[command(next_help_heading = "Sampling")]
struct SamplingArgs {
    /// Reverse diffusion steps, respaced from the model's T (at most T) [default: 200].
    #[arg(long)]
    steps: Option<usize>,
    /// Random seed (a whole number from 0 to 2^64 - 1): the same seed gives the same result
    /// [default: 0].
    #[arg(long, allow_negative_numbers = true, value_parser = crate::parse_seed)]
    seed: Option<u64>,
    /// Sequence length in tokens [default: the model's].
    #[arg(long)]
    seq_len: Option<usize>,
    /// The reverse update: renoise, ddpm, ddim or ddim:ETA [default: renoise].
    #[arg(long)]
    sampler: Option<SamplerKind>,
    /// Sequences denoised together (the output does not depend on it) [default: 64].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Turn off the clamping trick (predicted x0 is used as is until the final rounding).
    #[arg(long)]
    no_clamp: bool,
}

impl SamplingArgs {
    fn apply(&self, cfg: &mut GenerationConfig) {
        if let Some(v) = self.steps {
            cfg.steps = Some(v);
        }
        if let Some(v) = self.seed {
            cfg.seed = v;
        }
        if let Some(v) = self.seq_len {
            cfg.length = Some(v);
        }
        if let Some(v) = self.sampler {
            cfg.sampler = v;
        }
        if let Some(v) = self.batch_size {
            cfg.batch_size = v;
        }
        if self.no_clamp {
            cfg.clamp = false;
        }
    }
}

/// Where the model runs.
#[derive(Args, Clone, Default)]
#[command(next_help_heading = "Device")]
struct DeviceArgs {
    /// `cpu`, `cuda[:N]` or `metal[:N]` [default: cpu].
    #[arg(long)]
    device: Option<DeviceSpec>,
    /// Dtype the denoiser's transformer computes in: f32, bf16 or f16 (embeddings, clamping and
    /// the sampler stay f32); half precision is for GPUs [default: f32].
    #[arg(long)]
    dtype: Option<ComputeDtype>,
    /// Let f32 matrix products on CUDA use TF32 tensor cores.
    #[arg(long)]
    tf32: bool,
}

/// Controllers, combinable; every output satisfies all of the hard constraints.
/// The forms of E2E text (`--form`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Form {
    /// Prose: a capital letter first, `.`, `!` or `?` last, and no JSON punctuation (`{`, `}`,
    /// `"`) or line break in between.
    Sentence,
    /// A record: a JSON object of E2E fields (string values; `familyFriendly` a boolean).
    Record,
    /// Each sample a sentence or a record, drawn with the training corpus's share (one record
    /// per sentence: half each), and written under that form's constraint.
    Mixed,
    /// No form constraint: the model writes what it finds most likely.
    Free,
}

impl Form {
    /// `--form mixed`: each of `n` samples' form, drawn with the corpus's share (half
    /// sentences) from `seed`; sample `i`'s form does not depend on `n`.
    fn mixed_plan(seed: u64, n: usize) -> Vec<Form> {
        use rand::{Rng, SeedableRng};
        // Apart from the samples' own noise streams, which derive from the same seed.
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x6d69_7865_645f_666f);
        (0..n)
            .map(|_| {
                if rng.gen_bool(0.5) {
                    Form::Sentence
                } else {
                    Form::Record
                }
            })
            .collect()
    }

    /// Draws `plan.len()` samples, those of each form together by `run(form, count)`, and
    /// returns them in the plan's order.
    fn interleave<S>(plan: &[Form], mut run: impl FnMut(Form, usize) -> Result<Vec<S>>) -> Result<Vec<S>> {
        let mut drawn = Vec::new();
        for form in [Form::Sentence, Form::Record] {
            let count = plan.iter().filter(|&&f| f == form).count();
            let samples = if count > 0 { run(form, count)? } else { Vec::new() };
            if samples.len() != count {
                bail!("drew {} {form:?} samples, expected {count}", samples.len());
            }
            drawn.push((form, samples.into_iter()));
        }
        Ok(plan
            .iter()
            .filter_map(|f| drawn.iter_mut().find(|(form, _)| form == f)?.1.next())
            .collect())
    }

    /// The regular expression of a sentence.
    const SENTENCE: &'static str = r#"[A-Z][^{}"\n]*[.!?]"#;

    /// The JSON Schema of a record.
    fn record_schema() -> serde_json::Value {
        let mut properties = serde_json::Map::new();
        for (field, key) in diffusion_lm::e2e::E2E_FIELDS {
            let ty = if field == "familyFriendly" { "boolean" } else { "string" };
            properties.insert(key.to_string(), serde_json::json!({ "type": ty, "minLength": 1 }));
        }
        serde_json::json!({
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
            "minProperties": 1
        })
    }
}

#[derive(Args, Clone, Default)]
#[command(next_help_heading = "Hard constraints")]
struct ControlArgs {
    /// The form of the text, for models trained on both, such as the shipped ones: `sentence`
    /// (prose, no JSON), `record` (a JSON object of E2E fields), `mixed` (each sample one or
    /// the other, half each, as in the training corpus) or `free` (no form constraint)
    /// [default: mixed for such a continuous model (models/e2e, which left free writes almost
    /// only records) when nothing else is asked of the text (no hard constraint, attribute or
    /// repair); free otherwise].
    #[arg(long, value_enum)]
    form: Option<Form>,
    /// The text fully matches this regular expression (repeatable: all must match).
    #[arg(long)]
    regex: Vec<String>,
    /// Content length in tokens, `L` or `MIN..MAX` (inclusive).
    #[arg(long)]
    length: Option<String>,
    /// A template with holes, e.g. "The Eagle ___ riverside ___".
    #[arg(long)]
    infill: Vec<String>,
    /// The text is a JSON document valid under this JSON Schema file.
    #[arg(long)]
    schema: Option<PathBuf>,
    /// With --schema: pretty-print the first two nesting levels (2-space indent) instead of compact JSON.
    #[arg(long, requires = "schema")]
    pretty: bool,
    /// The text is a sentence of this GBNF grammar (see grammars/).
    #[arg(long)]
    grammar: Option<PathBuf>,
    /// With --grammar: how deep recursive rules may nest (the automaton's depth bound).
    #[arg(long, requires = "grammar", default_value_t = Limits::default().grammar_depth)]
    grammar_depth: usize,
    /// Steer toward `field=value` with an optional weight, e.g. `food=Italian` or
    /// `area=riverside:2` (repeatable); classifier guidance with MODEL/classifier (on the
    /// masked engine, a classifier of masked text; see --guidance-scale).
    #[arg(long, help_heading = "Soft control")]
    attribute: Vec<String>,
    /// The attribute classifier directory (default: MODEL/classifier).
    #[arg(long, help_heading = "Soft control")]
    classifier: Option<PathBuf>,
    #[command(flatten)]
    guidance: attributes::GuidanceArgs,
    #[command(flatten)]
    finishing: FinishingArgs,
}

/// Repair and the finishing stages.
#[derive(Args, Clone, Default)]
#[command(next_help_heading = "Repair and finishing")]
struct FinishingArgs {
    /// Syntax repair with a tree-sitter grammar, `json` or `python`: tokens inside parse errors
    /// are re-noised during sampling and rewritten afterwards (see --rewrite-rounds).
    #[arg(long)]
    syntax: Option<String>,
    /// With --syntax: a tree-sitter query the output should match, e.g.
    /// '(function_definition name: (identifier) @n (#eq? @n "add"))'.
    #[arg(long, requires = "syntax")]
    syntax_query: Option<String>,
    /// With --syntax: rounds of rewriting after sampling (0 = off) [default: 3].
    #[arg(long, requires = "syntax")]
    rewrite_rounds: Option<usize>,
    /// Self-correction: rounds of rewriting the tokens the model itself disagrees with in
    /// context (0 = off) [default: 2 on models trained here (8 on a continuous model trained
    /// without --clean-context), 0 for pretrained snapshots].
    #[arg(long)]
    self_correct: Option<usize>,
    /// With --self-correct: tokens whose probability under the model is below this share of the
    /// model's own pick at that position are rewritten [default: 0.3 on the continuous engine,
    /// 0.1 on the masked one].
    #[arg(long)]
    self_correct_threshold: Option<f64>,
    /// Draw K candidates per sample and keep the one the model finds most natural (the mean
    /// log-probability of its tokens, each read in context): K times the time, and the outputs
    /// lean toward the model's commonest texts [default: 2 on a masked model trained here, 8 on
    /// a continuous model trained with --clean-context (models/e2e), 1 otherwise].
    #[arg(long, value_name = "K")]
    best_of: Option<usize>,
    /// Minimum Bayes risk decoding: draw this many candidates per output and keep the one that
    /// agrees most with the others (1 = off) [default: 1].
    #[arg(long)]
    mbr: Option<usize>,
    /// Share of the steps (noisiest first) that use the soft projection (forward-backward
    /// marginals) before the exact hard projection takes over [default: 0].
    #[arg(long)]
    soft_until: Option<f64>,
    /// Continuous engine: commit the tokens the denoiser is surest of step by step and give them
    /// to it as clean context, true or false [default: true for a model trained with
    /// --clean-context, false for others].
    #[arg(long, value_name = "BOOL")]
    commit: Option<bool>,
    /// Continuous engine, under hard constraints: keep every word to the model's lexicon (the
    /// words of its training corpus, lexicon.txt in the checkpoint) where the constraints allow
    /// it, true or false [default: true].
    #[arg(long, value_name = "BOOL")]
    lexicon: Option<bool>,
    /// Continuous engine, best of K: prefer a candidate whose prose holds only word 4-grams of
    /// the model's training corpus (phrases.txt in the checkpoint), true or false [default:
    /// true when nothing but --form and --length is asked of the text, false otherwise].
    #[arg(long, value_name = "BOOL")]
    phrases: Option<bool>,
}

impl FinishingArgs {
    fn apply(&self, cfg: &mut GenerationConfig) {
        if let Some(v) = self.rewrite_rounds {
            cfg.rewrite.rounds = v;
        }
        if let Some(v) = self.self_correct {
            cfg.self_correct.rounds = Some(v);
        }
        if let Some(v) = self.self_correct_threshold {
            cfg.self_correct.threshold = v;
        }
        if let Some(v) = self.best_of {
            cfg.best_of = Some(v);
        }
        if let Some(v) = self.mbr {
            cfg.mbr = v;
        }
        if let Some(v) = self.soft_until {
            cfg.soft_projection.fraction = v;
        }
        if self.commit.is_some() {
            cfg.commit = self.commit;
        }
        if self.lexicon.is_some() {
            cfg.lexicon = self.lexicon;
        }
    }
}

impl ControlArgs {
    /// Each of `n` samples' form where the forms are mixed (`--form mixed`, or no `--form` for a
    /// continuous model trained on both forms with nothing else asked of the text); `None`
    /// where one stack serves every sample. Left free, such a continuous model writes records
    /// (its best-of keeps the most natural candidate, and a record's tokens are the more
    /// predictable), while the masked one keeps both forms and varies more than under a form
    /// constraint, so its default stays free.
    fn form_plan(&self, model: &Path, seed: u64, n: usize) -> Option<Vec<Form>> {
        let mixed = match self.form {
            Some(Form::Mixed) => true,
            Some(_) => false,
            None => {
                !self.asks_anything()
                    && trained_on_both_forms(model)
                    && diffusion_lm::masked::engine_of(model)
                        .is_ok_and(|e| e == diffusion_lm::masked::Engine::Continuous)
            }
        };
        mixed.then(|| Form::mixed_plan(seed, n))
    }

    /// This control with the form set to `form` (for one part of a mixed run).
    fn with_form(&self, form: Form) -> ControlArgs {
        ControlArgs {
            form: Some(form),
            ..self.clone()
        }
    }

    /// Whether anything but the form is asked of the text: a hard constraint, an attribute or a
    /// repair.
    fn asks_anything(&self) -> bool {
        self.length.is_some() || self.shapes_words()
    }

    /// Whether something beyond the form and the length is asked of the text: a constraint on
    /// its words (a regex, an infill, a schema, a grammar), an attribute or a repair.
    fn shapes_words(&self) -> bool {
        !self.regex.is_empty()
            || !self.infill.is_empty()
            || self.schema.is_some()
            || self.grammar.is_some()
            || !self.attribute.is_empty()
            || self.finishing.syntax.is_some()
    }

    /// The first flag given that only the continuous engine has, if any.
    fn continuous_only(&self) -> Option<&'static str> {
        let (f, g) = (&self.finishing, &self.guidance);
        [
            (g.guide_on.is_some(), "--guide-on"),
            (g.guidance_steps.is_some(), "--guidance-steps"),
            (g.guidance_step_size.is_some(), "--guidance-step-size"),
            (g.guidance_rule.is_some(), "--guidance-rule"),
            (f.syntax.is_some(), "--syntax"),
            (f.rewrite_rounds.is_some(), "--rewrite-rounds"),
            (f.mbr.is_some(), "--mbr"),
            (f.soft_until.is_some(), "--soft-until"),
            (f.commit.is_some(), "--commit"),
            (f.lexicon.is_some(), "--lexicon"),
            (f.phrases.is_some(), "--phrases"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
    }

    /// What the controllers and finishing stages of `cfg` do, one line each.
    fn describe(&self, cfg: &GenerationConfig) -> Vec<String> {
        let f = &self.finishing;
        let mut out: Vec<String> = self.form.iter().map(|f| format!("form {f:?}").to_lowercase()).collect();
        out.extend(self.regex.iter().map(|r| format!("regex {r:?}")));
        out.extend(self.length.iter().map(|l| format!("length {l}")));
        out.extend(self.infill.iter().map(|t| format!("infill {t:?}")));
        out.extend(self.schema.iter().map(|s| format!("JSON Schema {}", s.display())));
        out.extend(self.grammar.iter().map(|g| format!("grammar {}", g.display())));
        out.extend(f.syntax.iter().map(|l| match &f.syntax_query {
            Some(q) => format!(
                "syntax tree {l} with query {q:?}, {} rewrite rounds",
                cfg.rewrite.rounds
            ),
            None => format!("syntax tree {l}, {} rewrite rounds", cfg.rewrite.rounds),
        }));
        out.extend(self.attribute.iter().map(|a| format!("attribute {a}")));
        if cfg.mbr > 1 {
            out.push(format!("MBR over {} candidates", cfg.mbr));
        }
        if !out.is_empty() && cfg.soft_projection.fraction > 0.0 {
            out.push(format!(
                "soft projection for the first {:.0}% of steps",
                cfg.soft_projection.fraction * 100.0
            ));
        }
        out
    }

    /// The stack these flags build, and their settings written into `cfg`.
    fn stack(&self, cfg: &mut GenerationConfig, model: &Path, device: &candle_core::Device) -> Result<Stack> {
        if let Some(th) = self.finishing.self_correct_threshold {
            if !(th > 0.0 && th <= 1.0) {
                bail!("--self-correct-threshold must be in (0, 1], got {th}");
            }
        }
        self.finishing.apply(cfg);
        // Measured for prose left free, kept to a form or to a length (GenerationConfig::phrases).
        cfg.phrases = self.finishing.phrases.unwrap_or(cfg.phrases || !self.shapes_words());
        cfg.validate()?;
        let mut stack = Stack::new();
        if !self.attribute.is_empty() {
            let masked = diffusion_lm::masked::engine_of(model)? != diffusion_lm::masked::Engine::Continuous;
            let classifier = if masked {
                attributes::load_masked_classifier(model, self.classifier.clone(), device)?
            } else {
                attributes::load_classifier(model, self.classifier.clone(), device)?
            };
            let (mut input, guidance) = self.guidance.resolve(&classifier)?;
            if masked {
                // The masked engine has no latent: its classifiers read the masked text.
                input = diffusion_lm::steer::GuideInput::Masked;
            }
            // One guide for every target: they share the classifier's pass.
            let mut joined: Option<diffusion_lm_controllers::Attribute> = None;
            for spec in &self.attribute {
                let target = diffusion_lm_controllers::Attribute::parse(&classifier, spec)?.reading(input)?;
                joined = Some(match joined {
                    None => target,
                    Some(prev) => prev.and(target)?,
                });
            }
            if let Some(attribute) = joined {
                stack = stack.guide(attribute);
            }
            cfg.guidance = Some(guidance);
        }
        match self.form {
            Some(Form::Sentence) => stack = stack.constrain(Regex::new(Form::SENTENCE)?),
            Some(Form::Record) => stack = stack.constrain(JsonSchema::new(&Form::record_schema())?),
            // Resolved per sample by `form_plan` before a stack is built.
            Some(Form::Mixed) => bail!("--form mixed needs a form per sample (see ControlArgs::form_plan)"),
            Some(Form::Free) | None => {}
        }
        for re in &self.regex {
            stack = stack.constrain(Regex::new(re)?);
        }
        if let Some(spec) = &self.length {
            stack = stack.constrain(parse_length(spec)?);
        }
        for t in &self.infill {
            stack = stack.constrain(Infill::new(t)?);
        }
        if let Some(path) = &self.grammar {
            let config = GrammarConfig {
                limits: Limits {
                    grammar_depth: self.grammar_depth,
                    ..Limits::default()
                },
            };
            stack = stack.constrain(Grammar::from_file_with_config(path, config)?);
        }
        if let Some(language) = &self.finishing.syntax {
            let mut tree = SyntaxTree::by_name(language)?;
            if let Some(query) = &self.finishing.syntax_query {
                tree = tree.with_query(query)?;
            }
            stack = stack.repair(tree);
        }
        if let Some(path) = &self.schema {
            let mut config = JsonSchemaConfig::default();
            if self.pretty {
                config.layout = Layout::Pretty {
                    indent: 2,
                    max_levels: 2,
                };
            }
            let js = JsonSchema::from_file_with_config(path, config)?;
            if !js.is_exact() {
                let places = js.approximations();
                status!(
                    "note: the automaton of {} is not exact in {} place(s); the output check catches \
                     what it lets through, and such samples are redrawn:",
                    path.display(),
                    places.len()
                );
                for p in places.iter().take(5) {
                    status!("  {p}");
                }
                if places.len() > 5 {
                    status!("  ... and {} more", places.len() - 5);
                }
            }
            stack = stack.constrain(js);
        }
        Ok(stack)
    }
}

#[derive(Args, Clone)]
struct CorpusArgs {
    /// Corpus files: E2E CSV (`.csv`), JSON Lines (`.jsonl`, field `text`) or plain text (one example per line).
    #[arg(long, required = true, num_args = 1..)]
    corpus: Vec<PathBuf>,
    /// Do not add E2E meaning representations as JSON records.
    #[arg(long)]
    no_json_records: bool,
    /// Fraction of examples held out for evaluation (split by a hash of the text).
    #[arg(long, default_value_t = 0.05)]
    heldout: f64,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    corpus: CorpusArgs,
    /// Output checkpoint directory; if it holds a training state, training resumes from it.
    /// Otherwise it must be new or empty (see --overwrite).
    #[arg(long)]
    out: PathBuf,
    /// Start afresh in --out even though it holds a model or a training state: the previous run's
    /// files (and checkpoints trained for it in subdirectories, such as ar/) are removed first.
    #[arg(long)]
    overwrite: bool,
    /// Which engine to train: `continuous` (Diffusion-LM) or `masked` (masked diffusion, as
    /// LLaDA); --embed-dim and --diffusion-steps apply to the continuous engine only.
    #[arg(long, value_enum, default_value_t = EngineArg::Continuous)]
    engine: EngineArg,
    /// Use this tokenizer.json instead of training a tokenizer on the corpus (e.g.
    /// models/e2e/tokenizer.json, so two models share one vocabulary).
    #[arg(long, value_name = "FILE")]
    tokenizer: Option<PathBuf>,
    /// Vocabulary size of the BPE tokenizer trained on the corpus (PAD included).
    #[arg(long, default_value_t = 2048)]
    vocab_size: usize,
    /// Sequence length in tokens (longer examples are skipped).
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    /// Dimension d of the word embeddings (the diffusion space).
    #[arg(long, default_value_t = 16)]
    embed_dim: usize,
    /// Width of the transformer.
    #[arg(long, default_value_t = 128)]
    hidden: usize,
    /// Number of transformer layers.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Attention heads per layer (must divide --hidden).
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Width of each feed-forward block.
    #[arg(long, default_value_t = 512)]
    ffn_hidden: usize,
    /// Dropout in training.
    #[arg(long, default_value_t = 0.1)]
    dropout: f32,
    /// Number of diffusion steps T of the noise schedule.
    #[arg(long, default_value_t = 2000)]
    diffusion_steps: usize,
    /// Continuous engine: how the denoiser predicts x0, `direct` (Diffusion-LM: an MLP to the
    /// embedding, squared error) or `softmax` (logits over the vocabulary whose expected embedding
    /// is the prediction, trained with their cross-entropy too).
    #[arg(long, default_value = "direct", value_parser = clap::value_parser!(diffusion_lm::engine::X0Head))]
    x0_head: diffusion_lm::engine::X0Head,
    /// Continuous engine: start from the weights of these checkpoints instead of random ones
    /// (each must share the tokenizer; a later one overrides an earlier). A continuous checkpoint gives every tensor of the same
    /// name and shape (its word embeddings, say); a masked one gives its transformer blocks,
    /// final norm and positions, and its output embeddings and bias as the softmax head.
    #[arg(long, num_args = 1.., value_name = "DIR")]
    init_from: Vec<PathBuf>,
    /// Continuous engine: leave the word embeddings and the rounding head as they start (from
    /// --init-from), so the model shares the embedding space, and the attribute classifiers, of
    /// the checkpoint they come from. Give it again when resuming.
    #[arg(long)]
    freeze_embeddings: bool,
    /// Continuous engine: give most training sequences a random share of their tokens clean (at
    /// time 0) beside the noisy rest, so the model reads tokens the sampler commits as context
    /// and sampling commits them progressively, most confident first (`--commit`).
    #[arg(long)]
    clean_context: bool,
    #[command(flatten)]
    opt: OptArgs,
    /// `cpu`, `cuda[:N]` or `metal[:N]`.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Print log lines instead of a progress bar (always so when stderr is not a terminal).
    #[arg(long)]
    no_progress: bool,
}

#[derive(Args)]
struct OptArgs {
    /// Training steps.
    #[arg(long, default_value_t = 10_000)]
    steps: usize,
    /// Examples per training step.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Peak learning rate (AdamW; linear warm-up, then linear decay to 0).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Warm-up steps of the learning rate.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Decay of the exponential moving average of the weights (what the checkpoint stores).
    #[arg(long, default_value_t = 0.999)]
    ema_decay: f64,
    /// Clip the global gradient norm (0 disables).
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    /// Random seed (a whole number from 0 to 2^64 - 1): the same seed gives the same result.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = crate::parse_seed)]
    seed: u64,
    /// Write a checkpoint and the training state every this many steps.
    #[arg(long, default_value_t = 1000)]
    checkpoint_every: usize,
    /// Record (and, without a progress bar, print) the losses every this many steps.
    #[arg(long, default_value_t = 50)]
    log_every: usize,
}

impl OptArgs {
    fn config(&self) -> TrainConfig {
        TrainConfig {
            steps: self.steps,
            batch_size: self.batch_size,
            lr: self.lr,
            warmup_steps: self.warmup,
            weight_decay: self.weight_decay,
            ema_decay: self.ema_decay,
            grad_clip: (self.grad_clip > 0.0).then_some(self.grad_clip),
            seed: self.seed,
            checkpoint_every: self.checkpoint_every,
            log_every: self.log_every,
        }
    }
}

/// Options of the auxiliary models trained for a diffusion checkpoint (the reference LM, the
/// attribute classifier): a small transformer and its optimisation.
#[derive(Args)]
struct AuxTrainArgs {
    /// The diffusion checkpoint it belongs to (its tokenizer and its corpus record, data.json).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output directory (default: a subdirectory of MODEL); a training state there is resumed;
    /// a directory holding anything else is refused unless --overwrite.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Start afresh in the output directory, removing a previous run's files first.
    #[arg(long)]
    overwrite: bool,
    /// Width of the transformer.
    #[arg(long, default_value_t = 128)]
    hidden: usize,
    /// Number of transformer layers.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Attention heads per layer (must divide --hidden).
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Dropout in training.
    #[arg(long, default_value_t = 0.1)]
    dropout: f32,
    #[command(flatten)]
    opt: OptArgs,
    /// `cpu`, `cuda[:N]` or `metal[:N]`.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Print log lines instead of a progress bar (always so when stderr is not a terminal).
    #[arg(long)]
    no_progress: bool,
}

#[derive(Args)]
struct TrainArArgs {
    #[command(flatten)]
    aux: AuxTrainArgs,
}

#[derive(Args)]
struct EvalArgs {
    /// Checkpoint directory (default: the shipped model, or $DIFFUSION_LM_MODEL).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The autoregressive reference LM (default: MODEL/ar).
    #[arg(long)]
    ar_model: Option<PathBuf>,
    /// Number of samples to draw and evaluate.
    #[arg(long, default_value_t = 256)]
    samples: usize,
    /// Reverse diffusion steps, respaced from the model's T.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Random seed (a whole number from 0 to 2^64 - 1): the same seed gives the same result.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = crate::parse_seed)]
    seed: u64,
    /// renoise, ddpm, ddim or ddim:ETA.
    #[arg(long, default_value = "renoise")]
    sampler: SamplerKind,
    /// Sequences denoised together (the output does not depend on it).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Write the samples to this file, one per line.
    #[arg(long)]
    samples_out: Option<PathBuf>,
    #[command(flatten)]
    control: ControlArgs,
    #[command(flatten)]
    masked_args: MaskedArgs,
    /// `cpu`, `cuda[:N]` or `metal[:N]`.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
}

/// Which data a checkpoint was trained on, so `eval` and `train-ar` can rebuild the same split.
#[derive(Serialize, Deserialize)]
struct DataRecord {
    corpus: Vec<PathBuf>,
    json_records: bool,
    heldout: f64,
}

const DATA_FILE: &str = "data.json";

/// Whether the model in `dir` was trained on sentences and JSON records alike (its `data.json`
/// says so; a pretrained snapshot has none).
fn trained_on_both_forms(dir: &Path) -> bool {
    diffusion_lm::train::checkpoint::read_json::<DataRecord>(&dir.join(DATA_FILE)).is_ok_and(|r| r.json_records)
}

fn load_examples(args: &CorpusArgs) -> Result<(Vec<Example>, Vec<Example>)> {
    load_split(&args.corpus, !args.no_json_records, args.heldout)
}

fn load_split(paths: &[PathBuf], json_records: bool, heldout: f64) -> Result<(Vec<Example>, Vec<Example>)> {
    if !(0.0..1.0).contains(&heldout) {
        bail!("--heldout must be in [0, 1), got {heldout}");
    }
    let opts = E2eOptions {
        sentences: true,
        json_records,
    };
    let mut all = Vec::new();
    for p in paths {
        all.extend(corpus::read_corpus(p, opts)?);
    }
    Ok(corpus::split_holdout(all, heldout))
}

fn main() {
    diffusion_lm::tune_runtime();
    if let Err(e) = run() {
        if output::is_closed_pipe(&e) {
            // The reader took what it wanted (`| head`): a normal end.
            return;
        }
        status!("error: {}", error_message(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, each cause once: library errors already write their
/// cause into their message (`path: No such file or directory`), and `{:#}` would repeat it.
fn error_message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn run() -> Result<()> {
    match Cli::parse().command {
        Command::Generate(a) => generate(a),
        Command::Train(a) => train(a),
        Command::TrainClassifier(a) => attributes::train_classifier(a),
        Command::EvalAttributes(a) => attributes::eval_attributes(a),
        Command::TrainAr(a) => train_ar(a),
        Command::Eval(a) => eval(a),
        Command::EvalSchemas(a) => schemas::run(a),
        Command::EvalQuality(a) => quality::run(a),
        Command::Lexicon(a) => write_lexicon(&a.model),
    }
}

fn model_dir(arg: Option<PathBuf>) -> PathBuf {
    arg.unwrap_or_else(DiffusionLm::default_dir)
}

/// `generate`'s model: `--model`, else `$DIFFUSION_LM_MODEL`, else the shipped masked model,
/// whose text reads better (`docs/results.md`), unless a flag asks for the continuous engine.
fn generate_model_dir(a: &GenerateArgs) -> PathBuf {
    match &a.model {
        Some(dir) => dir.clone(),
        None if std::env::var_os("DIFFUSION_LM_MODEL").is_some() || a.continuous_only(false).is_some() => {
            DiffusionLm::default_dir()
        }
        None => diffusion_lm::masked::MaskedLm::default_dir(),
    }
}

impl GenerateArgs {
    /// The first flag given that only the continuous engine takes, if any (`--dtype` other than
    /// f32 too, unless the model is a pretrained snapshot).
    fn continuous_only(&self, pretrained: bool) -> Option<&'static str> {
        [
            (self.config.is_some(), "--config"),
            (self.sampling.sampler.is_some(), "--sampler"),
            (self.sampling.no_clamp, "--no-clamp"),
            (
                !pretrained && self.device.dtype.is_some_and(|d| d != ComputeDtype::F32),
                "--dtype",
            ),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
        .or_else(|| self.control.continuous_only())
    }
}

fn generate(a: GenerateArgs) -> Result<()> {
    let dir = generate_model_dir(&a);
    match diffusion_lm::masked::engine_of(&dir)? {
        diffusion_lm::masked::Engine::Masked | diffusion_lm::masked::Engine::Pretrained => {
            return generate_masked(a, &dir)
        }
        diffusion_lm::masked::Engine::Continuous => {}
    }
    if let Some(flag) = a.masked.given().first() {
        bail!(
            "{flag} applies to the masked engine; {} holds a continuous model",
            dir.display()
        );
    }
    let mut cfg = match &a.config {
        Some(path) => GenerationConfig::from_file(path)?,
        None => GenerationConfig::default(),
    };
    a.sampling.apply(&mut cfg);
    if let Some(on) = a.masked.drop_doubled_words {
        cfg.drop_doubled_words = on;
    }
    if let Some(d) = a.device.device {
        cfg.device = d;
    }
    if let Some(d) = a.device.dtype {
        cfg.dtype = d;
    }
    diffusion_lm::nn::device::set_tf32(a.device.tf32);
    let lm = DiffusionLm::load_for(&dir, &cfg)?;
    let mut redraws = Redraws::default();
    if let Some(plan) = a.control.form_plan(&dir, cfg.seed, a.samples) {
        let samples = Form::interleave(&plan, |form, n| {
            let mut cfg = cfg.clone();
            let stack = a.control.with_form(form).stack(&mut cfg, &dir, lm.device())?;
            Ok(Generator::with_config(&lm, cfg)
                .stack(stack)
                .progress(true)
                .generate(n)?)
        })?;
        redraws.write(samples, a.format)?;
    } else {
        let stack = a.control.stack(&mut cfg, &dir, lm.device())?;
        Generator::with_config(&lm, cfg)
            .stack(stack)
            .progress(true)
            .generate_each(a.samples, |batch| redraws.write(batch, a.format))?;
    }
    redraws.report();
    Ok(())
}

/// Samples drawn again after failing the output check (what an automaton over-approximates).
#[derive(Default)]
struct Redraws {
    samples: usize,
    total: usize,
}

impl Redraws {
    fn add(&mut self, s: &diffusion_lm::Sample) {
        self.samples += usize::from(s.redraws > 0);
        self.total += s.redraws;
    }

    /// Writes a batch to standard output in `format`, counting its redraws.
    fn write(&mut self, batch: Vec<diffusion_lm::Sample>, format: Format) -> Result<()> {
        for s in batch {
            self.add(&s);
            match format {
                Format::Text => out(&s.text)?,
                Format::Jsonl => out(&serde_json::json!({ "text": s.text }).to_string())?,
            }
        }
        Ok(())
    }

    fn report(&self) {
        if self.total > 0 {
            status!(
                "{} sample(s) were drawn again after failing the output check or coming out empty ({} redraws in all)",
                self.samples,
                self.total
            );
        }
    }
}

/// `generate` with a masked-diffusion model (trained here or a pretrained snapshot): the hard
/// constraints only, exactly.
fn generate_masked(a: GenerateArgs, dir: &Path) -> Result<()> {
    let c = &a.control;
    let pretrained = diffusion_lm::masked::engine_of(dir)? == diffusion_lm::masked::Engine::Pretrained;
    if let Some(flag) = a.continuous_only(pretrained) {
        bail!(
            "{flag} applies to the continuous engine; {} holds a masked model",
            dir.display()
        );
    }
    if !pretrained {
        if let Some(flag) = [
            (a.masked.prompt.is_some(), "--prompt"),
            (a.masked.cfg_scale.is_some(), "--cfg-scale"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
        {
            bail!(
                "{flag} applies to pretrained snapshots (LLaDA, Dream); {} holds a masked model trained without prompts",
                dir.display()
            );
        }
    }
    let device = a.device.device.unwrap_or_default().open()?;
    diffusion_lm::nn::device::set_tf32(a.device.tf32);
    let (lm, prompt): (Box<dyn MaskedModel>, Vec<u32>) = if pretrained {
        let dtype = a.device.dtype.unwrap_or_default().dtype();
        status!("loading {} ({dtype:?})", dir.display());
        let lm = diffusion_lm::pretrained::PretrainedLm::load(dir, &device, dtype)?;
        let prompt = match &a.masked.prompt {
            None => Vec::new(),
            Some(text) if a.masked.raw_prompt => lm.tokenizer().encode(text)?,
            Some(text) => lm.prompt(text, a.masked.system.as_deref())?,
        };
        (Box::new(lm), prompt)
    } else {
        (
            Box::new(diffusion_lm::masked::MaskedLm::load(dir, &device)?),
            Vec::new(),
        )
    };
    // Pretrained models default to their reference sampler's settings (LLaDA's: 128 tokens in
    // 128 steps, blocks of 32, greedy).
    let defaults = if pretrained {
        diffusion_lm::pretrained::PretrainedLm::reference_sampling()
    } else {
        diffusion_lm::masked::MaskedLm::recommended_sampling()
    };
    let cfg = a.masked.sampling(
        MaskedSampling {
            steps: a.sampling.steps.unwrap_or(defaults.steps),
            seed: a.sampling.seed.unwrap_or(defaults.seed),
            length: a.sampling.seq_len.or(defaults.length),
            batch_size: a.sampling.batch_size.unwrap_or(defaults.batch_size),
            ..defaults
        },
        &c.finishing,
    );
    // Only hard constraints are given (checked above): the generation settings are unused.
    let build = |control: &ControlArgs| -> Result<_> {
        let stack = control.stack(&mut GenerationConfig::default(), dir, &device)?;
        Ok(
            diffusion_lm::masked::MaskedGenerator::with_config(lm.as_ref(), cfg.clone())
                .stack(stack)
                .prompt(prompt.clone())
                .progress(true),
        )
    };
    let mut redraws = Redraws::default();
    let mut passes = 0;
    if let Some(plan) = c.form_plan(dir, cfg.seed, a.samples) {
        let samples = Form::interleave(&plan, |form, n| {
            let generator = build(&c.with_form(form))?;
            let samples = generator.generate(n)?;
            passes += generator.forward_passes();
            Ok(samples)
        })?;
        redraws.write(samples, a.format)?;
    } else {
        let generator = build(c)?;
        generator.generate_each(a.samples, |batch| redraws.write(batch, a.format))?;
        passes = generator.forward_passes();
    }
    if a.masked.confidence_threshold.is_some() {
        status!("{passes} forward passes");
    }
    redraws.report();
    Ok(())
}

/// A seed: a whole number in `0..=u64::MAX` (clap would take `-1` for a flag and say only
/// "unexpected argument").
fn parse_seed(s: &str) -> Result<u64> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| anyhow::anyhow!("a seed is a whole number from 0 to {}, got {s:?}", u64::MAX))
}

/// `L` or `MIN..MAX` / `MIN..=MAX` (inclusive).
fn parse_length(spec: &str) -> Result<Length> {
    let num = |s: &str| {
        s.trim()
            .parse::<usize>()
            .with_context(|| format!("--length {spec:?}: {s:?} is not a number"))
    };
    match spec.split_once("..") {
        None => Ok(Length::exact(num(spec)?)),
        Some((lo, hi)) => Ok(Length::between(num(lo)?, num(hi.trim_start_matches('='))?)?),
    }
}

fn train(a: TrainArgs) -> Result<()> {
    let device = a.device.open()?;
    let (train_ex, heldout_ex) = load_examples(&a.corpus)?;
    let texts: Vec<&str> = train_ex.iter().map(|e| e.text.as_str()).collect();
    status!(
        "corpus: {} training examples, {} held out",
        train_ex.len(),
        heldout_ex.len()
    );
    check_output(&a.out, a.overwrite)?;
    let resuming = !a.overwrite && a.out.join(diffusion_lm::train::STATE_FILE).exists();
    let tokenizer = |vocab_size: usize, pad_id: u32| -> Result<TextTokenizer> {
        if resuming {
            status!(
                "resuming from {} (model settings come from its config.json)",
                a.out.display()
            );
            return Ok(diffusion_lm::train::checkpoint::load_tokenizer(
                &a.out, vocab_size, pad_id,
            )?);
        }
        let tok = match &a.tokenizer {
            Some(path) => TextTokenizer::load(path)?,
            None => TextTokenizer::train(texts.iter().copied(), a.vocab_size)?,
        };
        status!("tokenizer: {} tokens", tok.vocab_size());
        Ok(tok)
    };
    match a.engine {
        EngineArg::Continuous => {
            let (cfg, tok) = if resuming {
                let cfg: ModelConfig = diffusion_lm::train::checkpoint::load_config(&a.out)?;
                let tok = tokenizer(cfg.vocab_size, cfg.pad_id)?;
                (cfg, tok)
            } else {
                let tok = tokenizer(0, 0)?;
                let cfg = ModelConfig {
                    vocab_size: tok.vocab_size(),
                    pad_id: tok.pad_id(),
                    seq_len: a.seq_len,
                    embed_dim: a.embed_dim,
                    hidden: a.hidden,
                    layers: a.layers,
                    heads: a.heads,
                    ffn_hidden: a.ffn_hidden,
                    dropout: a.dropout,
                    diffusion_steps: a.diffusion_steps,
                    schedule: diffusion_lm::engine::ScheduleKind::Sqrt,
                    x0_head: a.x0_head,
                    clean_context: a.clean_context,
                };
                cfg.validate()?;
                (cfg, tok)
            };
            // Only now, with the new run's settings checked, does --overwrite remove the old run.
            clear_output(&a.out, a.overwrite)?;
            // The trainer locks --out, refuses one that holds a run's files but no state to
            // resume, and commits its starting state; the corpus record is written only once it
            // has.
            let mut trainer = diffusion_trainer(cfg.clone(), tok, &texts, a.opt.config(), &a.out, &device)?;
            if a.freeze_embeddings {
                trainer.objective.freeze_embeddings();
            }
            if !a.init_from.is_empty() && trainer.step_count() == 0 {
                // Copies: a variable cannot be set from a tensor of its own value.
                let fresh = trainer
                    .raw_weights()?
                    .into_iter()
                    .map(|(k, t)| Ok((k, t.copy()?)))
                    .collect::<Result<_>>()?;
                let weights = warm_start(&cfg, fresh, &a.init_from, &a.out, &device)?;
                trainer.init_from(&weights)?;
            }
            // What `GenerationConfig::lexicon` keeps constrained text to.
            let lexicon = diffusion_lm::text::lexicon::Lexicon::from_texts(texts.iter().copied());
            lexicon.save(a.out.join(diffusion_lm::text::lexicon::LEXICON_FILE))?;
            // What `GenerationConfig::phrases` prefers.
            let phrases = diffusion_lm::text::phrases::Phrases::from_texts(texts.iter().copied());
            phrases.save(a.out.join(diffusion_lm::text::phrases::PHRASES_FILE))?;
            run_training(trainer, &a)
        }
        EngineArg::Masked => {
            let (cfg, tok) = if resuming {
                let cfg: MaskedConfig = diffusion_lm::train::checkpoint::load_config(&a.out)?;
                let tok = tokenizer(cfg.vocab_size, cfg.pad_id)?;
                (cfg, tok)
            } else {
                let tok = tokenizer(0, 0)?;
                let cfg = MaskedConfig {
                    model_type: diffusion_lm::masked::model::MODEL_TYPE.into(),
                    vocab_size: tok.vocab_size(),
                    pad_id: tok.pad_id(),
                    seq_len: a.seq_len,
                    hidden: a.hidden,
                    layers: a.layers,
                    heads: a.heads,
                    ffn_hidden: a.ffn_hidden,
                    dropout: a.dropout,
                };
                cfg.validate()?;
                (cfg, tok)
            };
            clear_output(&a.out, a.overwrite)?;
            let trainer = masked_trainer(cfg, tok, &texts, a.opt.config(), &a.out, &device)?;
            run_training(trainer, &a)
        }
    }
}

/// The starting weights of a continuous run from `sources` (see `--init-from`): `fresh` (the
/// seed's initialisation) with every tensor a source provides replaced, each source reported.
fn warm_start(
    cfg: &ModelConfig,
    mut fresh: std::collections::HashMap<String, candle_core::Tensor>,
    sources: &[PathBuf],
    out: &Path,
    device: &candle_core::Device,
) -> Result<std::collections::HashMap<String, candle_core::Tensor>> {
    use diffusion_lm::train::checkpoint;
    let tokenizer = std::fs::read(out.join(checkpoint::TOKENIZER_FILE))
        .with_context(|| format!("reading the new run's tokenizer in {}", out.display()))?;
    for dir in sources {
        let theirs = std::fs::read(dir.join(checkpoint::TOKENIZER_FILE))
            .with_context(|| format!("--init-from {}: reading its tokenizer.json", dir.display()))?;
        if theirs != tokenizer {
            bail!(
                "--init-from {}: its tokenizer differs from the run's (train with --tokenizer {}/tokenizer.json)",
                dir.display(),
                dir.display()
            );
        }
        let config: serde_json::Value = checkpoint::read_json(&dir.join(checkpoint::CONFIG_FILE))?;
        let masked = config.get("model_type").and_then(|v| v.as_str()) == Some(diffusion_lm::masked::model::MODEL_TYPE);
        let tensors = checkpoint::load_tensors(dir, checkpoint::WEIGHTS_FILE, device)?;
        let (mut taken, mut skipped) = (Vec::new(), Vec::new());
        for (name, t) in &tensors {
            let (target, t) = match (masked, name.as_str()) {
                (true, "token_embedding.weight") => (
                    "x0_head.weight".to_string(),
                    t.narrow(0, 0, cfg.vocab_size.min(t.dim(0)?))?,
                ),
                (true, "lm_head.bias") => ("x0_head.bias".to_string(), t.clone()),
                (true, n)
                    if !(n.starts_with("blocks.")
                        || n.starts_with("final_norm.")
                        || n == "position_embedding.weight") =>
                {
                    continue
                }
                _ => (name.clone(), t.clone()),
            };
            match fresh.get_mut(&target) {
                Some(slot) if slot.dims() == t.dims() => {
                    *slot = t;
                    taken.push(target);
                }
                Some(_) => skipped.push(name.clone()),
                None => {}
            }
        }
        if taken.is_empty() {
            bail!("--init-from {}: none of its tensors fits the new model", dir.display());
        }
        // Named by their first component: "blocks (48), final_norm (2), ...".
        let mut groups = std::collections::BTreeMap::<&str, usize>::new();
        for name in &taken {
            *groups.entry(name.split('.').next().unwrap_or(name)).or_default() += 1;
        }
        let groups: Vec<String> = groups.iter().map(|(g, n)| format!("{g} ({n})")).collect();
        status!(
            "starting {} tensors from {}: {}",
            taken.len(),
            dir.display(),
            groups.join(", ")
        );
        if !skipped.is_empty() {
            status!("  (not {} of its tensors, of other shapes)", skipped.len());
        }
    }
    Ok(fresh)
}

/// Records the corpus next to a started run and trains it to the end.
fn run_training<O: diffusion_lm::train::Objective>(
    mut trainer: diffusion_lm::train::Trainer<O>,
    a: &TrainArgs,
) -> Result<()> {
    let record = DataRecord {
        // As given (relative to where `train` ran, usually the repository root), so the record
        // stays valid in other clones.
        corpus: a.corpus.corpus.clone(),
        json_records: !a.corpus.no_json_records,
        heldout: a.corpus.heldout,
    };
    diffusion_lm::train::checkpoint::write_json(&a.out.join(DATA_FILE), &record)?;
    let dropped = trainer.state().dropped_examples;
    if dropped > 0 {
        status!("note: {dropped} examples longer than the sequence length were left out");
    }
    report(&trainer.run(!a.no_progress)?, &a.out);
    Ok(())
}

/// Writes `dir`'s lexicon from the training split of the corpus its data.json records (what
/// `train` writes for a continuous model).
fn write_lexicon(dir: &Path) -> Result<()> {
    if diffusion_lm::masked::engine_of(dir)? != diffusion_lm::masked::Engine::Continuous {
        bail!(
            "{} holds a masked model; the lexicon is read by the continuous engine only",
            dir.display()
        );
    }
    let record = read_data_record(dir)?;
    let (train, _) = load_split(&record.corpus, record.json_records, record.heldout)?;
    let lexicon = diffusion_lm::text::lexicon::Lexicon::from_texts(train.iter().map(|e| e.text.as_str()));
    let path = dir.join(diffusion_lm::text::lexicon::LEXICON_FILE);
    lexicon.save(&path)?;
    status!("{}: {} words", path.display(), lexicon.len());
    let phrases = diffusion_lm::text::phrases::Phrases::from_texts(train.iter().map(|e| e.text.as_str()));
    let path = dir.join(diffusion_lm::text::phrases::PHRASES_FILE);
    phrases.save(&path)?;
    status!("{}: {} word 4-grams", path.display(), phrases.len());
    Ok(())
}

/// Checks the output directory of a training command before any work: a directory another
/// run holds is refused at once; without `--overwrite`, so is one that holds anything but a
/// training state to resume (or leftovers of an interrupted start).
fn check_output(dir: &Path, overwrite: bool) -> Result<()> {
    if dir.is_file() {
        bail!("--out {} is a file, not a directory", dir.display());
    }
    if !dir.exists() {
        return Ok(());
    }
    // Held only while looking: the trainer takes its own lock.
    let _lock = diffusion_lm::train::checkpoint::DirLock::acquire(dir)?;
    let contents = diffusion_lm::train::inspect_output(dir)?;
    if overwrite || contents.resumable {
        return Ok(());
    }
    let mut held = contents.run_entries;
    held.extend(contents.others);
    if held.is_empty() {
        return Ok(());
    }
    held.sort();
    let more = held.len().saturating_sub(5);
    held.truncate(5);
    bail!(
        "{} holds {}{} but no training state to resume; a new run will not write there unless you \
         pass --overwrite (which removes a previous run's files: its model, state, plot, records \
         and the checkpoints trained for it in ar/ and classifier*/) or choose a new directory",
        dir.display(),
        held.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )
}

/// `--overwrite`: removes a previous run's files from `dir`, naming each.
fn clear_output(dir: &Path, overwrite: bool) -> Result<()> {
    if overwrite {
        for path in diffusion_lm::train::clear_output_dir(dir)? {
            status!("--overwrite: removed {}", path.display());
        }
    }
    Ok(())
}

fn report(summary: &diffusion_lm::train::TrainSummary, out: &Path) {
    status!(
        "trained {} steps ({:.0}s of training in all, {:.0} tokens/s); final loss {:.4}; checkpoint in {}",
        summary.steps,
        summary.elapsed_secs,
        summary.tokens_per_sec,
        summary.final_losses.first().copied().unwrap_or(f64::NAN),
        out.display()
    );
}

/// Reads a checkpoint's corpus record. Its paths are used as written: relative ones (the shipped
/// models' `data/e2e/...`) are relative to the current directory, which for them must be the
/// repository root; a missing file is an error that says so.
fn read_data_record(dir: &Path) -> Result<DataRecord> {
    let path = dir.join(DATA_FILE);
    let record: DataRecord = diffusion_lm::train::checkpoint::read_json(&path)
        .with_context(|| format!("{} records which corpus the model was trained on", path.display()))?;
    for p in record.corpus.iter().filter(|p| !p.exists()) {
        let hint = if p.is_relative() {
            let cwd = std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default();
            format!(
                ": relative corpus paths are resolved against the current directory ({cwd}); run \
                 from the repository root, or edit {} to point at the corpus",
                path.display()
            )
        } else {
            format!("; edit {} to point at the corpus", path.display())
        };
        bail!(
            "corpus file {} (listed in {}) does not exist{hint}",
            p.display(),
            path.display()
        );
    }
    Ok(record)
}

fn train_ar(TrainArArgs { aux: a }: TrainArArgs) -> Result<()> {
    use diffusion_lm::scoring::ar::{ar_trainer, ArConfig};
    let device = a.device.open()?;
    let dir = model_dir(a.model);
    let record = read_data_record(&dir)?;
    let cfg: ModelConfig = diffusion_lm::train::checkpoint::load_config(&dir)?;
    let tokenizer = diffusion_lm::train::checkpoint::load_tokenizer(&dir, cfg.vocab_size, cfg.pad_id)?;
    let (train_ex, _) = load_split(&record.corpus, record.json_records, record.heldout)?;
    let texts: Vec<&str> = train_ex.iter().map(|e| e.text.as_str()).collect();
    let out = a.out.unwrap_or_else(|| dir.join("ar"));
    check_output(&out, a.overwrite)?;
    let ar_cfg = ArConfig {
        model_type: "causal-lm".into(),
        vocab_size: cfg.vocab_size,
        pad_id: cfg.pad_id,
        seq_len: cfg.seq_len,
        hidden: a.hidden,
        layers: a.layers,
        heads: a.heads,
        ffn_hidden: 4 * a.hidden,
        dropout: a.dropout,
    };
    ar_cfg.validate()?;
    status!("reference LM: {} training texts from {:?}", texts.len(), record.corpus);
    clear_output(&out, a.overwrite)?;
    let mut trainer = ar_trainer(ar_cfg, tokenizer, &texts, a.opt.config(), &out, &device)?;
    report(&trainer.run(!a.no_progress)?, &out);
    Ok(())
}

/// Samples drawn by [`draw`], with what produced them.
struct Drawn {
    samples: Vec<diffusion_lm::Sample>,
    /// Parameters of the model.
    parameters: usize,
    /// The controls of the run, one line each (as `eval` reports them).
    controls: Vec<String>,
    /// Whether each sample passes the controls' independent check, run again on the output.
    valid: Vec<bool>,
    /// Wall-clock seconds of the sampling.
    seconds: f64,
}

/// `n` samples from the checkpoint in `dir` under `control`, with the engine its config names:
/// the continuous engine with `cfg` (steps, seed, sampler, batch size), or the masked engine with
/// the same steps, seed and batch size and the `masked` flags.
fn draw(
    dir: &Path,
    control: &ControlArgs,
    masked_args: &MaskedArgs,
    mut cfg: GenerationConfig,
    n: usize,
    device: &candle_core::Device,
) -> Result<Drawn> {
    let masked = diffusion_lm::masked::engine_of(dir)? == diffusion_lm::masked::Engine::Masked;
    if masked {
        if let Some(flag) = control.continuous_only() {
            bail!(
                "{flag} applies to the continuous engine; {} holds a masked model",
                dir.display()
            );
        }
    } else if let Some(flag) = masked_args.given().first() {
        bail!(
            "{flag} applies to the masked engine; {} holds a continuous model",
            dir.display()
        );
    }
    if let Some(plan) = control.form_plan(dir, cfg.seed, n) {
        return draw_mixed(dir, control, masked_args, cfg, &plan, device);
    }
    let stack = control.stack(&mut cfg, dir, device)?;
    // The same controls again, for the output check (a stack moves into its generator).
    let checker = control.stack(&mut cfg.clone(), dir, device)?;
    let mut controls = control.describe(&cfg);
    let started = std::time::Instant::now();
    let (samples, parameters, tokenizer) = if masked {
        let lm = diffusion_lm::masked::MaskedLm::load(dir, device)?;
        let sampling = masked_args.sampling(
            MaskedSampling {
                steps: cfg.steps.unwrap_or(MaskedSampling::default().steps),
                seed: cfg.seed,
                batch_size: cfg.batch_size,
                ..diffusion_lm::masked::MaskedLm::recommended_sampling()
            },
            &control.finishing,
        );
        if sampling.self_correct > 0 {
            controls.push(format!(
                "self-correction: {} rounds below p = {}",
                sampling.self_correct, sampling.self_correct_threshold
            ));
        }
        if sampling.best_of > 1 {
            controls.push(format!("best of {} by the model's own reading", sampling.best_of));
        }
        if sampling.drop_doubled_words {
            controls.push("doubled words dropped".into());
        }
        if sampling.edits > 0 {
            controls.push(format!("{} rounds of edits", sampling.edits));
        }
        let generator = diffusion_lm::masked::MaskedGenerator::with_config(&lm, sampling).stack(stack);
        let samples = generator.generate(n)?;
        status!(
            "{} forward passes of batch {} ({:.1} per batch)",
            generator.forward_passes(),
            cfg.batch_size,
            generator.forward_passes() as f64 / n.div_ceil(cfg.batch_size.max(1)) as f64
        );
        (samples, lm.parameter_count(), lm.tokenizer().clone())
    } else {
        let lm = DiffusionLm::load(dir, device)?;
        if let Some(on) = masked_args.drop_doubled_words {
            cfg.drop_doubled_words = on;
        }
        let rounds = cfg.self_correct_rounds_for(&lm.config);
        if rounds > 0 {
            controls.push(format!(
                "self-correction: {rounds} rounds below p = {}",
                cfg.self_correct.threshold
            ));
        }
        let best_of = cfg.best_of_for(&lm.config);
        if best_of > 1 {
            controls.push(format!("best of {best_of} by the model's own reading"));
        }
        if cfg.commit_for(&lm.config) {
            controls.push(if lm.config.clean_context {
                "tokens committed progressively, read as clean context".into()
            } else {
                "tokens committed progressively".into()
            });
        }
        if cfg.drop_doubled_words {
            controls.push("doubled words dropped".into());
        }
        // Only hard constraints consult the lexicon.
        let constrained = !stack.constraints().is_empty();
        if let (Some(lex), true) = (lm.lexicon(), constrained && cfg.lexicon.unwrap_or(true)) {
            controls.push(format!(
                "words kept to the model's lexicon ({} words) where cheap",
                lex.len()
            ));
        }
        if let (Some(p), true) = (lm.phrases(), cfg.phrases && cfg.best_of_for(&lm.config) > 1) {
            controls.push(format!(
                "best-of prefers the corpus's phrases ({} word 4-grams)",
                p.len()
            ));
        }
        let samples = Generator::with_config(&lm, cfg)
            .stack(stack)
            .progress(true)
            .generate(n)?;
        let parameters = lm.weights().values().map(|t| t.elem_count()).sum();
        (samples, parameters, lm.tokenizer.clone())
    };
    let seconds = started.elapsed().as_secs_f64();
    let valid = samples
        .iter()
        .map(|s| checker.check(&s.ids, &tokenizer).is_ok())
        .collect();
    Ok(Drawn {
        samples,
        parameters,
        controls,
        valid,
        seconds,
    })
}

/// [`draw`] under `--form mixed`: the sentences of `plan` under `--form sentence`, its records
/// under `--form record`, returned in the plan's order.
fn draw_mixed(
    dir: &Path,
    control: &ControlArgs,
    masked_args: &MaskedArgs,
    cfg: GenerationConfig,
    plan: &[Form],
    device: &candle_core::Device,
) -> Result<Drawn> {
    let count = |form| plan.iter().filter(|&&f| f == form).count();
    let mut controls = vec![format!(
        "form mixed: {} sentences, {} records",
        count(Form::Sentence),
        count(Form::Record)
    )];
    let (mut parameters, mut seconds) = (0, 0.0);
    let drawn = Form::interleave(plan, |form, n| {
        let part = draw(dir, &control.with_form(form), masked_args, cfg.clone(), n, device)?;
        for line in part.controls {
            if !controls.contains(&line) {
                controls.push(line);
            }
        }
        parameters = part.parameters;
        seconds += part.seconds;
        Ok(part.samples.into_iter().zip(part.valid).collect())
    })?;
    let (samples, valid) = drawn.into_iter().unzip();
    Ok(Drawn {
        samples,
        parameters,
        controls,
        valid,
        seconds,
    })
}

fn eval(a: EvalArgs) -> Result<()> {
    use diffusion_lm::scoring::eval::{copy_rate, distinct_n, json_stats, EvalReport};
    use std::collections::HashSet;
    let device = a.device.open()?;
    let dir = model_dir(a.model.clone());
    let ar_dir = a.ar_model.clone().unwrap_or_else(|| dir.join("ar"));
    let (ar, ar_tok) = diffusion_lm::scoring::ar::CausalLm::load(&ar_dir, &device).with_context(|| {
        format!(
            "loading the reference LM (train it with `diffusion-lm train-ar --model {}`)",
            dir.display()
        )
    })?;
    let model_tok = diffusion_lm::train::checkpoint::load_tokenizer(&dir, ar_tok.vocab_size(), ar_tok.pad_id())
        .with_context(|| {
            format!(
                "the reference LM in {} uses a different tokenizer than the model",
                ar_dir.display()
            )
        })?;
    let pad = model_tok.pad_id();
    let record = read_data_record(&dir)?;
    let (train_ex, heldout_ex) = load_split(&record.corpus, record.json_records, record.heldout)?;
    let training: HashSet<String> = train_ex.iter().map(|e| e.text.trim().to_string()).collect();
    let heldout: Vec<&str> = heldout_ex.iter().map(|e| e.text.as_str()).collect();
    if heldout.is_empty() {
        bail!("the model was trained without held-out data (--heldout 0); nothing to compare against");
    }
    let cfg = GenerationConfig {
        steps: Some(a.steps),
        seed: a.seed,
        sampler: a.sampler,
        batch_size: a.batch_size,
        ..GenerationConfig::default()
    };
    let Drawn {
        samples,
        parameters,
        controls,
        seconds: seconds_sampling,
        ..
    } = draw(&dir, &a.control, &a.masked_args, cfg, a.samples, &device)?;
    let texts: Vec<&str> = samples.iter().map(|s| s.text.as_str()).collect();
    if let Some(path) = &a.samples_out {
        std::fs::write(path, texts.join("\n") + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    let nonempty: Vec<&str> = texts.iter().copied().filter(|t| !t.trim().is_empty()).collect();
    let (sample_ppl, _, _) = ar.perplexity(&ar_tok, &texts, 64, &device)?;
    let (heldout_ppl, heldout_n, _) = ar.perplexity(&ar_tok, &heldout, 64, &device)?;
    let (json_share, json_valid) = json_stats(&texts);
    let mean_tokens = samples
        .iter()
        .map(|s| s.ids.iter().position(|&t| t == pad).unwrap_or(s.ids.len()) as f64)
        .sum::<f64>()
        / samples.len().max(1) as f64;
    let report = EvalReport {
        controls,
        parameters,
        mean_tokens,
        samples: texts.len(),
        steps: a.steps,
        sample_perplexity: sample_ppl,
        heldout_perplexity: heldout_ppl,
        perplexity_ratio: sample_ppl / heldout_ppl,
        heldout_texts: heldout_n,
        distinct_2: distinct_n(&texts, 2),
        heldout_distinct_2: distinct_n(&heldout[..heldout.len().min(texts.len())], 2),
        copy_rate: copy_rate(&texts, &training),
        json_share,
        json_valid,
        empty_samples: texts.len() - nonempty.len(),
        seconds_sampling,
    };
    out(&serde_json::to_string_pretty(&report)?)
}

#[cfg(test)]
mod form_tests {
    use super::Form;

    #[test]
    fn a_mixed_plan_draws_both_forms_and_keeps_each_samples_form_as_it_grows() {
        let plan = Form::mixed_plan(3, 400);
        let sentences = plan.iter().filter(|&&f| f == Form::Sentence).count();
        assert!((160..=240).contains(&sentences), "{sentences} of 400 sentences");
        assert!(plan.iter().all(|f| matches!(f, Form::Sentence | Form::Record)));
        assert_eq!(Form::mixed_plan(3, 10), plan[..10]);
        assert_ne!(Form::mixed_plan(4, 40), plan[..40], "the seed draws the plan");
    }

    #[test]
    fn interleave_returns_each_forms_samples_in_the_plans_order() {
        use Form::{Record as R, Sentence as S};
        let plan = [R, S, S, R, S];
        let mut calls = Vec::new();
        let out = Form::interleave(&plan, |form, n| {
            calls.push((form, n));
            Ok((0..n).map(|i| format!("{form:?}{i}")).collect())
        })
        .unwrap();
        assert_eq!(out, ["Record0", "Sentence0", "Sentence1", "Record1", "Sentence2"]);
        assert_eq!(calls, [(S, 3), (R, 2)]);
        // A form the plan lacks is not drawn; a part of the wrong size is an error.
        assert_eq!(Form::interleave(&[R], |_, n| Ok(vec![0; n])).unwrap(), [0]);
        let err = Form::interleave(&plan, |_, n| Ok(vec![0; n + 1])).unwrap_err();
        assert!(err.to_string().contains("expected 3"), "{err}");
    }
}
