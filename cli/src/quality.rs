//! `eval-quality`: the quality protocol. A fixed set of tasks (unconstrained, a free sentence,
//! two sentence templates, two infills, a length range, the restaurant schema, two attribute targets) is
//! sampled with one system (a model and its settings); every sample is written with its task and
//! its automatic proxies. `blind` pools the sentence outputs of several systems into one shuffled
//! reading sheet with the systems hidden; `score` joins the readers' judgments with the samples
//! into the table.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use diffusion_lm::nn::device::DeviceSpec;
use diffusion_lm::scoring::quality::{json_leak, record_in_value_sets, repeated_word, restaurant_name, ValueSets};
use diffusion_lm::{GenerationConfig, SamplerKind};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::{draw, load_split, model_dir, read_data_record, ControlArgs, Drawn, FinishingArgs, Form, MaskedArgs};

/// The sentence template of issue 21 (and of `scripts/compare-engines.sh`).
const TEMPLATE: &str = r"[A-Z][A-Za-z ]+ is a (pub|restaurant|coffee shop)[a-z ,]* near [A-Z][A-Za-z ]+\.";
/// The short template: one word per name.
const TEMPLATE_SHORT: &str = r"[A-Z][a-z]+ is a (pub|restaurant) near [A-Z][a-z]+\.";
/// The restaurant schema (`examples/schemas/restaurant.json`), built in so the protocol runs
/// from any directory.
const RESTAURANT_SCHEMA: &str = include_str!("../../examples/schemas/restaurant.json");

/// What a reader judges in a task's outputs.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Kind {
    /// Free text: sentences are read, JSON records are checked against the value sets.
    Free,
    /// A sentence is asked for: read it; JSON punctuation in it is a leak.
    Sentence,
    /// A JSON record is asked for: its values are checked against the value sets.
    Record,
}

/// One task of the fixed set.
struct Task {
    name: &'static str,
    kind: Kind,
    /// What the reader is told the output should be.
    intent: &'static str,
    regex: Option<&'static str>,
    infill: Option<&'static str>,
    length: Option<&'static str>,
    schema: bool,
    attribute: Option<&'static str>,
    form: Option<Form>,
}

const fn task(name: &'static str, kind: Kind, intent: &'static str) -> Task {
    Task {
        name,
        kind,
        intent,
        regex: None,
        infill: None,
        length: None,
        schema: false,
        attribute: None,
        form: None,
    }
}

/// The task set (issue 21's protocol).
fn tasks() -> Vec<Task> {
    vec![
        task("unconstrained", Kind::Free, "any text about a restaurant"),
        Task {
            form: Some(Form::Sentence),
            ..task(
                "sentence",
                Kind::Sentence,
                "a sentence about a restaurant (`--form sentence`)",
            )
        },
        Task {
            regex: Some(TEMPLATE),
            ..task(
                "template",
                Kind::Sentence,
                "a sentence of the form `NAME is a pub/restaurant/coffee shop ... near LANDMARK.`",
            )
        },
        Task {
            regex: Some(TEMPLATE_SHORT),
            ..task(
                "template-short",
                Kind::Sentence,
                "a sentence of the form `Name is a pub/restaurant near Landmark.` with one-word names",
            )
        },
        Task {
            infill: Some("The Eagle is a ___ near ___."),
            ..task(
                "infill-eagle",
                Kind::Sentence,
                "`The Eagle is a ___ near ___.` with the holes filled: a kind of venue and what it is near",
            )
        },
        Task {
            infill: Some("___ is a family friendly ___ near The Bakers."),
            ..task(
                "infill-bakers",
                Kind::Sentence,
                "`___ is a family friendly ___ near The Bakers.` with the holes filled: a name and a kind of venue",
            )
        },
        Task {
            length: Some("8..12"),
            ..task("length", Kind::Free, "any text about a restaurant, 8 to 12 tokens")
        },
        Task {
            schema: true,
            ..task("schema", Kind::Record, "a JSON restaurant record")
        },
        Task {
            attribute: Some("food=Italian"),
            ..task(
                "attribute-food",
                Kind::Free,
                "a text about a restaurant serving Italian food",
            )
        },
        Task {
            attribute: Some("area=riverside"),
            ..task(
                "attribute-area",
                Kind::Free,
                "a text about a restaurant in the riverside area",
            )
        },
    ]
}

#[derive(Args)]
pub struct EvalQualityArgs {
    #[command(subcommand)]
    command: QualityCommand,
}

#[derive(Subcommand)]
enum QualityCommand {
    /// Draw samples for every task with one system and write them, with their proxies, to
    /// OUT/samples.jsonl and OUT/summary.json.
    Sample(SampleArgs),
    /// Pool the sentence outputs of several systems' sample directories into one reading sheet,
    /// shuffled and with the systems hidden, and its key.
    Blind(BlindArgs),
    /// The table: each system's proxies per task, with the readers' judgments of the sheet.
    Score(ScoreArgs),
}

#[derive(Args)]
struct SampleArgs {
    /// Checkpoint directory (default: the shipped model, or $DIFFUSION_LM_MODEL).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The reference LM for perplexity (default: MODEL/ar, else the shipped model's).
    #[arg(long)]
    ar_model: Option<PathBuf>,
    /// Output directory: samples.jsonl and summary.json are written there.
    #[arg(long)]
    out: PathBuf,
    /// The system's name in the table (default: the model directory's name).
    #[arg(long)]
    name: Option<String>,
    /// Samples per task.
    #[arg(long, default_value_t = 32)]
    samples: usize,
    /// Only these tasks (comma-separated) [default: all of unconstrained, sentence, template,
    /// template-short, infill-eagle, infill-bakers, length, schema, attribute-food,
    /// attribute-area].
    #[arg(long, value_delimiter = ',')]
    tasks: Vec<String>,
    /// Denoising steps [default: 200 for the continuous engine, 64 for the masked one].
    #[arg(long)]
    steps: Option<usize>,
    /// Random seed: the same seed gives the same samples.
    #[arg(long, default_value_t = 1, value_parser = crate::parse_seed)]
    seed: u64,
    /// Sequences denoised together (the output does not depend on it).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Continuous engine: the reverse update, ddpm, ddim, ddim:ETA or renoise [default: the
    /// generator's].
    #[arg(long)]
    sampler: Option<SamplerKind>,
    #[command(flatten)]
    masked: MaskedArgs,
    #[command(flatten)]
    finishing: FinishingArgs,
    /// `cpu`, `cuda[:N]` or `metal[:N]`.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
}

#[derive(Args)]
struct BlindArgs {
    /// Sample directories written by `eval-quality sample`.
    #[arg(required = true)]
    systems: Vec<PathBuf>,
    /// The reading sheet to write (JSON Lines: id, task intent, text).
    #[arg(long)]
    sheet: PathBuf,
    /// The key to write (JSON: sheet id → system, task, sample index).
    #[arg(long)]
    key: PathBuf,
    /// Only these tasks (comma-separated) [default: every task whose outputs are read].
    #[arg(long, value_delimiter = ',')]
    tasks: Vec<String>,
    /// Seed of the shuffle.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also split the sheet among this many readers: SHEET.readerI.jsonl gets every N-th line.
    #[arg(long, default_value_t = 1)]
    readers: usize,
    /// With --readers: each reader also reads this many lines of the next reader's part, so
    /// that `score` can report how often two readers agree.
    #[arg(long, default_value_t = 0, requires = "readers")]
    overlap: usize,
}

#[derive(Args)]
struct ScoreArgs {
    /// Sample directories written by `eval-quality sample`.
    #[arg(required = true)]
    systems: Vec<PathBuf>,
    /// The key written by `eval-quality blind`.
    #[arg(long, requires = "judgments")]
    key: Option<PathBuf>,
    /// The readers' judgments of the sheet: JSON Lines with `id`, `grammatical` and `faithful`
    /// (booleans), one file or one per reader. A line two readers judged counts as grammatical
    /// (faithful) only if both say so; their agreement is reported.
    #[arg(long, requires = "key", num_args = 1..)]
    judgments: Vec<PathBuf>,
}

/// One sample and its proxies (a line of samples.jsonl).
#[derive(Serialize, Deserialize)]
struct SampleLine {
    system: String,
    task: String,
    kind: Kind,
    index: usize,
    text: String,
    /// Passes the task's constraints, checked again on the output.
    valid: bool,
    /// A JSON record (or an attempt at one: the text opens with a brace).
    json: bool,
    /// A sentence task's output holds JSON punctuation.
    leak: bool,
    /// A word is written twice in a row.
    repeat: bool,
    /// For a JSON record: it parses, every field is an E2E field and every value is in its
    /// field's value set.
    in_value_sets: Option<bool>,
    /// For an attribute task: the text expresses the target.
    attribute: Option<bool>,
}

/// One task's figures for one system (summary.json).
#[derive(Serialize, Deserialize, Clone)]
struct TaskSummary {
    task: String,
    samples: usize,
    valid: usize,
    json: usize,
    /// Outputs meant as sentences (every output of a sentence task; the non-records of a free one).
    sentences: usize,
    leaks: usize,
    repeats: usize,
    records: usize,
    records_in_value_sets: usize,
    attribute_hits: Option<usize>,
    /// Distinct outputs among the samples (absent in summaries written before it was counted).
    #[serde(default)]
    distinct: Option<usize>,
    /// Different restaurants the outputs are about ([`restaurant_name`]; absent in summaries
    /// written before it was counted).
    #[serde(default)]
    names: Option<usize>,
    /// Share of the outputs naming a restaurant that name the commonest one (the corpus's
    /// commonest, The Wrestlers, is 10.6% of its rows): a sampler that collapses onto one
    /// restaurant shows here.
    #[serde(default)]
    top_name_share: Option<f64>,
    /// Mean words per output meant as a sentence (the E2E references average 23), which shows
    /// how far the sampler shortens texts; absent in summaries written before it was counted.
    #[serde(default)]
    words: Option<f64>,
    /// Perplexity of the outputs under the reference LM.
    perplexity: f64,
    seconds_per_sample: f64,
    /// The controls, one line each.
    controls: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Summary {
    system: String,
    model: PathBuf,
    /// The command's settings, as given.
    settings: String,
    seed: u64,
    tasks: Vec<TaskSummary>,
    /// Tasks this system's engine cannot run, with the reason.
    skipped: BTreeMap<String, String>,
}

/// A line of the reading sheet.
#[derive(Serialize, Deserialize)]
struct SheetLine {
    id: usize,
    intent: String,
    text: String,
}

#[derive(Serialize, Deserialize)]
struct KeyEntry {
    system: String,
    task: String,
    index: usize,
}

#[derive(Deserialize)]
struct Judgment {
    id: usize,
    grammatical: bool,
    faithful: bool,
}

pub fn run(a: EvalQualityArgs) -> Result<()> {
    match a.command {
        QualityCommand::Sample(a) => sample(a),
        QualityCommand::Blind(a) => blind(a),
        QualityCommand::Score(a) => score(a),
    }
}

fn sample(a: SampleArgs) -> Result<()> {
    let device = a.device.open()?;
    let dir = model_dir(a.model.clone());
    let engine = diffusion_lm::masked::engine_of(&dir)?;
    if engine == diffusion_lm::masked::Engine::Pretrained {
        bail!(
            "{} is a pretrained snapshot; the quality protocol's tasks are about E2E restaurants (use an E2E model)",
            dir.display()
        );
    }
    let masked = engine == diffusion_lm::masked::Engine::Masked;
    if a.samples == 0 {
        bail!("--samples must be at least 1");
    }
    let all = tasks();
    for t in &a.tasks {
        if !all.iter().any(|k| k.name == t) {
            let names: Vec<&str> = all.iter().map(|k| k.name).collect();
            bail!("--tasks: unknown task {t:?} (tasks: {})", names.join(", "));
        }
    }
    let chosen: Vec<&Task> = all
        .iter()
        .filter(|t| a.tasks.is_empty() || a.tasks.iter().any(|n| n == t.name))
        .collect();
    let ar_dir = match &a.ar_model {
        Some(d) => d.clone(),
        None if dir.join("ar").is_dir() => dir.join("ar"),
        None => diffusion_lm::DiffusionLm::default_dir().join("ar"),
    };
    let (ar, ar_tok) = diffusion_lm::scoring::ar::CausalLm::load(&ar_dir, &device)
        .with_context(|| format!("loading the reference LM {}", ar_dir.display()))?;
    let record = read_data_record(&dir)?;
    let (train_ex, _) = load_split(&record.corpus, record.json_records, record.heldout)?;
    let sets = ValueSets::new(&diffusion_lm::e2e::e2e_fields(&train_ex));
    let names = sets.names();
    let system = a.name.clone().unwrap_or_else(|| {
        dir.file_name()
            .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned())
    });
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let schema_path = a.out.join("restaurant.schema.json");
    std::fs::write(&schema_path, RESTAURANT_SCHEMA).with_context(|| format!("writing {}", schema_path.display()))?;
    let samples_path = a.out.join("samples.jsonl");
    let mut lines =
        std::fs::File::create(&samples_path).with_context(|| format!("creating {}", samples_path.display()))?;
    let steps = a.steps.unwrap_or(if masked { 64 } else { 200 });
    let mut summaries = Vec::new();
    let skipped = BTreeMap::new();
    for t in chosen {
        let control = ControlArgs {
            regex: t.regex.iter().map(|r| r.to_string()).collect(),
            infill: t.infill.iter().map(|r| r.to_string()).collect(),
            length: t.length.map(str::to_string),
            schema: t.schema.then(|| schema_path.clone()),
            attribute: t.attribute.iter().map(|r| r.to_string()).collect(),
            form: t.form,
            finishing: a.finishing.clone(),
            ..ControlArgs::default()
        };
        let cfg = GenerationConfig {
            steps: Some(steps),
            seed: a.seed,
            sampler: a.sampler.unwrap_or_default(),
            batch_size: a.batch_size,
            ..GenerationConfig::default()
        };
        status!("{system}: {} ({} samples)", t.name, a.samples);
        let Drawn {
            samples,
            controls,
            valid,
            seconds,
            ..
        } = draw(&dir, &control, &a.masked, cfg, a.samples, &device)?;
        let texts: Vec<&str> = samples.iter().map(|s| s.text.as_str()).collect();
        let (perplexity, _, _) = ar.perplexity(&ar_tok, &texts, 64, &device)?;
        let mut sum = TaskSummary {
            task: t.name.to_string(),
            samples: samples.len(),
            valid: 0,
            json: 0,
            sentences: 0,
            leaks: 0,
            repeats: 0,
            records: 0,
            records_in_value_sets: 0,
            attribute_hits: t.attribute.map(|_| 0),
            distinct: Some(texts.iter().collect::<std::collections::BTreeSet<_>>().len()),
            names: None,
            top_name_share: None,
            words: None,
            perplexity,
            seconds_per_sample: seconds / samples.len().max(1) as f64,
            controls,
        };
        let mut sentence_words = 0usize;
        for (index, (s, ok)) in samples.iter().zip(valid).enumerate() {
            // A text that opens a brace is a record attempt: one that does not parse is a
            // record outside the value sets, not a sentence.
            let record = s.text.trim_start().starts_with('{');
            let in_sets = record.then(|| record_in_value_sets(&s.text, &sets).unwrap_or(false));
            let meant_as_sentence = match t.kind {
                Kind::Sentence => true,
                Kind::Free => !record,
                Kind::Record => false,
            };
            let attribute = t.attribute.and_then(|spec| {
                let (field, value) = spec.split_once('=')?;
                Some(diffusion_lm::e2e::attribute_expressed(&s.text, field, value))
            });
            let line = SampleLine {
                system: system.clone(),
                task: t.name.to_string(),
                kind: t.kind,
                index,
                text: s.text.clone(),
                valid: ok,
                json: record,
                leak: meant_as_sentence && json_leak(&s.text),
                repeat: repeated_word(&s.text),
                in_value_sets: in_sets,
                attribute,
            };
            sum.valid += usize::from(line.valid);
            sum.json += usize::from(line.json);
            sum.sentences += usize::from(meant_as_sentence);
            if meant_as_sentence {
                sentence_words += s.text.split_whitespace().count();
            }
            sum.leaks += usize::from(line.leak);
            sum.repeats += usize::from(line.repeat);
            sum.records += usize::from(in_sets.is_some());
            sum.records_in_value_sets += usize::from(in_sets == Some(true));
            if let (Some(hits), Some(true)) = (sum.attribute_hits.as_mut(), attribute) {
                *hits += 1;
            }
            writeln!(lines, "{}", serde_json::to_string(&line)?)?;
        }
        sum.words = (sum.sentences > 0).then(|| sentence_words as f64 / sum.sentences as f64);
        let mut named: BTreeMap<&str, usize> = BTreeMap::new();
        for text in &texts {
            if let Some(name) = restaurant_name(text, &names) {
                *named.entry(name).or_default() += 1;
            }
        }
        let total: usize = named.values().sum();
        sum.names = Some(named.len());
        sum.top_name_share = named.values().max().map(|&top| top as f64 / total as f64);
        status!(
            "  valid {}/{}, perplexity {:.2}, {:.2} s/sample",
            sum.valid,
            sum.samples,
            sum.perplexity,
            sum.seconds_per_sample
        );
        summaries.push(sum);
    }
    let summary = Summary {
        system,
        model: dir.clone(),
        settings: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        seed: a.seed,
        tasks: summaries,
        skipped,
    };
    let path = a.out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    status!("wrote {} and {}", samples_path.display(), path.display());
    Ok(())
}

/// Reads a system's samples.jsonl and summary.json.
fn read_system(dir: &Path) -> Result<(Summary, Vec<SampleLine>)> {
    let path = dir.join("summary.json");
    let summary: Summary = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (run `eval-quality sample` first)", path.display()))?,
    )
    .with_context(|| format!("{}: not an eval-quality summary", path.display()))?;
    let path = dir.join("samples.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}: not a sample line", path.display(), i + 1))
        })
        .collect::<Result<Vec<SampleLine>>>()?;
    Ok((summary, lines))
}

/// Whether a reader judges this output: sentences of every task (a JSON record is checked by the
/// value sets instead).
fn is_read(line: &SampleLine) -> bool {
    line.kind != Kind::Record && !line.json && !line.text.trim().is_empty()
}

fn blind(a: BlindArgs) -> Result<()> {
    let intents: BTreeMap<&str, &str> = tasks().iter().map(|t| (t.name, t.intent)).collect();
    let mut pool = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for dir in &a.systems {
        let (summary, lines) = read_system(dir)?;
        if !names.insert(summary.system.clone()) {
            bail!(
                "two sample directories are both named {:?} (give `eval-quality sample --name`)",
                summary.system
            );
        }
        pool.extend(
            lines
                .into_iter()
                .filter(|l| is_read(l) && (a.tasks.is_empty() || a.tasks.contains(&l.task))),
        );
    }
    if pool.is_empty() {
        bail!("no sentence outputs to read in these directories");
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    pool.shuffle(&mut rng);
    let mut sheet = String::new();
    let mut key = BTreeMap::new();
    for (id, l) in pool.into_iter().enumerate() {
        let intent = intents.get(l.task.as_str()).copied().unwrap_or("any text");
        sheet.push_str(&serde_json::to_string(&SheetLine {
            id,
            intent: intent.to_string(),
            text: l.text,
        })?);
        sheet.push('\n');
        key.insert(
            id,
            KeyEntry {
                system: l.system,
                task: l.task,
                index: l.index,
            },
        );
    }
    if a.readers == 0 {
        bail!("--readers must be at least 1");
    }
    if a.readers > 1 {
        let lines: Vec<&str> = sheet.lines().collect();
        let parts: Vec<Vec<&str>> = (0..a.readers)
            .map(|r| lines.iter().skip(r).step_by(a.readers).copied().collect())
            .collect();
        for (r, part) in parts.iter().enumerate() {
            let next = &parts[(r + 1) % a.readers];
            let body: String = part
                .iter()
                .chain(next.iter().take(a.overlap))
                .map(|l| format!("{l}\n"))
                .collect();
            let path = a.sheet.with_extension(format!("reader{r}.jsonl"));
            std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
        }
        status!(
            "split among {} readers: {}",
            a.readers,
            a.sheet.with_extension("readerN.jsonl").display()
        );
    }
    std::fs::write(&a.sheet, sheet).with_context(|| format!("writing {}", a.sheet.display()))?;
    std::fs::write(&a.key, serde_json::to_string_pretty(&key)? + "\n")
        .with_context(|| format!("writing {}", a.key.display()))?;
    status!(
        "{} outputs in {} (judge each: grammatical, faithful); key in {}",
        key.len(),
        a.sheet.display(),
        a.key.display()
    );
    Ok(())
}

/// Reader counts of one (system, task): judged, grammatical, faithful, both.
#[derive(Default, Clone, Copy)]
struct Reading {
    judged: usize,
    grammatical: usize,
    faithful: usize,
    both: usize,
}

fn score(a: ScoreArgs) -> Result<()> {
    crate::output::out(table(&a)?.trim_end())
}

/// The table `score` prints (Markdown, one row per system and task).
fn table(a: &ScoreArgs) -> Result<String> {
    let mut text = String::new();
    let mut readings: BTreeMap<(String, String), Reading> = BTreeMap::new();
    if let Some(key_path) = &a.key {
        let key: BTreeMap<usize, KeyEntry> = serde_json::from_str(
            &std::fs::read_to_string(key_path).with_context(|| format!("reading {}", key_path.display()))?,
        )
        .with_context(|| format!("{}: not an eval-quality key", key_path.display()))?;
        // Every reader's judgments of each id.
        let mut judged: BTreeMap<usize, Vec<Judgment>> = BTreeMap::new();
        for path in &a.judgments {
            let body = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            // Each file is one reader: an id twice in it is a mistake, not a second reading.
            let mut seen = std::collections::BTreeSet::new();
            for (i, l) in body.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let j: Judgment = serde_json::from_str(l).with_context(|| {
                    format!(
                        "{}:{}: expected {{\"id\": N, \"grammatical\": BOOL, \"faithful\": BOOL}}",
                        path.display(),
                        i + 1
                    )
                })?;
                if !key.contains_key(&j.id) {
                    bail!("{}:{}: id {} is not in the key", path.display(), i + 1, j.id);
                }
                if !seen.insert(j.id) {
                    bail!("{}:{}: id {} is judged twice in this file", path.display(), i + 1, j.id);
                }
                judged.entry(j.id).or_default().push(j);
            }
        }
        let (mut twice, mut agree_g, mut agree_f) = (0, 0, 0);
        for (id, js) in &judged {
            let entry = &key[id];
            let grammatical = js.iter().all(|j| j.grammatical);
            let faithful = js.iter().all(|j| j.faithful);
            if js.len() > 1 {
                twice += 1;
                agree_g += usize::from(js.iter().all(|j| j.grammatical == js[0].grammatical));
                agree_f += usize::from(js.iter().all(|j| j.faithful == js[0].faithful));
            }
            let r = readings.entry((entry.system.clone(), entry.task.clone())).or_default();
            r.judged += 1;
            r.grammatical += usize::from(grammatical);
            r.faithful += usize::from(faithful);
            r.both += usize::from(grammatical && faithful);
        }
        text.push_str(&format!(
            "<!-- {} of {} sheet lines judged; {twice} read twice: readers agree on grammatical {agree_g}, on faithful {agree_f} -->\n",
            judged.len(),
            key.len()
        ));
    }
    let mut rows = Vec::new();
    for dir in &a.systems {
        let (summary, lines) = read_system(dir)?;
        for t in &summary.tasks {
            let read = lines.iter().filter(|l| l.task == t.task && is_read(l)).count();
            rows.push((summary.system.clone(), t.clone(), read));
        }
        for (task, why) in &summary.skipped {
            text.push_str(&format!("<!-- {}: {task} not run: {why} -->\n", summary.system));
        }
    }
    let frac = |k: usize, n: usize| if n == 0 { "–".to_string() } else { format!("{k}/{n}") };
    text.push_str(
        "| task | system | valid | sentences read | grammatical | faithful | both | JSON leaks | repeated words | records in value sets | attribute | distinct | names (top share) | words | perplexity | s/sample |\n",
    );
    text.push_str(
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let order: Vec<&str> = tasks().iter().map(|t| t.name).collect();
    rows.sort_by_key(|(system, t, _)| (order.iter().position(|n| *n == t.task), system.clone()));
    for (system, t, read) in rows {
        let r = readings.get(&(system.clone(), t.task.clone())).copied();
        let (g, f, b) = match r {
            Some(r) => (
                frac(r.grammatical, r.judged),
                frac(r.faithful, r.judged),
                frac(r.both, r.judged),
            ),
            None => ("–".into(), "–".into(), "–".into()),
        };
        text.push_str(&format!(
            "| {} | {} | {} | {} | {g} | {f} | {b} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} |\n",
            t.task,
            system,
            frac(t.valid, t.samples),
            read,
            frac(t.leaks, t.sentences),
            frac(t.repeats, t.samples),
            frac(t.records_in_value_sets, t.records),
            t.attribute_hits.map_or("–".into(), |h| frac(h, t.samples)),
            t.distinct.map_or("–".into(), |d| d.to_string()),
            match (t.names, t.top_name_share) {
                (Some(n), Some(share)) => format!("{n} ({:.0}%)", 100.0 * share),
                (Some(n), None) => n.to_string(),
                _ => "–".into(),
            },
            t.words.map_or("–".into(), |w| format!("{w:.1}")),
            t.perplexity,
            t.seconds_per_sample
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(system: &str, task: &str, kind: Kind, index: usize, text: &str) -> SampleLine {
        SampleLine {
            system: system.into(),
            task: task.into(),
            kind,
            index,
            text: text.into(),
            valid: true,
            json: text.starts_with('{'),
            leak: false,
            repeat: repeated_word(text),
            in_value_sets: None,
            attribute: None,
        }
    }

    fn write_system(dir: &Path, system: &str, lines: &[SampleLine]) {
        std::fs::create_dir_all(dir).unwrap();
        let body: String = lines.iter().map(|l| serde_json::to_string(l).unwrap() + "\n").collect();
        std::fs::write(dir.join("samples.jsonl"), body).unwrap();
        let task = TaskSummary {
            task: "template".into(),
            samples: 2,
            valid: 2,
            json: 0,
            sentences: 2,
            leaks: 0,
            repeats: 0,
            records: 0,
            records_in_value_sets: 0,
            attribute_hits: None,
            distinct: Some(2),
            names: Some(2),
            top_name_share: Some(0.5),
            words: Some(6.5),
            perplexity: 5.0,
            seconds_per_sample: 0.5,
            controls: vec![],
        };
        let summary = Summary {
            system: system.into(),
            model: "m".into(),
            settings: String::new(),
            seed: 1,
            tasks: vec![task],
            skipped: BTreeMap::new(),
        };
        std::fs::write(dir.join("summary.json"), serde_json::to_string(&summary).unwrap()).unwrap();
    }

    /// Two systems pooled blind, judged, and joined back: every judgment lands on its system.
    #[test]
    fn blind_sheets_hide_the_system_and_score_joins_the_judgments_back() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        write_system(
            &a,
            "alpha",
            &[
                line("alpha", "template", Kind::Sentence, 0, "The Eagle is a pub near X."),
                line("alpha", "template", Kind::Sentence, 1, "The Eagle is a a pub near X."),
            ],
        );
        write_system(
            &b,
            "beta",
            &[
                line("beta", "template", Kind::Sentence, 0, "Aromi is a restaurant near Y."),
                line("beta", "template", Kind::Sentence, 1, "Aromi is a restaurant near Y Y."),
            ],
        );
        let (sheet, key) = (tmp.path().join("sheet.jsonl"), tmp.path().join("key.json"));
        blind(BlindArgs {
            systems: vec![a.clone(), b.clone()],
            sheet: sheet.clone(),
            key: key.clone(),
            tasks: vec![],
            seed: 3,
            readers: 2,
            overlap: 1,
        })
        .unwrap();
        let sheet_text = std::fs::read_to_string(&sheet).unwrap();
        // Two readers: two lines each of their own, and one of the other's.
        for r in 0..2 {
            let part = std::fs::read_to_string(sheet.with_extension(format!("reader{r}.jsonl"))).unwrap();
            assert_eq!(part.lines().count(), 3, "{part}");
        }
        assert!(
            !sheet_text.contains("alpha") && !sheet_text.contains("beta"),
            "{sheet_text}"
        );
        // The reader: grammatical unless a word repeats; faithful only for beta's first text.
        let judged: String = sheet_text
            .lines()
            .map(|l| {
                let s: SheetLine = serde_json::from_str(l).unwrap();
                serde_json::json!({
                    "id": s.id,
                    "grammatical": !repeated_word(&s.text),
                    "faithful": s.text == "Aromi is a restaurant near Y.",
                })
                .to_string()
                    + "\n"
            })
            .collect();
        let judgments = tmp.path().join("judged.jsonl");
        std::fs::write(&judgments, judged).unwrap();
        let scored = table(&ScoreArgs {
            systems: vec![a, b],
            key: Some(key),
            judgments: vec![judgments.clone()],
        })
        .unwrap();
        assert!(
            scored.contains("| template | alpha | 2/2 | 2 | 1/2 | 0/2 | 0/2 |"),
            "{scored}"
        );
        assert!(
            scored.contains("| template | beta | 2/2 | 2 | 1/2 | 1/2 | 1/2 |"),
            "{scored}"
        );
        assert!(scored.contains("| 2 | 2 (50%) | 6.5 | 5.00 | 0.50 |"), "{scored}");
        // A second reader who reads line 0 differently: it counts as neither, and the
        // disagreement is reported.
        let first: SheetLine = serde_json::from_str(sheet_text.lines().next().unwrap()).unwrap();
        let second = tmp.path().join("judged2.jsonl");
        let flipped = serde_json::json!({
            "id": first.id,
            "grammatical": repeated_word(&first.text),
            "faithful": first.text != "Aromi is a restaurant near Y.",
        });
        std::fs::write(&second, flipped.to_string() + "\n").unwrap();
        let scored = table(&ScoreArgs {
            systems: vec![tmp.path().join("a"), tmp.path().join("b")],
            key: Some(tmp.path().join("key.json")),
            judgments: vec![judgments.clone(), second],
        })
        .unwrap();
        assert!(
            scored.contains("1 read twice: readers agree on grammatical 0, on faithful 0"),
            "{scored}"
        );
        // A judgment of an id the key does not hold is an error that names the line.
        std::fs::write(&judgments, "{\"id\": 99, \"grammatical\": true, \"faithful\": true}\n").unwrap();
        let e = table_err(&tmp.path().join("a"), &tmp.path().join("key.json"), &judgments);
        assert!(e.contains("id 99 is not in the key") && e.contains(":1"), "{e}");
    }

    fn table_err(system: &Path, key: &Path, judgments: &Path) -> String {
        table(&ScoreArgs {
            systems: vec![system.to_path_buf()],
            key: Some(key.to_path_buf()),
            judgments: vec![judgments.to_path_buf()],
        })
        .unwrap_err()
        .to_string()
    }
}
