//! Bad input gives a clear error naming the problem, never a panic.

mod common;

use std::io::Write;

use candle_core::Device;
use common::*;
use diffusion_lm::e2e::E2eOptions;
use diffusion_lm::text::corpus::read_corpus;
use diffusion_lm::{DiffusionLm, Error, Generator, TextTokenizer};

fn err_text<T>(r: Result<T, Error>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unreadable_empty_and_malformed_corpora_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.txt");
    assert!(err_text(read_corpus(&missing, E2eOptions::default())).contains("does not exist"));

    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n  \n").unwrap();
    assert!(err_text(read_corpus(&empty, E2eOptions::default())).contains("contains no examples"));

    let bad_jsonl = dir.path().join("bad.jsonl");
    std::fs::write(&bad_jsonl, "{\"text\": \"ok\"}\n{not json\n").unwrap();
    let msg = err_text(read_corpus(&bad_jsonl, E2eOptions::default()));
    assert!(msg.contains("line 2") && msg.contains("invalid JSON"), "{msg}");

    let bad_csv = dir.path().join("bad.csv");
    std::fs::write(&bad_csv, "meaning,sentence\na,b\n").unwrap();
    assert!(err_text(read_corpus(&bad_csv, E2eOptions::default())).contains("no `mr` column"));

    let bad_mr = dir.path().join("badmr.csv");
    std::fs::write(&bad_mr, "mr,ref\n\"name[Eagle, food[x]\",hello\n").unwrap();
    let msg = err_text(read_corpus(&bad_mr, E2eOptions::default()));
    assert!(
        msg.contains("line 2") && msg.contains("meaning representation"),
        "{msg}"
    );

    let binary = dir.path().join("bin.txt");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    assert!(read_corpus(&binary, E2eOptions::default()).is_err());
}

fn toy_checkpoint() -> (tempfile::TempDir, DiffusionLm) {
    let dir = tempfile::tempdir().unwrap();
    let lm = train_toy(dir.path(), 5);
    (dir, lm)
}

#[test]
fn corrupt_and_mismatched_checkpoints_say_what_is_wrong() {
    let (dir, lm) = toy_checkpoint();
    let d = dir.path();

    // Missing files.
    let other = tempfile::tempdir().unwrap();
    assert!(err_text(DiffusionLm::load(other.path().join("x"), &Device::Cpu)).contains("does not exist"));
    lm.save(other.path()).unwrap();
    std::fs::remove_file(other.path().join("tokenizer.json")).unwrap();
    assert!(err_text(DiffusionLm::load(other.path(), &Device::Cpu)).contains("tokenizer.json is missing"));

    // Corrupt weights.
    let corrupt = tempfile::tempdir().unwrap();
    lm.save(corrupt.path()).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(corrupt.path().join("model.safetensors"))
        .unwrap();
    f.write_all(b"garbage garbage garbage").unwrap();
    drop(f);
    let msg = err_text(DiffusionLm::load(corrupt.path(), &Device::Cpu));
    assert!(
        msg.contains("model.safetensors is not a valid safetensors file"),
        "{msg}"
    );

    // Truncated weights.
    let truncated = tempfile::tempdir().unwrap();
    lm.save(truncated.path()).unwrap();
    let bytes = std::fs::read(truncated.path().join("model.safetensors")).unwrap();
    std::fs::write(truncated.path().join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    assert!(err_text(DiffusionLm::load(truncated.path(), &Device::Cpu)).contains("model.safetensors"));

    // Config that disagrees with the weights (shape mismatch).
    let shape = tempfile::tempdir().unwrap();
    lm.save(shape.path()).unwrap();
    let mut cfg = lm.config.clone();
    cfg.hidden = 32;
    diffusion_lm::train::checkpoint::write_json(&shape.path().join("config.json"), &cfg).unwrap();
    let msg = err_text(DiffusionLm::load(shape.path(), &Device::Cpu));
    assert!(msg.contains("has shape") && msg.contains("config expects"), "{msg}");

    // Vocabulary size mismatch between tokenizer and config.
    let vocab = tempfile::tempdir().unwrap();
    lm.save(vocab.path()).unwrap();
    let other_tok = TextTokenizer::train(["completely different words here"].into_iter(), 400).unwrap();
    other_tok.save(vocab.path().join("tokenizer.json")).unwrap();
    let msg = err_text(DiffusionLm::load(vocab.path(), &Device::Cpu));
    assert!(msg.contains("vocabulary size mismatch"), "{msg}");

    // Invalid JSON config.
    let json = tempfile::tempdir().unwrap();
    lm.save(json.path()).unwrap();
    std::fs::write(json.path().join("config.json"), "{ \"vocab_size\": ").unwrap();
    assert!(err_text(DiffusionLm::load(json.path(), &Device::Cpu)).contains("invalid JSON"));

    // Non-finite weights: the tensor is named.
    let nan = tempfile::tempdir().unwrap();
    let mut weights = lm.weights().clone();
    let name = weights.keys().min().unwrap().clone();
    let t = &weights[&name];
    let poisoned = (t.ones_like().unwrap() * f64::NAN).unwrap();
    weights.insert(name.clone(), poisoned);
    diffusion_lm::train::checkpoint::save_checkpoint(nan.path(), &lm.config, &lm.tokenizer, &weights).unwrap();
    let msg = err_text(DiffusionLm::load(nan.path(), &Device::Cpu));
    assert!(
        msg.contains(&format!("tensor `{name}` has")) && msg.contains("non-finite"),
        "{msg}"
    );
    let mut weights = lm.weights().clone();
    let t = &weights[&name];
    let mut values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    values[0] = f32::INFINITY;
    let one_inf = candle_core::Tensor::from_vec(values, t.dims(), &Device::Cpu).unwrap();
    weights.insert(name.clone(), one_inf);
    diffusion_lm::train::checkpoint::save_checkpoint(nan.path(), &lm.config, &lm.tokenizer, &weights).unwrap();
    let msg = err_text(DiffusionLm::load(nan.path(), &Device::Cpu));
    assert!(msg.contains("has 1 non-finite values"), "{msg}");

    // A tokenizer.json that is JSON but not a tokenizer: the file is named.
    let tok = tempfile::tempdir().unwrap();
    lm.save(tok.path()).unwrap();
    std::fs::write(tok.path().join("tokenizer.json"), "{\"model\": {\"type\": \"BPE\"}}").unwrap();
    let msg = err_text(DiffusionLm::load(tok.path(), &Device::Cpu));
    assert!(msg.contains("tokenizer.json"), "{msg}");

    // A file where a checkpoint directory is expected.
    let msg = err_text(DiffusionLm::load(d.join("config.json"), &Device::Cpu));
    assert!(msg.contains("this is a file"), "{msg}");

    // The original still loads.
    DiffusionLm::load(d, &Device::Cpu).unwrap();
}

#[test]
fn impossible_sampling_requests_are_refused() {
    let (_dir, lm) = toy_checkpoint();
    let msg = err_text(Generator::new(&lm).steps(0).generate(1));
    assert!(msg.contains("at least 1"), "{msg}");
    let msg = err_text(Generator::new(&lm).steps(10_000).generate(1));
    assert!(msg.contains("trained with 200 diffusion steps"), "{msg}");
    let msg = err_text(Generator::new(&lm).length(lm.config.seq_len + 1).generate(1));
    assert!(msg.contains("exceeds the model's sequence length"), "{msg}");
    let msg = err_text(Generator::new(&lm).length(0).generate(1));
    assert!(msg.contains("at least 1"), "{msg}");
    assert!(Generator::new(&lm).generate(0).unwrap().is_empty());
    let msg = err_text(Generator::new(&lm).best_of(0).generate(1));
    assert!(msg.contains("best_of must be at least 1"), "{msg}");
    let short = vec![lm.tokenizer.pad_id(); lm.config.seq_len - 1];
    let msg = err_text(Generator::new(&lm).naturalness(&[short]));
    assert!(msg.contains("sequence 0 has 11 tokens"), "{msg}");
    let outside = vec![lm.config.vocab_size as u32; lm.config.seq_len];
    let msg = err_text(Generator::new(&lm).naturalness(&[outside]));
    assert!(msg.contains("outside the vocabulary"), "{msg}");
}

#[test]
fn tokenizer_encodes_any_utf8_and_rejects_overlong_text() {
    let tok = toy_tokenizer();
    for text in ["{\"ключ\": \"値\"}", "emoji 🦀 and \u{0} nul", "tab\tnew line", "ǅ ﬁ 𝔘"] {
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids), text);
    }
    let long = "word ".repeat(100);
    let msg = err_text(tok.encode_padded(&long, 12));
    assert!(msg.contains("more than the sequence length 12"), "{msg}");
    assert!(TextTokenizer::train(["a"].into_iter(), 100).is_err());
}
