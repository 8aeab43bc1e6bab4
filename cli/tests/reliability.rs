//! The command line under conditions a script meets: closed pipes, full disks, output
//! directories that already hold something, runs killed halfway, two runs on one directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_diffusion-lm"))
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = cli().args(args).output().expect("run the CLI");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A quick generation: few steps, no self-correction.
const QUICK: [&str; 5] = ["generate", "--steps", "3", "--self-correct", "0"];

#[test]
fn a_closed_pipe_ends_generation_quietly() {
    // `diffusion-lm generate | true`: the reader is gone before the first line is written.
    let mut child = cli()
        .args(QUICK)
        .args(["--samples", "4", "--batch-size", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("error"), "{stderr}");

    // `| head -1`: the reader goes away after one sample.
    let mut child = cli()
        .args(QUICK)
        .args(["--samples", "6", "--batch-size", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_is_a_clear_error() {
    for command in [
        vec!["generate", "--steps", "3", "--self-correct", "0", "--samples", "2"],
        vec![
            "generate",
            "--steps",
            "3",
            "--self-correct",
            "0",
            "--samples",
            "1",
            "--format",
            "jsonl",
        ],
    ] {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let out = cli().args(&command).stdout(full).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("error: writing to standard output") && stderr.contains("No space left on device"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn samples_are_written_as_each_batch_finishes() {
    // 30 samples of one batch each: a few kilobytes in all, far below a pipe's buffer, so the
    // child never waits on the reader and the times below are its own.
    let started = Instant::now();
    let mut child = cli()
        .args(["generate", "--steps", "20", "--self-correct", "0"])
        .args(["--samples", "30", "--batch-size", "1", "--format", "jsonl"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    let first_at = started.elapsed();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    let all_at = started.elapsed();
    assert!(!first.trim().is_empty());
    assert_eq!(rest.lines().count(), 29);
    // Printed at the end, the first sample would come with the last.
    assert!(
        first_at.as_secs_f64() < 0.5 * all_at.as_secs_f64(),
        "first sample after {first_at:?}, all after {all_at:?}"
    );
}

#[test]
fn bad_seeds_models_and_tokenizers_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let (code, _, err) = run(&["generate", "--seed", "-1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("a seed is a whole number from 0 to"), "{err}");

    let file = d.join("model.bin");
    std::fs::write(&file, "not a directory").unwrap();
    let (code, _, err) = run(&["generate", "--model", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("this is a file"), "{err}");

    // A tokenizer.json that is JSON but no tokenizer.
    let model = copy_of_shipped_model(d);
    std::fs::write(model.join("tokenizer.json"), r#"{"version": "1.0", "model": 7}"#).unwrap();
    let (code, _, err) = run(&["generate", "--model", model.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("tokenizer.json"), "{err}");
}

#[test]
fn regex_errors_say_why_and_where() {
    for (pattern, reason) in [
        ("The)|(.*", "unopened group"),
        ("(ab", "unclosed group"),
        ("[z-a]", "invalid character class range"),
        ("(?=a)a+", "look-around"),
        ("(a)\\1", "backreferences are not supported"),
    ] {
        let (code, _, err) = run(&["generate", "--regex", pattern]);
        assert_eq!(code, 1, "{pattern}: {err}");
        assert!(err.contains(reason), "{pattern}: {err}");
    }
}

fn copy_of_shipped_model(dir: &Path) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/e2e");
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for file in ["config.json", "model.safetensors", "tokenizer.json", "training.json"] {
        std::fs::copy(shipped.join(file), model.join(file)).unwrap();
    }
    model
}

/// A toy corpus and the arguments of a tiny training run on it into `out`.
fn tiny_training(dir: &Path, out: &Path, steps: usize) -> Vec<String> {
    let corpus = dir.join("toy.txt");
    let lines = [
        "the cat sat on the mat",
        "a dog ran in the park",
        "the bird sang a song",
        "my fish swims all day",
    ];
    std::fs::write(&corpus, lines.repeat(10).join("\n")).unwrap();
    [
        "train",
        "--corpus",
        corpus.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--heldout",
        "0",
        "--vocab-size",
        "300",
        "--seq-len",
        "12",
        "--embed-dim",
        "8",
        "--hidden",
        "32",
        "--layers",
        "1",
        "--heads",
        "2",
        "--ffn-hidden",
        "64",
        "--diffusion-steps",
        "100",
        "--batch-size",
        "8",
        "--warmup",
        "1",
        "--checkpoint-every",
        "1",
        "--log-every",
        "1",
        "--no-progress",
        "--steps",
        &steps.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(|s| s.as_str()).collect()
}

#[test]
fn train_never_writes_over_a_model_or_a_users_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // A finished model (no training state): refused, and left byte for byte as it was.
    let model = copy_of_shipped_model(d);
    let before = std::fs::read(model.join("model.safetensors")).unwrap();
    let (code, _, err) = run(&args(&tiny_training(d, &model, 2)));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no training state") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(std::fs::read(model.join("model.safetensors")).unwrap(), before);

    // A user's directory with a config.json of their own: refused too.
    let mine = d.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("config.json"), "{\"mine\": true}").unwrap();
    let (code, _, err) = run(&args(&tiny_training(d, &mine, 2)));
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        std::fs::read_to_string(mine.join("config.json")).unwrap(),
        "{\"mine\": true}"
    );

    // --overwrite: the old run's files are gone, an unrelated file stays, and what is there
    // afterwards is one run's.
    std::fs::create_dir_all(model.join("ar")).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::write(model.join("ar").join(f), "old").unwrap();
    }
    std::fs::write(model.join("notes.txt"), "keep me").unwrap();
    let mut overwrite = tiny_training(d, &model, 2);
    overwrite.push("--overwrite".into());
    let (code, _, err) = run(&args(&overwrite));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("--overwrite: removed"), "{err}");
    assert!(!model.join("training.json").exists() && !model.join("ar").exists());
    assert_eq!(std::fs::read_to_string(model.join("notes.txt")).unwrap(), "keep me");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("train_state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 2);
    diffusion_lm::DiffusionLm::load(&model, &candle_core::Device::Cpu).unwrap();

    // A directory with a training state resumes without --overwrite.
    let (code, _, err) = run(&args(&tiny_training(d, &model, 3)));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("resuming"), "{err}");
}

/// The resumable state a directory holds: its step, after checking that the state file names a
/// tensors file that loads, and that the directory loads as a model.
fn consistent_step(out: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(out.join("train_state.json")).ok()?;
    let state: serde_json::Value = serde_json::from_str(&text).expect("train_state.json is whole JSON");
    let tensors = state["tensors_file"].as_str().expect("the state names its tensors");
    let loaded = candle_core::safetensors::load(out.join(tensors), &candle_core::Device::Cpu)
        .expect("the named tensors file is whole");
    assert!(loaded.keys().any(|k| k.starts_with("ema.")));
    diffusion_lm::DiffusionLm::load(out, &candle_core::Device::Cpu).expect("the checkpoint loads");
    state["step"].as_u64()
}

#[test]
fn a_run_killed_at_any_moment_leaves_a_checkpoint_that_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let train = tiny_training(dir.path(), &out, 400);
    let mut last = 0;
    // KILL_ROUNDS raises the number of kills for a longer run (the default keeps CI short).
    let rounds: u64 = std::env::var("KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    for k in 0..rounds {
        let mut child = cli()
            .args(args(&train))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if k % 3 == 0 {
            // During start-up: corpus, tokenizer, the first save.
            std::thread::sleep(Duration::from_millis(50 + 97 * k % 400));
        } else {
            // Mid-run: steps and saves (one per step), timed from the first committed state so
            // a slow machine still gets there.
            let started = Instant::now();
            while !out.join("train_state.json").exists() && started.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(100 + 397 * k % 1200));
        }
        child.kill().unwrap(); // SIGKILL: no chance to clean up
        child.wait().unwrap();
        if let Some(step) = consistent_step(&out) {
            assert!(step >= last, "kill {k}: the state went back from step {last} to {step}");
            last = step;
        }
        let state_files: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("train_state.") && n.ends_with(".safetensors"))
            .collect();
        assert!(state_files.len() <= 2, "state files pile up: {state_files:?}");
    }
    assert!(last > 0, "no step was ever checkpointed");
    // A final run finishes from the last state, and no temporary file is left.
    let mut finish = train.clone();
    let at = finish.iter().position(|a| a == "--steps").unwrap();
    finish[at + 1] = (last + 2).to_string();
    let (code, _, err) = run(&args(&finish));
    assert_eq!(code, 0, "{err}");
    assert_eq!(consistent_step(&out), Some(last + 2));
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".tmp.")), "{names:?}");
}

#[test]
fn two_runs_on_one_directory_do_not_mix() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let train = tiny_training(dir.path(), &out, 100_000);
    let mut first = cli()
        .args(args(&train))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first run holds the directory.
    let started = Instant::now();
    while !out.join("train_state.json").exists() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, _, err) = run(&args(&train));
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("another training run is writing this directory"), "{err}");
    consistent_step(&out).unwrap();
}
