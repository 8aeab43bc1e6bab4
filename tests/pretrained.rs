//! Pretrained snapshots (LLaDA, Dream) on tiny random-weight checkpoints written in the exact
//! layouts of the real ones (`tests/fixtures/pretrained/`, made by
//! `python3 benches/pytorch_pretrained_reference.py make-fixtures tests/fixtures/pretrained`):
//! logits against the independent PyTorch reference, the logit shift, the mask id, the chat
//! template, sharded loading and its errors, and exact constrained generation with a prompt.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use diffusion_lm::masked::{MaskedGenerator, MaskedModel};
use diffusion_lm::pretrained::{Architecture, Message, PretrainedLm};
use diffusion_lm_controllers::{JsonSchema, Regex};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pretrained")
        .join(name)
}

fn load(name: &str) -> PretrainedLm {
    PretrainedLm::load(fixture(name), &Device::Cpu, DType::F32).expect("load the tiny checkpoint")
}

/// `max |ours − reference| / max |reference|` over the reference logits of the fixture.
fn parity(name: &str, dtype: DType) -> f32 {
    let lm = PretrainedLm::load(fixture(name), &Device::Cpu, dtype).unwrap();
    let reference = candle_core::safetensors::load(fixture(name).join("reference.safetensors"), &Device::Cpu).unwrap();
    let ids = reference["input_ids"].to_dtype(DType::U32).unwrap();
    let want = &reference["logits"];
    let got = lm.forward(&ids).unwrap().to_dtype(DType::F32).unwrap();
    assert_eq!(got.dims(), want.dims());
    let err = common::max_abs_diff(&got, want);
    let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    eprintln!(
        "{name} {dtype:?}: max abs error {err:.3e}, relative {:.3e}",
        err / scale
    );
    err / scale
}

#[test]
fn llada_logits_match_the_pytorch_reference() {
    let rel = parity("llada-tiny", DType::F32);
    assert!(rel < 1e-4, "relative error {rel}");
}

#[test]
fn dream_logits_match_the_pytorch_reference() {
    let rel = parity("dream-tiny", DType::F32);
    assert!(rel < 1e-4, "relative error {rel}");
}

#[test]
fn half_precision_stays_close_to_the_reference() {
    for name in ["llada-tiny", "dream-tiny"] {
        for dtype in [DType::BF16, DType::F16] {
            let rel = parity(name, dtype);
            assert!(rel < 5e-2, "{name} {dtype:?}: relative error {rel}");
        }
    }
}

#[test]
fn architectures_ids_and_the_mask_token_come_from_the_config() {
    let llada = load("llada-tiny");
    assert_eq!(llada.architecture(), Architecture::Llada);
    let dream = load("dream-tiny");
    assert_eq!(dream.architecture(), Architecture::Dream);
    for (lm, mask, eos) in [
        (&llada, "<|mdm_mask|>", "<|endoftext|>"),
        (&dream, "<|mask|>", "<|endoftext|>"),
    ] {
        let tok = lm.tokenizer();
        assert_eq!(tok.encode(mask).unwrap(), vec![lm.mask_id()], "{mask}");
        assert_eq!(tok.encode(eos).unwrap(), vec![lm.eos_id()], "{eos}");
        assert_eq!(lm.pad_id(), lm.eos_id());
        // Special tokens never stand for content.
        let index = lm.token_index();
        assert!(index.bytes(lm.mask_id()).is_empty() && index.bytes(lm.eos_id()).is_empty());
        assert_eq!(index.vocab_size(), lm.vocab_size());
    }
}

#[test]
fn dream_scores_position_i_with_output_i_minus_1_and_llada_does_not_shift() {
    let ids = Tensor::new(&[[5u32, 9, 463, 463, 17, 463]], &Device::Cpu).unwrap();
    let dream = load("dream-tiny");
    let raw = dream.forward(&ids).unwrap();
    let aligned = dream.logits(&ids).unwrap();
    let row = |t: &Tensor, i: usize| t.get(0).unwrap().get(i).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(row(&aligned, 0), row(&raw, 0));
    for i in 1..6 {
        assert_eq!(row(&aligned, i), row(&raw, i - 1), "position {i}");
    }
    let ids = Tensor::new(&[[5u32, 9, 422, 422, 17, 422]], &Device::Cpu).unwrap();
    let llada = load("llada-tiny");
    let raw = llada.forward(&ids).unwrap();
    let aligned = llada.logits(&ids).unwrap();
    let diff = common::max_abs_diff(&raw, &aligned);
    assert_eq!(diff, 0.0);
    // The scores of the span only (the output layer skips the prompt) are the same rows.
    for lm in [&llada, &dream] {
        let ids = Tensor::new(&[[5u32, 9, 17, lm.mask_id(), 17, lm.mask_id()]], &Device::Cpu).unwrap();
        let all = lm.logits(&ids).unwrap();
        for from in [0usize, 1, 4, 5] {
            let part = lm.logits_from(&ids, from).unwrap();
            let want = all.narrow(1, from, 6 - from).unwrap();
            assert_eq!(part.dims(), want.dims());
            let d = (part - want)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert!(d.iter().all(|&x| x < 1e-5), "from {from}");
        }
    }
}

#[test]
fn chat_templates_render_as_transformers_does() {
    for name in ["llada-tiny", "dream-tiny"] {
        let lm = load(name);
        let reference: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(name).join("chat_reference.json")).unwrap()).unwrap();
        let template = lm.chat_template().expect("an Instruct snapshot has a chat template");
        for case in [&reference, &reference["user_only"]] {
            let messages: Vec<Message> = case["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| Message {
                    role: m["role"].as_str().unwrap().into(),
                    content: m["content"].as_str().unwrap().into(),
                })
                .collect();
            let rendered = template.render(&messages, true).unwrap();
            assert_eq!(rendered, case["rendered"].as_str().unwrap(), "{name}");
        }
        // The prompt the library builds from a user message is the rendered template, encoded.
        let user = reference["user_only"]["messages"][0]["content"].as_str().unwrap();
        let ids = lm.prompt(user, None).unwrap();
        let want = lm
            .tokenizer()
            .encode(reference["user_only"]["rendered"].as_str().unwrap())
            .unwrap();
        assert_eq!(ids, want);
        let expected: Vec<u32> = reference["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let system = reference["messages"][0]["content"].as_str().unwrap();
        let text = reference["messages"][1]["content"].as_str().unwrap();
        assert_eq!(
            lm.prompt(text, Some(system)).unwrap(),
            expected,
            "{name}: token ids of the rendered chat"
        );
    }
}

/// A copy of a fixture directory that a test may break.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn load_err(dir: &Path) -> String {
    match PretrainedLm::load(dir, &Device::Cpu, DType::F32) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// The load error of a copy of a fixture whose config.json has `from` replaced by `to`.
fn load_err_with_config(name: &str, from: &str, to: &str) -> String {
    let dir = copy_fixture(name);
    let path = dir.path().join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from} not in {name}/config.json");
    std::fs::write(&path, text.replace(from, to)).unwrap();
    load_err(dir.path())
}

#[test]
fn sharded_loading_and_its_errors_name_the_file_and_tensor() {
    let snapshot = diffusion_lm::pretrained::Snapshot::open(fixture("llada-tiny")).unwrap();
    assert_eq!(snapshot.shard_count(), 2);
    assert_eq!(snapshot.dtype_of("model.transformer.wte.weight"), Some(DType::BF16));

    let dir = copy_fixture("llada-tiny");
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains("model-00002-of-00002.safetensors") && e.contains("missing"),
        "{e}"
    );

    // A config whose sizes disagree with the weights: the tensor and its file are named.
    let e = load_err_with_config("dream-tiny", "\"intermediate_size\": 48", "\"intermediate_size\": 64");
    assert!(
        e.contains("mlp.gate_proj.weight") && e.contains(".safetensors") && e.contains("[64, 32]"),
        "{e}"
    );

    // A tensor stored as integers: named with its file.
    let dir = copy_fixture("llada-tiny");
    let shard = dir.path().join("model-00001-of-00002.safetensors");
    let mut tensors = candle_core::safetensors::load(&shard, &Device::Cpu).unwrap();
    let name = "model.transformer.wte.weight";
    let as_int = tensors[name].to_dtype(DType::I64).unwrap();
    tensors.insert(name.to_string(), as_int);
    candle_core::safetensors::save(&tensors, &shard).unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains(name) && e.contains("model-00001-of-00002.safetensors") && e.contains("I64"),
        "{e}"
    );

    let e = load_err_with_config("dream-tiny", "\"Dream\"", "\"mamba\"");
    assert!(e.contains("mamba") && e.contains("config.json"), "{e}");
}

#[test]
fn a_snapshot_with_only_the_slow_qwen2_tokenizer_encodes_as_transformers_does() {
    // Dream's snapshots ship `tokenization_dream.py` (Qwen2's slow tokenizer) with vocab.json and
    // merges.txt; the reference ids come from transformers' slow `Qwen2Tokenizer`.
    let dir = copy_fixture("dream-tiny");
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let lm = PretrainedLm::load(dir.path(), &Device::Cpu, DType::F32).unwrap();
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("dream-tiny").join("slow_tokenizer_reference.json")).unwrap(),
    )
    .unwrap();
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(lm.tokenizer().encode(text).unwrap(), want, "{text:?}");
    }
    assert_eq!(lm.tokenizer().encode("<|mask|>").unwrap(), vec![lm.mask_id()]);
    let e = {
        let dir = copy_fixture("dream-tiny");
        for f in ["tokenizer.json", "merges.txt"] {
            std::fs::remove_file(dir.path().join(f)).unwrap();
        }
        load_err(dir.path())
    };
    assert!(e.contains("no tokenizer"), "{e}");
}

#[test]
fn sampling_never_commits_the_mask_an_end_of_turn_or_an_unknown_row() {
    for name in ["llada-tiny", "dream-tiny"] {
        let lm = load(name);
        let eot = lm
            .tokenizer()
            .token_id("<|eot_id|>")
            .or_else(|| lm.tokenizer().token_id("<|im_end|>"))
            .unwrap();
        let known = lm.tokenizer().vocab_size() as u32;
        // No prompt: Dream reads position 0 from its begin-of-text token. With the length drawn
        // first, a special token drawn first is content like any other.
        for length_first in [false, true] {
            for s in MaskedGenerator::new(&lm)
                .length(24)
                .steps(8)
                .temperature(2.0)
                .seed(5)
                .length_first(length_first)
                .generate(8)
                .unwrap()
            {
                for &t in &s.ids {
                    assert!(t != lm.mask_id() && t != eot && t < known, "{name}: {t} in {:?}", s.ids);
                }
            }
        }
    }
}

#[test]
fn an_architecture_without_its_weights_runs_with_random_ones() {
    let dir = copy_fixture("dream-tiny");
    for f in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
    ] {
        std::fs::remove_file(dir.path().join(f)).unwrap();
    }
    assert!(load_err(dir.path()).contains("no weights"));
    let lm = PretrainedLm::with_random_weights(dir.path(), &Device::Cpu, DType::BF16).unwrap();
    let ids = Tensor::new(&[[5u32, 9, lm.mask_id()]], &Device::Cpu).unwrap();
    assert_eq!(lm.logits(&ids).unwrap().dims(), &[1, 3, lm.vocab_size()]);
}

#[test]
fn a_tokenizer_that_is_not_byte_level_is_refused_for_constraints_only() {
    let dir = copy_fixture("llada-tiny");
    let path = dir.path().join("tokenizer.json");
    let mut tok: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    tok["decoder"] = serde_json::json!({"type": "Fuse"});
    std::fs::write(&path, tok.to_string()).unwrap();
    let lm = PretrainedLm::load(dir.path(), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(
        MaskedGenerator::new(&lm).length(4).steps(2).generate(1).unwrap().len(),
        1
    );
    let drawn = MaskedGenerator::new(&lm)
        .length(4)
        .steps(2)
        .length_first(true)
        .generate(2)
        .unwrap();
    assert_eq!(drawn.len(), 2);
    let e = MaskedGenerator::new(&lm)
        .length(4)
        .constrain(Regex::new("[a-z]+").unwrap())
        .generate(1)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("byte-level"), "{e}");
}

#[test]
fn constrained_generation_after_a_prompt_is_valid_and_ends_with_eos() {
    for name in ["llada-tiny", "dream-tiny"] {
        let lm = load(name);
        let prompt = lm.prompt("Give me a JSON object.", None).unwrap();
        let pattern = "(yes|no), [a-z]{2,6}\\.";
        let samples = MaskedGenerator::new(&lm)
            .prompt(prompt.clone())
            .length(16)
            .steps(8)
            .seed(3)
            .constrain(Regex::new(pattern).unwrap())
            .generate(4)
            .unwrap();
        let re = regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
        for s in &samples {
            assert!(re.is_match(&s.text), "{name}: {:?}", s.text);
            let end = s.ids.iter().position(|&t| t == lm.eos_id()).expect("an EOS tail");
            assert!(s.ids[end..].iter().all(|&t| t == lm.eos_id()), "{name}: {:?}", s.ids);
        }
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"name": {"type": "string", "maxLength": 6}, "ok": {"type": "boolean"}},
            "required": ["name", "ok"],
            "additionalProperties": false
        });
        let samples = MaskedGenerator::new(&lm)
            .prompt(prompt)
            .length(40)
            .steps(10)
            .temperature(0.0)
            .constrain(JsonSchema::new(&schema).unwrap())
            .generate(2)
            .unwrap();
        for s in &samples {
            let doc: serde_json::Value =
                serde_json::from_str(&s.text).unwrap_or_else(|e| panic!("{name}: {:?}: {e}", s.text));
            assert!(jsonschema::is_valid(&schema, &doc), "{name}: {}", s.text);
        }
    }
}

/// Documents far longer than the shipped models' 64 tokens: a list of 4 to 12 restaurant records
/// in a 256-token span, valid under the schema.
#[test]
fn long_schema_documents_fill_a_long_span() {
    let lm = load("llada-tiny");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/schemas/restaurant_list.json");
    let js = JsonSchema::from_file(&path).unwrap();
    let schema = js.schema().clone();
    let samples = MaskedGenerator::new(&lm)
        .length(256)
        .steps(32)
        .seed(1)
        .constrain(js)
        .generate(1)
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&samples[0].text).unwrap();
    assert!(jsonschema::is_valid(&schema, &doc), "{}", samples[0].text);
    let tokens = lm.tokenizer().encode(&samples[0].text).unwrap().len();
    assert!(tokens > 100, "{tokens} tokens: {}", samples[0].text);
}

#[test]
fn the_same_seed_gives_the_same_text_with_a_prompt_at_any_batch_size() {
    let lm = load("llada-tiny");
    let prompt = lm.prompt("Hello", None).unwrap();
    let run = |batch: usize| {
        MaskedGenerator::new(&lm)
            .prompt(prompt.clone())
            .length(12)
            .steps(6)
            .block_size(4)
            .cfg_scale(0.5)
            .seed(9)
            .batch_size(batch)
            .generate(3)
            .unwrap()
            .into_iter()
            .map(|s| s.ids)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn a_prompt_too_long_for_the_model_or_with_a_mask_is_refused() {
    let lm = load("dream-tiny");
    let e = MaskedGenerator::new(&lm)
        .prompt(vec![lm.mask_id()])
        .length(4)
        .generate(1)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("mask"), "{e}");
}
