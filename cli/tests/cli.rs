//! The command line reports bad input as one clear `error:` line and a non-zero exit, never a panic.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_diffusion-lm"))
        .args(args)
        .output()
        .expect("run the CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn bad_input_gives_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["generate".into(), "--model".into(), format!("{d}/missing")],
            "directory does not exist",
        ),
        (
            vec![
                "train".into(),
                "--corpus".into(),
                format!("{d}/none.txt"),
                "--out".into(),
                format!("{d}/o"),
            ],
            "file does not exist",
        ),
        (vec!["generate".into(), "--steps".into(), "0".into()], "at least 1"),
        (
            vec!["generate".into(), "--seq-len".into(), "100000".into()],
            "exceeds the model's sequence length",
        ),
        (
            vec!["generate".into(), "--length".into(), "100000".into()],
            "but the sequence holds 64",
        ),
        (
            vec!["generate".into(), "--regex".into(), "(?=lookahead)".into()],
            "regex",
        ),
        (
            vec!["generate".into(), "--regex".into(), "[0-9]{1000}".into()],
            "needs at least",
        ),
        (vec!["generate".into(), "--length".into(), "9..3".into()], "empty range"),
        (vec!["generate".into(), "--length".into(), "abc".into()], "not a number"),
        (
            vec!["generate".into(), "--infill".into(), "no holes".into()],
            "has no hole",
        ),
        (
            vec!["generate".into(), "--sampler".into(), "euler".into()],
            "unknown sampler",
        ),
        (
            vec!["generate".into(), "--device".into(), "tpu".into()],
            "unknown device",
        ),
        (
            vec!["generate".into(), "--schema".into(), format!("{d}/none.json")],
            "cannot read schema",
        ),
        (
            vec!["generate".into(), "--schema".into(), format!("{d}/bad.json")],
            "not valid JSON",
        ),
        (
            vec!["generate".into(), "--schema".into(), format!("{d}/unsat.json")],
            "no document satisfies",
        ),
        (
            vec!["generate".into(), "--schema".into(), format!("{d}/long.json")],
            "needs at least",
        ),
        (
            vec!["generate".into(), "--grammar".into(), format!("{d}/bad.gbnf")],
            "line 1, column 10: unclosed `(`",
        ),
        (
            vec!["generate".into(), "--grammar".into(), format!("{d}/none.gbnf")],
            "cannot read grammar",
        ),
        (
            vec![
                "generate".into(),
                "--grammar".into(),
                format!("{d}/long.gbnf"),
                "--seq-len".into(),
                "8".into(),
            ],
            "needs at least",
        ),
        (
            vec!["generate".into(), "--self-correct-threshold".into(), "1.5".into()],
            "--self-correct-threshold must be in (0, 1]",
        ),
        (
            vec!["generate".into(), "--syntax".into(), "cobol".into()],
            "unknown tree-sitter language \"cobol\"",
        ),
        (
            vec![
                "generate".into(),
                "--syntax".into(),
                "python".into(),
                "--syntax-query".into(),
                "(function_definition".into(),
            ],
            "tree-sitter query for python",
        ),
        (
            vec!["generate".into(), "--attribute".into(), "food=Martian".into()],
            "has no value \"Martian\"",
        ),
        (
            vec!["generate".into(), "--attribute".into(), "colour=red".into()],
            "unknown field \"colour\"",
        ),
        (
            vec![
                "generate".into(),
                "--attribute".into(),
                "food=Italian".into(),
                "--guide-on".into(),
                "latent".into(),
            ],
            "trained on the denoiser's predictions",
        ),
        (
            vec![
                "generate".into(),
                "--attribute".into(),
                "food=Italian".into(),
                "--guidance-rule".into(),
                "momentum".into(),
            ],
            "expected sign, normalized",
        ),
        (
            vec![
                "generate".into(),
                "--attribute".into(),
                "food=Italian".into(),
                "--guidance-step-size".into(),
                "0".into(),
            ],
            "--guidance-step-size must be positive",
        ),
        (
            vec![
                "generate".into(),
                "--model".into(),
                concat!(env!("CARGO_MANIFEST_DIR"), "/../models/e2e").into(),
                "--length-first".into(),
                "true".into(),
            ],
            "--length-first applies to the masked engine",
        ),
        (
            vec!["generate".into(), "--length-first".into(), "maybe".into()],
            "invalid value 'maybe'",
        ),
        (
            vec![
                "generate".into(),
                "--model".into(),
                concat!(env!("CARGO_MANIFEST_DIR"), "/../models/e2e").into(),
                "--best-of".into(),
                "0".into(),
            ],
            "best_of must be at least 1",
        ),
        (
            vec!["generate".into(), "--best-of".into(), "0".into()],
            "best_of must be at least 1",
        ),
    ];
    std::fs::write(dir.path().join("bad.gbnf"), "root ::= (\"a\"").unwrap();
    std::fs::write(dir.path().join("long.gbnf"), "root ::= \"a\"{20} [0-9]{20}").unwrap();
    std::fs::write(dir.path().join("bad.json"), "{\"type\": ").unwrap();
    std::fs::write(
        dir.path().join("unsat.json"),
        r#"{"type": "string", "minLength": 5, "maxLength": 2}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("long.json"),
        r#"{"type": "array", "minItems": 100, "items": {"type": "integer"}}"#,
    )
    .unwrap();
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, err) = run(&args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains("error:") && err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
}

#[test]
fn generate_with_the_shipped_model_prints_jsonl() {
    let (ok, out, err) = run(&[
        "generate",
        "--samples",
        "2",
        "--steps",
        "20",
        "--format",
        "jsonl",
        "--seed",
        "4",
    ]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["text"].is_string());
    }
}

/// The shipped masked model's first draw of sample 0 at seed 1 (best of 1) commits the PAD tail
/// all the way to the first position; an empty draw is drawn again, and the redraw is reported.
#[test]
fn an_empty_masked_draw_is_drawn_again() {
    let (ok, out, err) = run(&[
        "generate",
        "--model",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../models/e2e-masked"),
        "--samples",
        "1",
        "--seed",
        "1",
        "--best-of",
        "1",
        "--form",
        "free",
        "--format",
        "jsonl",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(!v["text"].as_str().unwrap().is_empty(), "{out}");
    assert!(err.contains("1 sample(s) were drawn again"), "{err}");
}

/// `--form mixed` writes each sample in one form, drawn with the corpus's share and held by
/// that form's constraint; a sample's form does not depend on how many are drawn. It is the
/// default left free on the continuous model, not on the masked one; a hard constraint replaces
/// it.
#[test]
fn mixed_form_writes_whole_sentences_and_records() {
    let masked = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/e2e-masked");
    let draw = |extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            "generate", "--model", masked, "--steps", "16", "--seed", "4", "--form", "mixed",
        ];
        args.extend_from_slice(extra);
        let (ok, out, err) = run(&args);
        assert!(ok, "{err}");
        out.lines().map(str::to_string).collect()
    };
    let eight = draw(&["--samples", "8"]);
    assert_eq!(eight.len(), 8);
    let records: Vec<bool> = eight.iter().map(|t| t.starts_with('{')).collect();
    assert!(records.contains(&true) && records.contains(&false), "{eight:?}");
    for t in &eight {
        if t.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(t).unwrap_or_else(|e| panic!("{t:?}: {e}"));
            assert!(v.is_object(), "{t:?}");
        } else {
            assert!(t.starts_with(|c: char| c.is_ascii_uppercase()), "{t:?}");
            assert!(t.ends_with(['.', '!', '?']) && !t.contains(['{', '}', '"']), "{t:?}");
        }
    }
    let four = draw(&["--samples", "4"]);
    let four_records: Vec<bool> = four.iter().map(|t| t.starts_with('{')).collect();
    assert_eq!(four_records, records[..4], "{four:?} against {eight:?}");
    // The masked model's default is free: another draw.
    let (ok, free, err) = run(&[
        "generate",
        "--model",
        masked,
        "--steps",
        "16",
        "--seed",
        "4",
        "--samples",
        "8",
    ]);
    assert!(ok, "{err}");
    assert_ne!(free.lines().collect::<Vec<_>>(), eight);
    // The continuous model's default is mixed, and a hard constraint replaces it.
    let continuous = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/e2e");
    let cont = |extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            "generate",
            "--model",
            continuous,
            "--steps",
            "10",
            "--seed",
            "4",
            "--best-of",
            "1",
            "--samples",
            "8",
        ];
        args.extend_from_slice(extra);
        let (ok, out, err) = run(&args);
        assert!(ok, "{err}");
        out.lines().map(str::to_string).collect()
    };
    assert_eq!(cont(&[]), cont(&["--form", "mixed"]));
    for t in cont(&["--regex", "The [A-Za-z ]+[.]"]) {
        assert!(t.starts_with("The ") && t.ends_with('.'), "{t:?}");
    }
}

#[test]
fn generate_runs_the_engine_its_flags_need() {
    // Without --model: the masked model, so a masked-engine flag is accepted...
    let (ok, out, err) = run(&["generate", "--samples", "2", "--steps", "8", "--temperature", "0.5"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2);
    // ...and the continuous model when a flag needs it.
    let (ok, out, err) = run(&["generate", "--samples", "2", "--steps", "5", "--sampler", "ddim"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2);
    // A flag of the other engine is refused, naming it, when --model is given.
    let masked = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/e2e-masked");
    let (ok, _, err) = run(&["generate", "--model", masked, "--syntax", "json"]);
    assert!(!ok);
    assert!(err.contains("--syntax applies to the continuous engine"), "{err}");
    let continuous = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/e2e");
    let (ok, _, err) = run(&["generate", "--model", continuous, "--temperature", "0.5"]);
    assert!(!ok);
    assert!(err.contains("--temperature applies to the masked engine"), "{err}");
}

#[test]
fn a_confidence_threshold_brings_its_order_unless_another_is_asked_for() {
    // The masked default orders by entropy; the threshold's keys are low-confidence
    // confidences, so without --remasking it runs that order...
    let (ok, out, err) = run(&[
        "generate",
        "--samples",
        "2",
        "--steps",
        "16",
        "--confidence-threshold",
        "0.9",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2);
    let (ok, low, err) = run(&[
        "generate",
        "--samples",
        "2",
        "--steps",
        "16",
        "--confidence-threshold",
        "0.9",
        "--remasking",
        "low-confidence",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out, low);
    // ...and with another order asked for, the clash is an error.
    let (ok, _, err) = run(&[
        "generate",
        "--steps",
        "16",
        "--confidence-threshold",
        "0.9",
        "--remasking",
        "entropy",
    ]);
    assert!(!ok);
    assert!(err.contains("needs low-confidence remasking"), "{err}");
}

#[test]
fn generate_reads_a_config_file_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gen.json");
    std::fs::write(
        &config,
        r#"{"steps": 10, "seed": 3, "sampler": "ddim:0.5", "self_correct": {"rounds": 0}}"#,
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let flags = |seed: &str| {
        let (ok, out, err) = run(&[
            "generate",
            "--samples",
            "2",
            "--steps",
            "10",
            "--seed",
            seed,
            "--sampler",
            "ddim:0.5",
            "--self-correct",
            "0",
        ]);
        assert!(ok, "{err}");
        out
    };
    let (ok, from_file, err) = run(&["generate", "--samples", "2", "--config", config]);
    assert!(ok, "{err}");
    assert_eq!(from_file, flags("3"), "the file's settings are the flags' settings");
    let (ok, overridden, err) = run(&["generate", "--samples", "2", "--config", config, "--seed", "4"]);
    assert!(ok, "{err}");
    assert_eq!(overridden, flags("4"), "a flag overrides the file");
    assert_ne!(overridden, from_file, "the seed matters (a test of the test)");
    // A misspelt field is an error naming it and the file.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"stpes": 10}"#).unwrap();
    let (ok, _, err) = run(&["generate", "--config", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("stpes") && err.contains("bad.json"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn generate_with_a_json_schema_prints_valid_documents() {
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/schemas/restaurant.json");
    let (ok, out, err) = run(&[
        "generate",
        "--schema",
        schema,
        "--samples",
        "2",
        "--steps",
        "10",
        "--format",
        "jsonl",
    ]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let doc: serde_json::Value = serde_json::from_str(v["text"].as_str().unwrap()).unwrap();
        assert!(doc["name"].is_string() && doc["area"].is_string(), "{doc}");
    }
}

#[test]
fn generate_with_a_grammar_prints_sentences_of_it() {
    let grammar = concat!(env!("CARGO_MANIFEST_DIR"), "/../grammars/arithmetic.gbnf");
    let (ok, out, err) = run(&["generate", "--grammar", grammar, "--samples", "2", "--steps", "10"]);
    assert!(ok, "{err}");
    let g = diffusion_lm_controllers::Grammar::from_file(grammar).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    for line in lines {
        assert!(g.recognizes(line), "{line:?}");
    }
}

#[test]
fn best_of_runs_on_the_continuous_engine_under_constraints() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/e2e");
    let (ok, out, err) = run(&[
        "generate",
        "--model",
        model,
        "--best-of",
        "2",
        "--regex",
        "The [A-Z][a-z]+ is a pub\\.",
        "--samples",
        "2",
        "--steps",
        "10",
        "--self-correct",
        "0",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    for line in out.lines() {
        let name = line.strip_prefix("The ").and_then(|l| l.strip_suffix(" is a pub."));
        let one_word = name.is_some_and(|n| {
            n.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && n.chars().skip(1).all(|c| c.is_ascii_lowercase())
                && n.len() > 1
        });
        assert!(one_word, "{line:?}");
    }
}

#[test]
fn generate_with_syntax_repair_on_the_python_model() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/python-toy");
    let query = diffusion_lm_controllers::syntax_tree::PYTHON_ADD_TWO;
    let (ok, out, err) = run(&[
        "generate",
        "--model",
        model,
        "--syntax",
        "python",
        "--syntax-query",
        query,
        "--samples",
        "3",
        "--steps",
        "20",
        "--format",
        "jsonl",
    ]);
    assert!(ok, "{err}");
    let texts: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(texts.len(), 3);
    assert!(texts.iter().all(|t| t.starts_with("def ")), "{texts:?}");
}

/// An evaluation split with `--stop-after-targets` and `--resume` gives the uninterrupted run's
/// report; a resume with other settings is refused.
#[test]
fn eval_attributes_resumes_a_partial_report_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    // 14 steps: guidance acts in the 4 before the unguided last 10.
    let args = ["eval-attributes", "--targets", "3", "--samples", "2", "--steps", "14"];
    let with = |extra: &[&str]| -> Vec<String> { args.iter().chain(extra).map(|s| s.to_string()).collect() };
    let run_owned = |v: Vec<String>| run(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let (ok, _, err) = run_owned(with(&["--report", &path("whole.json")]));
    assert!(ok, "{err}");
    let (ok, _, err) = run_owned(with(&["--report", &path("split.json"), "--stop-after-targets", "1"]));
    assert!(ok && err.contains("1 of 3 done"), "{err}");
    let partial: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path("split.json")).unwrap()).unwrap();
    assert_eq!(partial["partial"], true);
    assert_eq!(partial["results"].as_array().unwrap().len(), 1);

    let (ok, _, err) = run_owned(with(&["--report", &path("split.json"), "--resume", "--seed", "9"]));
    assert!(!ok && err.contains("settings differ"), "{err}");
    // A fresh run would overwrite the partial report: refused.
    let (ok, _, err) = run_owned(with(&["--report", &path("split.json")]));
    assert!(!ok && err.contains("partial report"), "{err}");
    let (ok, _, err) = run_owned(with(&["--report", &path("split.json"), "--resume"]));
    assert!(ok && err.contains("1 of 3 targets already done"), "{err}");
    assert!(
        !err.contains("unguided: 2 samples"),
        "the unguided samples were kept: {err}"
    );

    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path(name)).unwrap()).unwrap()
    };
    let (whole, split) = (read("whole.json"), read("split.json"));
    assert_eq!(whole["results"], split["results"]);
    assert_eq!(whole["unguided_samples"].as_array().map(Vec::len), Some(2));
    assert_eq!(whole["unguided_samples"], split["unguided_samples"]);
    for key in [
        "guided_mentioned",
        "guided_expressed",
        "guided_perplexity",
        "unguided_perplexity",
    ] {
        assert_eq!(whole[key], split[key], "{key}");
    }
    let (ok, _, err) = run_owned(with(&["--report", &path("split.json"), "--resume"]));
    assert!(!ok && err.contains("finished report"), "{err}");
}

/// A copy of the shipped model whose corpus record points at a small E2E CSV written here, with
/// every value the shipped classifier knows (so CI needs no dataset).
fn shipped_model_on_a_mini_corpus(dir: &std::path::Path) -> std::path::PathBuf {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/e2e");
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(shipped.join(file), model.join(file)).unwrap();
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shipped.join("classifier/config.json")).unwrap()).unwrap();
    let fields: Vec<(String, Vec<String>)> = cfg["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let values = f["values"].as_array().unwrap().iter().skip(1); // not `none`
            (
                f["name"].as_str().unwrap().to_string(),
                values.map(|v| v.as_str().unwrap().to_string()).collect(),
            )
        })
        .collect();
    let rows = fields.iter().map(|(_, v)| v.len()).max().unwrap();
    let mut csv = String::from("mr,ref\n");
    for i in 0..rows {
        let value = |field: &str| {
            let values = &fields.iter().find(|(f, _)| f == field).unwrap().1;
            values[i % values.len()].clone()
        };
        let mr: Vec<String> = fields.iter().map(|(f, _)| format!("{f}[{}]", value(f))).collect();
        let text = format!(
            "{} is a {} serving {} food near {}.",
            value("name"),
            value("eatType"),
            value("food"),
            value("near")
        );
        csv.push_str(&format!("\"{}\",\"{text}\"\n", mr.join(", ")));
    }
    let corpus = dir.join("mini.csv");
    std::fs::write(&corpus, csv).unwrap();
    let record = serde_json::json!({"corpus": [corpus], "json_records": true, "heldout": 0.0});
    std::fs::write(model.join("data.json"), record.to_string()).unwrap();
    model
}

#[test]
fn train_classifier_fine_tunes_the_shipped_classifier_on_relexicalized_copies() {
    let dir = tempfile::tempdir().unwrap();
    let model = shipped_model_on_a_mini_corpus(dir.path());
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/e2e/classifier");
    let out = dir.path().join("clf");
    let out = out.to_str().unwrap();
    // The largest difference between a trained classifier's weights and the shipped ones.
    let distance_to_shipped = |dir: &str| -> f32 {
        let load = |d: &std::path::Path| {
            diffusion_lm::train::checkpoint::load_tensors(d, "model.safetensors", &candle_core::Device::Cpu).unwrap()
        };
        let (ours, theirs) = (load(std::path::Path::new(dir)), load(&shipped));
        assert_eq!(ours.len(), theirs.len());
        theirs
            .iter()
            .map(|(name, t)| {
                let d = (&ours[name] - t)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap();
                d.to_scalar::<f32>().unwrap()
            })
            .fold(0.0, f32::max)
    };
    let common = [
        "train-classifier",
        "--model",
        model.to_str().unwrap(),
        "--reads",
        "prediction",
        "--steps",
        "1",
        "--batch-size",
        "8",
        "--lr",
        "1e-9",
        "--no-progress",
        "--seed",
        "3",
        "--hidden",
        "192",
        "--layers",
        "3",
        "--heads",
        "6",
    ];
    let with = |extra: &[&str]| -> Vec<String> { common.iter().chain(extra).map(|s| s.to_string()).collect() };
    let run_owned = |v: Vec<String>| run(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let (ok, _, err) = run_owned(with(&[
        "--relexicalize",
        "1",
        "--init",
        shipped.to_str().unwrap(),
        "--out",
        out,
    ]));
    assert!(ok, "{err}");
    assert!(err.contains("relexicalized"), "{err}");
    // A step at a vanishing learning rate leaves the shipped weights (and their average) in place.
    assert!(distance_to_shipped(out) < 1e-5, "{}", distance_to_shipped(out));
    let fresh = dir.path().join("fresh");
    let fresh = fresh.to_str().unwrap();
    let (ok, _, err) = run_owned(with(&["--relexicalize", "1", "--out", fresh]));
    assert!(ok, "{err}");
    assert!(
        distance_to_shipped(fresh) > 0.01,
        "without --init the run starts from random weights"
    );
    let (ok, _, err) = run_owned(with(&["--init", &format!("{out}/missing"), "--out", out]));
    assert!(!ok && err.contains("missing"), "{err}");
}

#[test]
fn attributes_guide_the_masked_engine_with_its_classifier_of_masked_text() {
    // Without --model: the masked model and its classifier, models/e2e-masked/classifier.
    let (ok, out, err) = run(&[
        "generate",
        "--attribute",
        "food=Italian",
        "--samples",
        "2",
        "--steps",
        "8",
        "--best-of",
        "1",
        "--edits",
        "0",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2);
    // A classifier of a continuous model's latents cannot read masked text.
    let continuous_classifier = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/e2e/classifier");
    let (ok, _, err) = run(&[
        "generate",
        "--attribute",
        "food=Italian",
        "--classifier",
        continuous_classifier,
        "--samples",
        "1",
    ]);
    assert!(!ok);
    assert!(err.contains("reads a continuous model's latents"), "{err}");
    // A negative scale would steer away from the target: refused.
    let (ok, _, err) = run(&[
        "generate",
        "--attribute",
        "food=Italian",
        "--guidance-scale=-1",
        "--samples",
        "1",
    ]);
    assert!(!ok);
    assert!(err.contains("the guidance scale must be at least 0, got -1"), "{err}");
    // A classifier of masked text trained with another tokenizer is refused, naming both.
    let dir = tempfile::tempdir().unwrap();
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/e2e-masked/classifier");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(format!("{shipped}/{f}"), dir.path().join(f)).unwrap();
    }
    let mut tokenizer = std::fs::read_to_string(format!("{shipped}/tokenizer.json")).unwrap();
    tokenizer.push('\n');
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer).unwrap();
    let (ok, _, err) = run(&[
        "generate",
        "--attribute",
        "food=Italian",
        "--classifier",
        dir.path().to_str().unwrap(),
        "--samples",
        "1",
    ]);
    assert!(!ok);
    assert!(
        err.contains("was trained with another tokenizer than the model"),
        "{err}"
    );
    // An unknown value names what the classifier knows.
    let (ok, _, err) = run(&["generate", "--attribute", "food=Martian", "--samples", "1"]);
    assert!(!ok);
    assert!(err.contains("Italian"), "{err}");
    // The masked classifier on the continuous engine is refused, naming why.
    let masked_classifier = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/e2e-masked/classifier");
    let continuous = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/e2e");
    let (ok, _, err) = run(&[
        "generate",
        "--model",
        continuous,
        "--attribute",
        "food=Italian",
        "--classifier",
        masked_classifier,
        "--samples",
        "1",
        "--steps",
        "4",
    ]);
    assert!(!ok);
    assert!(err.contains("only the masked engine"), "{err}");
}

#[test]
fn a_softmax_head_continuous_model_warm_starts_from_shipped_checkpoints_and_generates() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "The Eagle is a pub near the river.\nThe Mill is a restaurant near The Bakers.\n",
    )
    .unwrap();
    let masked = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/e2e-masked");
    let continuous = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/e2e");
    let tokenizer = format!("{continuous}/tokenizer.json");
    let out = dir.path().join("softmax");
    let out = out.to_str().unwrap();
    let train = |out: &str, tokenizer: Option<&str>| {
        let mut args = vec!["train", "--corpus", corpus.to_str().unwrap(), "--out", out];
        if let Some(t) = tokenizer {
            args.extend(["--tokenizer", t]);
        }
        args.extend([
            "--x0-head",
            "softmax",
            "--init-from",
            masked,
            continuous,
            "--freeze-embeddings",
            "--heldout",
            "0",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--no-progress",
        ]);
        run(&args)
    };
    let (ok, _, err) = train(out, Some(&tokenizer));
    assert!(ok, "{err}");
    assert!(err.contains("starting 53 tensors from"), "{err}");
    // The shipped continuous model gives at least its embeddings (of the same shapes).
    assert!(err.contains(&format!("tensors from {continuous}:")), "{err}");
    let config = std::fs::read_to_string(format!("{out}/config.json")).unwrap();
    assert!(config.contains("\"x0_head\": \"softmax\""), "{config}");
    let (ok, text, err) = run(&[
        "generate",
        "--model",
        out,
        "--samples",
        "2",
        "--steps",
        "4",
        "--self-correct",
        "0",
        "--drop-doubled-words",
        "true",
        "--regex",
        "The [A-Za-z ]+\\.",
    ]);
    assert!(ok, "{err}");
    let matches = |l: &str| {
        l.strip_prefix("The ")
            .and_then(|r| r.strip_suffix('.'))
            .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphabetic() || c == ' '))
    };
    assert_eq!(text.lines().filter(|l| matches(l)).count(), 2, "{text}");
    // A tokenizer trained on the corpus is not the checkpoints' own.
    let (ok, _, err) = train(dir.path().join("other").to_str().unwrap(), None);
    assert!(!ok);
    assert!(err.contains("its tokenizer differs from the run's"), "{err}");
    // Unknown heads are named.
    let (ok, _, err) = run(&[
        "train",
        "--corpus",
        corpus.to_str().unwrap(),
        "--out",
        out,
        "--x0-head",
        "mlp",
    ]);
    assert!(!ok);
    assert!(err.contains("expected direct or softmax"), "{err}");
}

/// `lexicon` writes a checkpoint's lexicon and phrases from the training split of its corpus:
/// for a copy of the shipped continuous model, the very files it ships. A masked model has
/// neither, and `--phrases` is refused for it.
#[test]
fn lexicon_writes_the_shipped_lexicon_and_phrases_again() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shipped = root.join("models/e2e");
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "data.json"] {
        std::fs::copy(shipped.join(f), dir.path().join(f)).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_diffusion-lm"))
        .current_dir(&root)
        .args(["lexicon", "--model"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in ["lexicon.txt", "phrases.txt"] {
        let wrote = std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert!(
            wrote == std::fs::read_to_string(shipped.join(f)).unwrap(),
            "{f} differs from the shipped one"
        );
    }
    let masked = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/e2e-masked");
    let (ok, _, err) = run(&["generate", "--model", masked, "--phrases", "true", "--samples", "1"]);
    assert!(!ok && err.contains("--phrases"), "{err}");
}
