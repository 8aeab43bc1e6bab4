//! `diffusion-lm eval-schemas`: the JSON Schema controller on a folder of real schemas with
//! labelled instances: compile rate, instance agreement, compile time, and (optionally) the
//! validity of generated documents.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use diffusion_lm::{DiffusionLm, Error, Generator};
use diffusion_lm_controllers::json_schema::differential::{differential, DifferentialConfig, Verdict};
use diffusion_lm_controllers::json_schema::suite::{check_case, SuiteCase};
use diffusion_lm_controllers::JsonSchemaConfig;

/// Where `scripts/fetch-jsonschema.sh` writes the evaluation set.
const DEFAULT_DIR: &str = "data/jsonschema";

#[derive(Args)]
pub struct EvalSchemasArgs {
    /// A folder of schema files, or a folder of such folders (one subset each). The default is
    /// where `scripts/fetch-jsonschema.sh` puts the JSONSchemaBench set (relative to the current
    /// directory, so run from the repository root).
    #[arg(long, default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
    /// Files per subset (0: all), taken in name order.
    #[arg(long, default_value_t = 0)]
    pub per_subset: usize,
    /// Documents to generate per compiled schema with the model (0: none).
    #[arg(long, default_value_t = 0)]
    pub generate: usize,
    /// Checkpoint directory for generation (default: the shipped model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Reverse diffusion steps (masked engine: commit steps) for the generated documents.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Random seed (a whole number from 0 to 2^64 - 1): the same seed gives the same result.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = crate::parse_seed)]
    pub seed: u64,
    /// Write the per-subset table (Markdown) here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Differential testing against the `jsonschema` validator: per compiled schema, this many
    /// random documents drawn from the automaton (each must validate) and up to
    /// `--mutants` mutations of its valid instances (verdicts must match the validator's).
    #[arg(long, default_value_t = 0)]
    pub differential: usize,
    /// Mutants judged per schema under `--differential`.
    #[arg(long, default_value_t = 300)]
    pub mutants: usize,
    /// Write every disagreement the differential test finds here, one JSON object per line
    /// (schema, verdict, origin, text, validator message, its stated cause if any).
    #[arg(long)]
    pub disagreements: Option<PathBuf>,
    /// Print each compile error and disagreement.
    #[arg(long)]
    pub verbose: bool,
}

#[derive(Default)]
struct Tally {
    files: usize,
    compiled: usize,
    agree: usize,
    valid: usize,
    valid_accepted: usize,
    invalid: usize,
    invalid_rejected: usize,
    unsound: usize,
    compile_ms: Vec<f64>,
    gen_schemas: usize,
    gen_too_long: usize,
    gen_docs: usize,
    gen_valid: usize,
    gen_errors: usize,
    gen_redraws: usize,
    gen_secs: f64,
    errors: BTreeMap<String, usize>,
    diff_sampled: usize,
    diff_mutants: usize,
    diff_unsound: usize,
    diff_incomplete: usize,
    diff_explained: usize,
    approximated: usize,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn error_kind(e: &str) -> String {
    // "JSON Schema at #/x: message" -> the message's first words, for grouping.
    let msg = e.split_once(": ").map(|(_, m)| m).unwrap_or(e);
    if let Some(i) = msg.find('`') {
        if let Some(j) = msg[i + 1..].find('`') {
            return msg[..i + j + 2].to_string();
        }
    }
    msg.split_whitespace().take(4).collect::<Vec<_>>().join(" ")
}

pub fn run(a: EvalSchemasArgs) -> Result<()> {
    let mut subsets: Vec<(String, Vec<PathBuf>)> = Vec::new();
    let mut direct = Vec::new();
    if !a.dir.exists() {
        bail!(
            "the schema folder {} does not exist: fetch the JSONSchemaBench evaluation set with \
             `scripts/fetch-jsonschema.sh` (from the repository root; it writes {DEFAULT_DIR}), or \
             pass --dir (e.g. --dir controllers/tests/data/jsonschema, the small sample the tests use)",
            a.dir.display()
        );
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&a.dir)
        .with_context(|| format!("cannot read {}", a.dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            let name = p
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            subsets.push((name, files));
        } else if p.extension().is_some_and(|x| x == "json") {
            direct.push(p);
        }
    }
    if !direct.is_empty() {
        subsets.push((a.dir.display().to_string(), direct));
    }
    if subsets.is_empty() {
        bail!("no schema files under {}", a.dir.display());
    }
    // The model that generates, of either engine.
    enum Model {
        Continuous(DiffusionLm),
        Masked(Box<dyn diffusion_lm::masked::MaskedModel>),
    }
    let lm = if a.generate > 0 {
        let dir = a.model.clone().unwrap_or_else(DiffusionLm::default_dir);
        let cpu = candle_core::Device::Cpu;
        Some(match diffusion_lm::masked::engine_of(&dir)? {
            diffusion_lm::masked::Engine::Masked => {
                Model::Masked(Box::new(diffusion_lm::masked::MaskedLm::load(&dir, &cpu)?))
            }
            diffusion_lm::masked::Engine::Pretrained => Model::Masked(Box::new(
                diffusion_lm::pretrained::PretrainedLm::load(&dir, &cpu, candle_core::DType::F32)?,
            )),
            diffusion_lm::masked::Engine::Continuous => Model::Continuous(DiffusionLm::load(&dir, &cpu)?),
        })
    } else {
        None
    };
    let config = JsonSchemaConfig::default();
    let mut log = match &a.disagreements {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => None,
    };
    let mut rows: Vec<(String, Tally)> = Vec::new();
    for (name, mut files) in subsets {
        if a.per_subset > 0 {
            files.truncate(a.per_subset);
        }
        let mut t = Tally::default();
        let bar = indicatif::ProgressBar::new(files.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:>16} [{bar:30}] {pos}/{len} ({eta})")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_message(name.clone());
        for f in &files {
            bar.inc(1);
            let case = match SuiteCase::load(f) {
                Ok(c) => c,
                Err(e) => {
                    say(&bar, format!("skip {}: {e}", f.display()));
                    continue;
                }
            };
            t.files += 1;
            let r = check_case(&case, &config);
            if let Some(e) = &r.error {
                *t.errors.entry(error_kind(e)).or_default() += 1;
                if a.verbose {
                    say(&bar, format!("{}: {e}", case.name));
                }
                continue;
            }
            t.compiled += 1;
            t.compile_ms.push(r.compile_secs * 1000.0);
            t.agree += usize::from(r.agrees());
            t.valid += r.valid;
            t.valid_accepted += r.valid_accepted;
            t.invalid += r.invalid;
            t.invalid_rejected += r.invalid_rejected;
            t.unsound += r.unsound.len();
            if a.verbose && !r.agrees() {
                say(
                    &bar,
                    format!(
                        "{}: valid accepted {}/{}, invalid rejected {}/{}",
                        case.name, r.valid_accepted, r.valid, r.invalid_rejected, r.invalid
                    ),
                );
                for u in r.rejected.iter().take(1) {
                    say(
                        &bar,
                        format!("  rejected valid: {}", u.chars().take(300).collect::<String>()),
                    );
                }
                for u in &r.unsound {
                    say(&bar, format!("  accepted invalid: {u}"));
                }
            }
            if let (true, Some(js)) = (a.differential > 0 || a.disagreements.is_some(), &r.compiled) {
                t.approximated += usize::from(!js.is_exact());
                let valid: Vec<serde_json::Value> =
                    case.tests.iter().filter(|(v, _)| *v).map(|(_, d)| d.clone()).collect();
                let cfg = DifferentialConfig {
                    samples: a.differential,
                    max_mutants: a.mutants,
                    seed: a.seed,
                    ..DifferentialConfig::default()
                };
                let d = differential(js, &valid, &cfg);
                t.diff_sampled += d.sampled;
                t.diff_mutants += d.mutants;
                t.diff_unsound += d.unsound().count();
                t.diff_incomplete += d.incomplete().count();
                t.diff_explained += d.explained().count();
                for x in &d.disagreements {
                    let verdict = match x.verdict {
                        Verdict::AcceptedInvalid => "accepted invalid",
                        Verdict::RejectedValid => "rejected valid",
                    };
                    if a.verbose && x.explained_by.is_none() {
                        say(
                            &bar,
                            format!(
                                "{}: {verdict} ({}): {}",
                                case.name,
                                x.origin,
                                x.text.chars().take(300).collect::<String>()
                            ),
                        );
                    }
                    if let Some(w) = &mut log {
                        use std::io::Write;
                        let line = serde_json::json!({
                            "schema": f.display().to_string(), "verdict": verdict, "origin": x.origin,
                            "text": x.text, "detail": x.detail,
                            "explained_by": x.explained_by.map(|e| format!("{e:?}")),
                        });
                        writeln!(w, "{line}").context("cannot write the disagreement log")?;
                    }
                }
            }
            if let (Some(lm), Some(js)) = (&lm, r.compiled) {
                t.gen_schemas += 1;
                let start = Instant::now();
                let out = match lm {
                    Model::Continuous(lm) => Generator::new(lm)
                        .constrain(js)
                        .self_correct(0, 0.3)
                        .steps(a.steps)
                        .seed(a.seed)
                        .generate(a.generate),
                    Model::Masked(lm) => diffusion_lm::masked::MaskedGenerator::new(lm.as_ref())
                        .constrain(js)
                        .steps(a.steps)
                        .seed(a.seed)
                        .generate(a.generate),
                };
                t.gen_secs += start.elapsed().as_secs_f64();
                match out {
                    Ok(docs) => {
                        t.gen_docs += docs.len();
                        t.gen_valid += docs.len();
                        t.gen_redraws += docs.iter().map(|d| d.redraws).sum::<usize>();
                    }
                    Err(Error::Unsatisfiable(_)) | Err(Error::Constraint(_)) => t.gen_too_long += 1,
                    Err(Error::CheckFailed { message, .. }) => {
                        t.gen_docs += a.generate;
                        t.gen_errors += 1;
                        say(&bar, format!("{}: generated an invalid document: {message}", case.name));
                    }
                    Err(e) => {
                        t.gen_errors += 1;
                        say(&bar, format!("{}: generation failed: {e}", case.name));
                    }
                }
            }
        }
        bar.finish_and_clear();
        rows.push((name, t));
    }
    if let Some(w) = &mut log {
        use std::io::Write;
        w.flush().context("cannot write the disagreement log")?;
    }
    let table = render(&rows, a.generate, a.differential > 0 || a.disagreements.is_some());
    if let Some(p) = &a.report {
        write(p, &table)?;
    }
    crate::out(&table)
}

fn render(rows: &[(String, Tally)], generate: usize, diff: bool) -> String {
    let mut s = String::new();
    s.push_str("| subset | schemas | compiled | all instances agree | valid accepted | invalid rejected | accepted invalid | compile p50 | compile p99 |");
    if generate > 0 {
        s.push_str(" generated valid | too long for the sequence |");
    }
    if diff {
        s.push_str(" not exact | random documents | mutants | accepted invalid | rejected valid | explained (approximation, depth limit, format subset, digit limit) |");
    }
    s.push('\n');
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    if generate > 0 {
        s.push_str(" ---: | ---: |");
    }
    if diff {
        s.push_str(" ---: | ---: | ---: | ---: | ---: | ---: |");
    }
    s.push('\n');
    let mut total = Tally::default();
    for (name, t) in rows.iter() {
        s.push_str(&row(name, t, generate, diff));
        total.files += t.files;
        total.compiled += t.compiled;
        total.agree += t.agree;
        total.valid += t.valid;
        total.valid_accepted += t.valid_accepted;
        total.invalid += t.invalid;
        total.invalid_rejected += t.invalid_rejected;
        total.unsound += t.unsound;
        total.compile_ms.extend(&t.compile_ms);
        total.gen_docs += t.gen_docs;
        total.gen_valid += t.gen_valid;
        total.gen_schemas += t.gen_schemas;
        total.gen_too_long += t.gen_too_long;
        total.gen_secs += t.gen_secs;
        total.gen_redraws += t.gen_redraws;
        total.diff_sampled += t.diff_sampled;
        total.diff_mutants += t.diff_mutants;
        total.diff_unsound += t.diff_unsound;
        total.diff_incomplete += t.diff_incomplete;
        total.diff_explained += t.diff_explained;
        total.approximated += t.approximated;
        for (k, v) in &t.errors {
            *total.errors.entry(k.clone()).or_default() += v;
        }
    }
    s.push_str(&row("**all**", &total, generate, diff));
    if !total.errors.is_empty() {
        let mut errs: Vec<(&String, &usize)> = total.errors.iter().collect();
        errs.sort_by(|a, b| b.1.cmp(a.1));
        s.push_str("\nCompile errors by kind:\n\n");
        for (k, v) in errs.iter().take(15) {
            s.push_str(&format!("- {v} × {k}\n"));
        }
    }
    if generate > 0 && total.gen_schemas > 0 {
        s.push_str(&format!(
            "\nGeneration: {:.2} s per schema ({} documents each); {} draws failed the output check \
             and were redrawn.\n",
            total.gen_secs / total.gen_schemas as f64,
            generate,
            total.gen_redraws
        ));
    }
    s
}

/// One table row of a tally.
fn row(name: &str, t: &Tally, generate: usize, diff: bool) -> String {
    let pct = |a: usize, b: usize| {
        if b == 0 {
            "–".to_string()
        } else {
            format!("{:.1}%", 100.0 * a as f64 / b as f64)
        }
    };
    let mut ms = t.compile_ms.clone();
    let mut r = format!(
        "| {name} | {} | {} ({}) | {} | {} | {} | {} | {:.1} ms | {:.1} ms |",
        t.files,
        t.compiled,
        pct(t.compiled, t.files),
        pct(t.agree, t.compiled),
        pct(t.valid_accepted, t.valid),
        pct(t.invalid_rejected, t.invalid),
        t.unsound,
        percentile(&mut ms, 0.5),
        percentile(&mut ms, 0.99),
    );
    if generate > 0 {
        r.push_str(&format!(
            " {}/{} | {} of {} |",
            t.gen_valid, t.gen_docs, t.gen_too_long, t.gen_schemas
        ));
    }
    if diff {
        r.push_str(&format!(
            " {} | {} | {} | {} | {} | {} |",
            t.approximated, t.diff_sampled, t.diff_mutants, t.diff_unsound, t.diff_incomplete, t.diff_explained
        ));
    }
    r.push('\n');
    r
}

fn write(p: &Path, text: &str) -> Result<()> {
    std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))
}

/// A message line that does not break the progress bar (printed even when stderr is no terminal).
fn say(bar: &indicatif::ProgressBar, msg: String) {
    bar.suspend(|| status!("{msg}"));
}
