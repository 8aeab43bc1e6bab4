//! Fuzzing checkpoint loading: random bytes and mutated versions of the shipped model's
//! `config.json` and `tokenizer.json` (and a few corrupted weight files) go through
//! `checkpoint::load_config`, `checkpoint::load_tokenizer`, `TextTokenizer::load` and
//! `DiffusionLm::load`. Every input must load or give an error that names the file at fault —
//! never a panic.
//!
//! The default number of cases keeps this file to a few seconds in release mode; `FUZZ_CASES=N`
//! runs N cases per property (full model loads run N/25 cases, since each reads 12 MB).
//! `benches/fuzz.sh` does a long run.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use candle_core::Device;
use diffusion_lm::steer::token_index::TokenIndex;
use diffusion_lm::train::checkpoint::{load_config, load_tokenizer};
use diffusion_lm::{DiffusionLm, ModelConfig, TextTokenizer};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};

fn e2e() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/e2e")
}

/// The shipped `config.json` and `tokenizer.json`.
fn shipped() -> &'static (String, String) {
    static FILES: OnceLock<(String, String)> = OnceLock::new();
    FILES.get_or_init(|| {
        let read = |f: &str| std::fs::read_to_string(e2e().join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        (read("config.json"), read("tokenizer.json"))
    })
}

#[path = "support/fuzz_harness.rs"]
mod fuzz_harness;
use fuzz_harness::{cases, report};

/// [`fuzz_harness::fuzz`] for this file's properties (`test` returns whether the input loaded).
fn fuzz<S: Strategy>(name: &str, cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<bool, TestCaseError>)
where
    S::Value: Debug,
{
    fuzz_harness::fuzz("engine", "loaded", name, cases, strategy, test)
}

/// A fresh checkpoint directory (under the target directory, on the repository's file system).
fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fuzz-loading-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("a temporary directory")
}

/// File contents, shown as (lossy) text in reports.
#[derive(Clone)]
struct Bytes(Vec<u8>);

impl Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// How the weights file of a fuzzed checkpoint is made.
#[derive(Debug, Clone)]
enum Weights {
    /// The shipped file, hard-linked (or copied); never written to.
    Shipped,
    /// The shipped bytes cut at this fraction (per mille) of their length.
    Truncated(u16),
    /// The shipped bytes with these (offset per million, xor) flips; the header is at the start,
    /// so offsets are drawn mostly from the first bytes.
    Flipped(Vec<(u32, u8)>),
    /// Random bytes.
    Random(Vec<u8>),
}

fn write_weights(dir: &Path, w: &Weights) {
    let path = dir.join("model.safetensors");
    let shipped = e2e().join("model.safetensors");
    match w {
        Weights::Shipped => {
            // A fresh directory: nothing exists at `path`, so nothing writes through the link.
            if std::fs::hard_link(&shipped, &path).is_err() {
                std::fs::copy(&shipped, &path).expect("copy the weights");
            }
        }
        Weights::Truncated(permille) => {
            let mut bytes = std::fs::read(&shipped).expect("read the weights");
            let n = bytes.len() * usize::from(*permille) / 1000;
            bytes.truncate(n);
            std::fs::write(&path, bytes).expect("write the weights");
        }
        Weights::Flipped(flips) => {
            let mut bytes = std::fs::read(&shipped).expect("read the weights");
            for &(at, x) in flips {
                // Half the flips land in the first 64 KiB (the JSON header and first tensor).
                let at = if at % 2 == 0 {
                    at as usize % 65_536
                } else {
                    at as usize % bytes.len()
                };
                bytes[at] ^= x.max(1);
            }
            std::fs::write(&path, bytes).expect("write the weights");
        }
        Weights::Random(b) => std::fs::write(&path, b).expect("write the weights"),
    }
}

/// Writes a checkpoint directory from the given file contents.
fn checkpoint(config: &[u8], tokenizer: &[u8], weights: Option<&Weights>) -> tempfile::TempDir {
    let dir = temp_dir();
    std::fs::write(dir.path().join("config.json"), config).expect("write config.json");
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer).expect("write tokenizer.json");
    if let Some(w) = weights {
        write_weights(dir.path(), w);
    }
    dir
}

/// An error must name one of `files`.
fn names_file(e: &diffusion_lm::Error, files: &[&str]) -> Result<(), TestCaseError> {
    let msg = e.to_string();
    prop_assert!(
        files.iter().any(|f| msg.contains(f)),
        "the error does not name {files:?}: {msg}"
    );
    Ok(())
}

/// Uses a loaded tokenizer the way generation does: encoding, decoding, the token index.
fn exercise(tok: &TextTokenizer) {
    for text in ["The Eagle is a pub near Burger King.", "", "☃ \u{0} {\"a\": [1]}"] {
        if let Ok(ids) = tok.encode(text) {
            let _ = tok.decode(&ids);
            let _ = tok.decode_content(&ids);
        }
    }
    let _ = tok.decode(&[0, 1, 2, u32::MAX]);
    // A vocabulary claiming billions of ids would make the index allocate for each: only
    // index plausible sizes (the checkpoint loaders reject any size but the config's).
    if tok.vocab_size() <= 1 << 20 {
        let _ = TokenIndex::new(tok);
    }
}

// ------------------------------------------------------------------------------------------------
// Strategies
// ------------------------------------------------------------------------------------------------

/// Text edits: delete, insert or replace characters; cut the text short.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize),
    Insert(usize, char),
    Replace(usize, char),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let c = prop_oneof![
        3 => prop::sample::select(vec!['{', '}', '[', ']', '"', ':', ',', '\\', '0', '9', '-', 'e', '.', ' ', 'a', '\u{0}']),
        1 => any::<char>(),
    ];
    prop_oneof![
        3 => any::<usize>().prop_map(Edit::Delete),
        3 => (any::<usize>(), c.clone()).prop_map(|(i, c)| Edit::Insert(i, c)),
        3 => (any::<usize>(), c).prop_map(|(i, c)| Edit::Replace(i, c)),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply_edits(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let n = chars.len();
        match *e {
            Edit::Delete(i) if n > 0 => {
                chars.remove(i % n);
            }
            Edit::Insert(i, c) => chars.insert(i % (n + 1), c),
            Edit::Replace(i, c) if n > 0 => chars[i % n] = c,
            Edit::Truncate(i) => chars.truncate(i % (n + 1)),
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// Arbitrary JSON values, with numbers at the edges of every integer type.
fn json_value() -> impl Strategy<Value = Value> {
    let number = prop_oneof![
        (-3i64..70).prop_map(Value::from),
        prop::sample::select(vec![
            json!(0),
            json!(1),
            json!(2),
            json!(-1),
            json!(2047),
            json!(2048),
            json!(2049),
            json!(65535),
            json!(4294967295u64),
            json!(4294967296u64),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(1e300),
            json!(0.5),
            json!(-0.0),
            json!(1.0),
            json!(1e-9),
        ]),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number,
        prop::sample::select(vec![
            "",
            "sqrt",
            "linear",
            "[PAD]",
            "BPE",
            "ByteLevel",
            "WordPiece",
            "Unigram",
            "é"
        ])
        .prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..3).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A structural change at a node picked by a random walk from the root.
#[derive(Debug, Clone)]
enum JsonOp {
    Replace(Value),
    Remove,
    /// Insert a copy of the node next to itself (arrays) or under a new key (objects).
    Duplicate,
    /// Insert a new member into the object (or array) reached.
    Add(String, Value),
}

fn json_op() -> impl Strategy<Value = JsonOp> {
    prop_oneof![
        4 => json_value().prop_map(JsonOp::Replace),
        2 => Just(JsonOp::Remove),
        1 => Just(JsonOp::Duplicate),
        1 => ("[a-z_]{1,10}", json_value()).prop_map(|(k, v)| JsonOp::Add(k, v)),
    ]
}

/// Applies `op` at the node reached by walking `path` (child index modulo the number of
/// children at each step; the walk stops at a leaf).
fn mutate_json(root: &mut Value, path: &[usize], op: &JsonOp) {
    // Walk down, remembering the JSON pointer to the node and to its parent.
    let mut pointer = String::new();
    let mut node = &*root;
    let mut parent: Option<(String, String)> = None; // (parent pointer, key or index)
    for &step in path {
        let (key, child) = match node {
            Value::Object(m) if !m.is_empty() => {
                let (k, v) = m.iter().nth(step % m.len()).expect("in range");
                (k.clone(), v)
            }
            Value::Array(a) if !a.is_empty() => {
                let i = step % a.len();
                (i.to_string(), &a[i])
            }
            _ => break,
        };
        parent = Some((pointer.clone(), key.clone()));
        pointer = format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"));
        node = child;
    }
    let target = node.clone();
    match op {
        JsonOp::Replace(v) => {
            if let Some(n) = root.pointer_mut(&pointer) {
                *n = v.clone();
            }
        }
        JsonOp::Add(k, v) => match root.pointer_mut(&pointer) {
            Some(Value::Object(m)) => {
                m.insert(k.clone(), v.clone());
            }
            Some(Value::Array(a)) => a.push(v.clone()),
            Some(n) => *n = v.clone(),
            None => {}
        },
        JsonOp::Remove | JsonOp::Duplicate => {
            let Some((ptr, key)) = parent else {
                // The root itself.
                if matches!(op, JsonOp::Remove) {
                    *root = Value::Null;
                }
                return;
            };
            match root.pointer_mut(&ptr) {
                Some(Value::Object(m)) => {
                    if matches!(op, JsonOp::Remove) {
                        m.remove(&key);
                    } else {
                        m.insert(format!("{key}_copy"), target);
                    }
                }
                Some(Value::Array(a)) => {
                    let i: usize = key.parse().expect("an index");
                    if matches!(op, JsonOp::Remove) {
                        a.remove(i);
                    } else {
                        a.insert(i, target);
                    }
                }
                _ => {}
            }
        }
    }
}

/// `config.json` contents: random bytes, edited text, or structural changes of the shipped one.
fn config_bytes() -> impl Strategy<Value = Bytes> {
    let fields = vec![
        "vocab_size",
        "pad_id",
        "seq_len",
        "embed_dim",
        "hidden",
        "layers",
        "heads",
        "ffn_hidden",
        "dropout",
        "diffusion_steps",
        "schedule",
    ];
    let field_ops = prop::collection::vec(
        (prop::sample::select(fields), prop::option::weighted(0.85, json_value())),
        1..4,
    )
    .prop_map(|ops| {
        let mut cfg: Value = serde_json::from_str(&shipped().0).expect("the shipped config");
        for (field, v) in ops {
            match v {
                Some(v) => cfg[field] = v,
                None => {
                    cfg.as_object_mut().expect("an object").remove(field);
                }
            }
        }
        cfg.to_string().into_bytes()
    });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..300),
        1 => "\\PC{0,60}".prop_map(String::into_bytes),
        3 => prop::collection::vec(edit(), 1..4).prop_map(|e| apply_edits(&shipped().0, &e).into_bytes()),
        6 => field_ops,
        2 => (prop::collection::vec(any::<usize>(), 0..4), json_op()).prop_map(|(path, op)| {
            let mut cfg: Value = serde_json::from_str(&shipped().0).expect("the shipped config");
            mutate_json(&mut cfg, &path, &op);
            cfg.to_string().into_bytes()
        }),
    ]
    .prop_map(Bytes)
}

/// `tokenizer.json` contents: random bytes, byte flips and cuts of the shipped one, structural
/// changes at random places, and targeted changes (PAD, token ids, model and pre-tokenizer types).
fn tokenizer_bytes() -> impl Strategy<Value = Bytes> {
    let targeted = prop_oneof![
        // No PAD token, or PAD under another name.
        prop::sample::select(vec!["[PAD2]", "", "[pad]", "[UNK]"])
            .prop_map(|p| shipped().1.replace("[PAD]", p).into_bytes()),
        // The PAD token's id in `added_tokens`.
        json_value().prop_map(|v| {
            let mut t: Value = serde_json::from_str(&shipped().1).expect("the shipped tokenizer");
            t["added_tokens"][0]["id"] = v;
            t.to_string().into_bytes()
        }),
        // One vocabulary entry's id.
        (any::<usize>(), json_value()).prop_map(|(i, v)| {
            let mut t: Value = serde_json::from_str(&shipped().1).expect("the shipped tokenizer");
            let vocab = t["model"]["vocab"].as_object_mut().expect("the vocabulary");
            let key = vocab.keys().nth(i % vocab.len()).expect("in range").clone();
            vocab[&key] = v;
            t.to_string().into_bytes()
        }),
        // Merges cut short, or a merge of unknown tokens.
        (any::<usize>(), prop::option::of(("\\PC{1,3}", "\\PC{1,3}"))).prop_map(|(n, extra)| {
            let mut t: Value = serde_json::from_str(&shipped().1).expect("the shipped tokenizer");
            let merges = t["model"]["merges"].as_array_mut().expect("the merges");
            merges.truncate(n % (merges.len() + 1));
            if let Some((a, b)) = extra {
                merges.push(json!([a, b]));
            }
            t.to_string().into_bytes()
        }),
        // Another component type.
        (
            prop::sample::select(vec![
                "/model/type",
                "/pre_tokenizer/type",
                "/decoder/type",
                "/normalizer",
                "/post_processor"
            ]),
            prop::sample::select(vec![
                json!("BPE"),
                json!("WordPiece"),
                json!("WordLevel"),
                json!("Unigram"),
                json!("Whitespace"),
                json!("Sequence"),
                json!("NFC"),
                json!("Nope"),
                json!(null),
                json!({"type": "Lowercase"}),
                json!({"type": "TemplateProcessing"}),
                json!({"type": "Precompiled"}),
                json!({"type": "Precompiled", "precompiled_charsmap": "AAAA"}),
            ]),
        )
            .prop_map(|(ptr, v)| {
                let mut t: Value = serde_json::from_str(&shipped().1).expect("the shipped tokenizer");
                if let Some(n) = t.pointer_mut(ptr) {
                    *n = v;
                }
                t.to_string().into_bytes()
            }),
    ];
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..300),
        2 => prop::collection::vec((any::<usize>(), 1u8..=255), 1..6).prop_map(|flips| {
            let mut b = shipped().1.clone().into_bytes();
            for (at, x) in flips {
                let n = b.len();
                b[at % n] ^= x;
            }
            b
        }),
        2 => prop::collection::vec(edit(), 1..4).prop_map(|e| apply_edits(&shipped().1, &e).into_bytes()),
        4 => (prop::collection::vec(any::<usize>(), 0..5), json_op()).prop_map(|(path, op)| {
            let mut t: Value = serde_json::from_str(&shipped().1).expect("the shipped tokenizer");
            mutate_json(&mut t, &path, &op);
            t.to_string().into_bytes()
        }),
        4 => targeted,
    ]
    .prop_map(Bytes)
}

fn weights() -> impl Strategy<Value = Weights> {
    prop_oneof![
        6 => Just(Weights::Shipped),
        1 => (0u16..1000).prop_map(Weights::Truncated),
        2 => prop::collection::vec((any::<u32>(), any::<u8>()), 1..8).prop_map(Weights::Flipped),
        1 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Weights::Random),
    ]
}

// ------------------------------------------------------------------------------------------------
// Properties
// ------------------------------------------------------------------------------------------------

#[test]
fn config_json() {
    fuzz("config_json", cases(300, 1), config_bytes(), |bytes| {
        let dir = checkpoint(&bytes.0, shipped().1.as_bytes(), None);
        match load_config::<ModelConfig>(dir.path()) {
            Ok(cfg) => {
                // The loaders report `validate`'s errors as `config.json: ...`.
                if let Err(e) = cfg.validate() {
                    prop_assert!(!e.to_string().trim().is_empty());
                    return Ok(false);
                }
                Ok(true)
            }
            Err(e) => names_file(&e, &["config.json"]).map(|_| false),
        }
    });
}

#[test]
fn tokenizer_json() {
    // Files on which the `tokenizers` crate panics; `TextTokenizer::load` turns the panic into an
    // error (the panic's own message is still printed by the panic hook).
    let caught = AtomicUsize::new(0);
    fuzz("tokenizer_json", cases(200, 1), tokenizer_bytes(), |bytes| {
        let dir = checkpoint(shipped().0.as_bytes(), &bytes.0, None);
        let path = dir.path().join("tokenizer.json");
        let direct = TextTokenizer::load(&path);
        match &direct {
            Ok(tok) => exercise(tok),
            Err(e) => {
                if e.to_string().contains("not a valid tokenizer file") {
                    caught.fetch_add(1, Ordering::Relaxed);
                }
                names_file(e, &[&path.display().to_string()])?
            }
        }
        match load_tokenizer(dir.path(), 2048, 0) {
            Ok(tok) => {
                exercise(&tok);
                Ok(true)
            }
            Err(e) => names_file(&e, &["tokenizer.json"]).map(|_| false),
        }
    });
    report(format!(
        "FUZZ engine/tokenizer_json: {} of the inputs made the tokenizers crate panic; TextTokenizer::load caught it",
        caught.into_inner()
    ));
}

#[test]
fn full_checkpoint() {
    // A whole checkpoint: usually one file broken, sometimes several.
    let files = prop_oneof![
        3 => config_bytes().prop_map(|c| (c, Bytes(shipped().1.clone().into_bytes()), Weights::Shipped)),
        3 => tokenizer_bytes().prop_map(|t| (Bytes(shipped().0.clone().into_bytes()), t, Weights::Shipped)),
        3 => weights().prop_map(|w| (
            Bytes(shipped().0.clone().into_bytes()),
            Bytes(shipped().1.clone().into_bytes()),
            w
        )),
        1 => (config_bytes(), tokenizer_bytes(), weights()),
    ];
    fuzz(
        "full_checkpoint",
        cases(12, 25),
        files,
        |(config, tokenizer, weights)| {
            let dir = checkpoint(&config.0, &tokenizer.0, Some(&weights));
            match DiffusionLm::load(dir.path(), &Device::Cpu) {
                Ok(lm) => {
                    exercise(&lm.tokenizer);
                    Ok(true)
                }
                Err(e) => names_file(&e, &["config.json", "tokenizer.json", "model.safetensors"]).map(|_| false),
            }
        },
    );
}

#[test]
fn missing_files_are_named() {
    for missing in ["config.json", "tokenizer.json", "model.safetensors"] {
        let dir = checkpoint(shipped().0.as_bytes(), shipped().1.as_bytes(), Some(&Weights::Shipped));
        std::fs::remove_file(dir.path().join(missing)).unwrap();
        let e = DiffusionLm::load(dir.path(), &Device::Cpu).err().expect("an error");
        assert!(e.to_string().contains(missing), "{e}");
    }
    // The untouched files load: the fuzzed failures come from the mutations.
    let dir = checkpoint(shipped().0.as_bytes(), shipped().1.as_bytes(), Some(&Weights::Shipped));
    DiffusionLm::load(dir.path(), &Device::Cpu).unwrap();
}

#[test]
fn loading_regressions() {
    // Inputs the fuzzers found, each with the file its error must name.
    let no_pad = shipped().1.replace("[PAD]", "[PAD2]");
    let dir = checkpoint(shipped().0.as_bytes(), no_pad.as_bytes(), None);
    let path = dir.path().join("tokenizer.json");
    let e = TextTokenizer::load(&path).err().expect("no PAD token");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    // The `tokenizers` crate panics on a syntax error inside `decoder` and on an incomplete
    // `Precompiled` normalizer; both must be errors naming the file.
    let mut precompiled: Value = serde_json::from_str(&shipped().1).unwrap();
    precompiled["normalizer"] = json!({"type": "Precompiled"});
    for text in [
        shipped().1.replacen("\"decoder\":{", "\"decoder\":}", 1),
        precompiled.to_string(),
    ] {
        let dir = checkpoint(shipped().0.as_bytes(), text.as_bytes(), None);
        let path = dir.path().join("tokenizer.json");
        let e = TextTokenizer::load(&path).err().expect("a broken tokenizer");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }
    // A normalizer written `[""]` loads, but the `tokenizers` crate then panics while encoding
    // any text: refused at load, naming the file.
    let mut empty_normalizer: Value = serde_json::from_str(&shipped().1).unwrap();
    empty_normalizer["normalizer"] = json!([""]);
    let dir = checkpoint(shipped().0.as_bytes(), empty_normalizer.to_string().as_bytes(), None);
    let path = dir.path().join("tokenizer.json");
    let e = TextTokenizer::load(&path)
        .err()
        .expect("a tokenizer that cannot encode");
    let msg = e.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("the tokenizer failed on"),
        "{msg}"
    );
    // A config that passes every per-field check but asks for 10^12 layers: the loader must not
    // try to list their parameters.
    let mut cfg: Value = serde_json::from_str(&shipped().0).unwrap();
    cfg["layers"] = json!(1_000_000_000_000u64);
    let dir = checkpoint(
        cfg.to_string().as_bytes(),
        shipped().1.as_bytes(),
        Some(&Weights::Shipped),
    );
    let e = DiffusionLm::load(dir.path(), &Device::Cpu)
        .err()
        .expect("too many layers");
    assert!(
        e.to_string().contains("config.json") && e.to_string().contains("layers"),
        "{e}"
    );
}
