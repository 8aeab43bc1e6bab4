//! Constraint benchmarks (`cargo bench -p diffusion-lm --bench constraints`): token-automaton build time and
//! projection (exact constrained rounding) time per denoising step at batch 1, for realistic
//! regexes and the GBNF grammars in `grammars/`, next to the denoiser step of the shipped model.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use diffusion_lm::nn::Mode;
use diffusion_lm::steer::projection::best_sequence;
use diffusion_lm::steer::{Constraint, ConstraintContext, Stack};
use diffusion_lm::DiffusionLm;
use diffusion_lm_controllers::{Grammar, Regex};

pub const PATTERNS: [(&str, &str); 6] = [
    ("date", r"(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"),
    ("email", r"[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,6}"),
    ("phone", r"\(?[0-9]{3}\)?[ -][0-9]{3}-[0-9]{4}"),
    ("identifier", r"[A-Za-z_][A-Za-z0-9_]{0,30}"),
    (
        "alternation20",
        r"(Alimentum|Aromi|Bibimbap House|Blue Spice|Browns Cambridge|Clowns|Cocum|Cotto|Fitzbillies|Giraffe|Green Man|Loch Fyne|Midsummer House|Strada|Taste of Cambridge|The Cambridge Blue|The Cricketers|The Eagle|The Golden Curry|The Mill)",
    ),
    (
        "sentence",
        r"[A-Z][a-z]+( [A-Z][a-z]+)? is a (cheap|moderately priced|expensive) (pub|restaurant|coffee shop) near [A-Z][a-z ]+\.",
    ),
];

pub const GRAMMARS: [&str; 4] = ["json", "arithmetic", "sql_select", "statements"];

type Factory = Box<dyn Fn() -> Box<dyn Constraint>>;

/// Every benchmarked constraint, built fresh by its factory (so builds can be timed).
fn constraints() -> Vec<(String, Factory)> {
    let mut out: Vec<(String, Factory)> = PATTERNS
        .iter()
        .map(|&(name, pattern)| {
            let f: Factory = Box::new(move || Box::new(Regex::new(pattern).unwrap()));
            (name.to_string(), f)
        })
        .collect();
    for name in GRAMMARS {
        let path = format!("{}/grammars/{name}.gbnf", env!("CARGO_MANIFEST_DIR"));
        let f: Factory = Box::new(move || Box::new(Grammar::from_file(&path).unwrap()));
        out.push((format!("grammar_{name}"), f));
    }
    out
}

fn load() -> DiffusionLm {
    diffusion_lm::tune_runtime();
    DiffusionLm::load(DiffusionLm::default_dir(), &Device::Cpu).expect("the shipped model in models/e2e")
}

fn automaton_build(c: &mut Criterion) {
    let lm = load();
    let ctx = ConstraintContext {
        tokenizer: &lm.tokenizer,
        index: lm.token_index(),
        seq_len: lm.config.seq_len,
    };
    let mut group = c.benchmark_group("automaton_build");
    group.sample_size(10);
    for (name, make) in constraints() {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| make().restrictions(&ctx).unwrap())
        });
    }
    group.finish();
}

fn projection_step(c: &mut Criterion) {
    let lm = load();
    let cfg = &lm.config;
    let ctx = ConstraintContext {
        tokenizer: &lm.tokenizer,
        index: lm.token_index(),
        seq_len: cfg.seq_len,
    };
    let x = Tensor::randn(0f32, 1.0, (1, cfg.seq_len, cfg.embed_dim), &Device::Cpu).unwrap();
    let scores = lm
        .model
        .clamp_scores(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let mut group = c.benchmark_group("projection_batch1");
    for (name, make) in constraints() {
        let mut constraints = Stack::new();
        constraints.push_constraint(make());
        let stack = constraints.prepare(&ctx).unwrap();
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
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
    // The reference: one denoiser step at batch 1 (forward + clamping scores).
    group.bench_function("denoiser_step_reference", |b| {
        b.iter(|| {
            let x0 = lm.model.forward(&x, &[500], &mut Mode::Infer).unwrap();
            lm.model.clamp(&x0).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, automaton_build, projection_step);
criterion_main!(benches);
