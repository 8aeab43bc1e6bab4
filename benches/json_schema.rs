//! JSON Schema benchmarks (`cargo bench -p diffusion-lm --bench json_schema`).
//!
//! 1. Over the real schemas in `data/jsonschema` (fetched by `scripts/fetch-jsonschema.sh`; every
//!    `JSON_SCHEMA_BENCH_STRIDE`-th file, default 4, 0 to skip; the copied sample in
//!    `controllers/tests/data` when the folder is absent):
//!    compile time (schema → byte automaton, p50/p99), token-automaton build time, and projection
//!    time per denoising step at batch 1 with the shipped model (p50/p99), printed as a table.
//! 2. Criterion timings of compiling and projecting the example schemas.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use diffusion_lm::steer::projection::best_sequence;
use diffusion_lm::steer::{ConstraintContext, Stack};
use diffusion_lm::DiffusionLm;
use diffusion_lm_controllers::json_schema::suite::SuiteCase;
use diffusion_lm_controllers::JsonSchema;

fn load() -> DiffusionLm {
    diffusion_lm::tune_runtime();
    DiffusionLm::load(DiffusionLm::default_dir(), &Device::Cpu).expect("the shipped model in models/e2e")
}

fn clamp_scores(lm: &DiffusionLm) -> Vec<f32> {
    let cfg = &lm.config;
    let x = Tensor::randn(0f32, 1.0, (1, cfg.seq_len, cfg.embed_dim), &Device::Cpu).unwrap();
    lm.model
        .clamp_scores(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn schema_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fetched = root.join("data/jsonschema");
    let stride: usize = std::env::var("JSON_SCHEMA_BENCH_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let mut files = Vec::new();
    let walk = |dir: &Path| {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        v.sort();
        v
    };
    if fetched.is_dir() {
        for sub in walk(&fetched) {
            if sub.is_dir() {
                files.extend(
                    walk(&sub)
                        .into_iter()
                        .filter(|p| p.extension().is_some_and(|x| x == "json"))
                        .step_by(stride.max(1)),
                );
            }
        }
    } else {
        files.extend(
            walk(&root.join("controllers/tests/data/jsonschema"))
                .into_iter()
                .filter(|p| p.extension().is_some_and(|x| x == "json")),
        );
    }
    files
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Distribution over the real schemas (printed once, outside criterion).
fn real_schemas(_c: &mut Criterion) {
    if std::env::var("JSON_SCHEMA_BENCH_STRIDE").as_deref() == Ok("0") {
        return;
    }
    let lm = load();
    let cfg = &lm.config;
    let ctx = ConstraintContext {
        tokenizer: &lm.tokenizer,
        index: lm.token_index(),
        seq_len: cfg.seq_len,
    };
    let scores = clamp_scores(&lm);
    let (mut compile, mut lift, mut project) = (Vec::new(), Vec::new(), Vec::new());
    let (mut files, mut compiled, mut fit) = (0, 0, 0);
    for f in schema_files() {
        let Ok(case) = SuiteCase::load(&f) else { continue };
        files += 1;
        let t = Instant::now();
        let Ok(js) = JsonSchema::new(&case.schema) else {
            continue;
        };
        compile.push(t.elapsed().as_secs_f64() * 1e3);
        compiled += 1;
        let t = Instant::now();
        let Ok(stack) = Stack::new().constrain(js).prepare(&ctx) else {
            continue;
        };
        lift.push(t.elapsed().as_secs_f64() * 1e3);
        fit += 1;
        let t = Instant::now();
        let reps = 5;
        for _ in 0..reps {
            let row = stack.masked(scores.clone());
            std::hint::black_box(best_sequence(
                &row,
                cfg.seq_len,
                cfg.vocab_size,
                &stack.automaton,
                lm.tokenizer.pad_id(),
            ));
        }
        project.push(t.elapsed().as_secs_f64() * 1e3 / reps as f64);
    }
    println!(
        "\nJSON Schema over {files} real schemas ({compiled} compiled, {fit} fit in {} tokens):",
        cfg.seq_len
    );
    println!("| stage | p50 | p99 | max |\n| --- | ---: | ---: | ---: |");
    for (name, v) in [
        ("compile (schema → byte automaton)", &mut compile),
        ("token automaton + satisfiability check", &mut lift),
        ("projection per denoising step (batch 1)", &mut project),
    ] {
        let max = v.iter().cloned().fold(f64::NAN, f64::max);
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.2} ms |",
            pct(v, 0.5),
            pct(v, 0.99),
            max
        );
    }
    println!();
}

fn examples(c: &mut Criterion) {
    let lm = load();
    let cfg = &lm.config;
    let ctx = ConstraintContext {
        tokenizer: &lm.tokenizer,
        index: lm.token_index(),
        seq_len: cfg.seq_len,
    };
    let scores = clamp_scores(&lm);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/schemas");
    let mut group = c.benchmark_group("json_schema");
    group.sample_size(20);
    for name in ["restaurant", "function_call"] {
        let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
        group.bench_function(BenchmarkId::new("compile", name), |b| {
            b.iter(|| JsonSchema::from_json(&text).unwrap())
        });
        let stack = Stack::new()
            .constrain(JsonSchema::from_json(&text).unwrap())
            .prepare(&ctx)
            .unwrap();
        group.bench_function(BenchmarkId::new("projection_step", name), |b| {
            b.iter(|| {
                let row = stack.masked(scores.clone());
                best_sequence(
                    &row,
                    cfg.seq_len,
                    cfg.vocab_size,
                    &stack.automaton,
                    lm.tokenizer.pad_id(),
                )
                .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, real_schemas, examples);
criterion_main!(benches);
