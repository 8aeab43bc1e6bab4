//! The tokenizer of a snapshot: its `tokenizer.json`, or, for snapshots that ship only a slow
//! Qwen2-style tokenizer (Dream's `tokenization_dream.py`: `vocab.json`, `merges.txt` and the
//! added tokens of `tokenizer_config.json`), the pipeline `transformers` would convert it to
//! (`Qwen2Converter`): NFC, Qwen2's pre-tokenization regex, byte-level BPE.

use std::path::Path;

use serde_json::{json, Value};

use crate::{Error, Result, TextTokenizer};

/// Qwen2's pre-tokenization pattern (`tokenization_qwen2.py`, `PRETOKENIZE_REGEX`).
const QWEN2_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Loads the tokenizer of the snapshot in `dir`, with `end_id` filling the tail.
pub(crate) fn load(dir: &Path, end_id: u32) -> Result<TextTokenizer> {
    let fast = dir.join("tokenizer.json");
    if fast.exists() {
        return TextTokenizer::load_pretrained(&fast, end_id);
    }
    let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
    if !(vocab.is_file() && merges.is_file()) {
        return Err(Error::checkpoint(
            dir,
            "no tokenizer: neither tokenizer.json nor vocab.json with merges.txt",
        ));
    }
    let json = qwen2_tokenizer_json(dir)?;
    TextTokenizer::pretrained_from_json(&json, &vocab, end_id)
}

/// The `tokenizer.json` text of the slow Qwen2 tokenizer in `dir`.
fn qwen2_tokenizer_json(dir: &Path) -> Result<String> {
    let read = |name: &str| -> Result<String> {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| Error::io(path, e))
    };
    let vocab: Value = serde_json::from_str(&read("vocab.json")?).map_err(|e| Error::Json {
        path: dir.join("vocab.json"),
        message: e.to_string(),
    })?;
    let merges: Vec<Value> = read("merges.txt")?
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .map(|l| Value::String(l.to_string()))
        .collect();
    // Added tokens, in id order, from tokenizer_config.json's `added_tokens_decoder`.
    let mut added: Vec<(u64, Value)> = Vec::new();
    let config_path = dir.join("tokenizer_config.json");
    if config_path.exists() {
        let config: Value = crate::train::checkpoint::read_json(&config_path)?;
        if let Some(map) = config.get("added_tokens_decoder").and_then(Value::as_object) {
            for (id, t) in map {
                let id: u64 = id.parse().map_err(|_| {
                    Error::checkpoint(
                        dir,
                        format!("tokenizer_config.json: added token id {id:?} is not a number"),
                    )
                })?;
                let flag = |k: &str| t.get(k).and_then(Value::as_bool).unwrap_or(false);
                let content = t.get("content").and_then(Value::as_str).ok_or_else(|| {
                    Error::checkpoint(dir, format!("tokenizer_config.json: added token {id} has no content"))
                })?;
                added.push((
                    id,
                    json!({
                        "id": id, "content": content, "single_word": flag("single_word"),
                        "lstrip": flag("lstrip"), "rstrip": flag("rstrip"),
                        "normalized": flag("normalized"), "special": flag("special"),
                    }),
                ));
            }
        }
    }
    added.sort_by_key(|(id, _)| *id);
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added.into_iter().map(|(_, t)| t).collect::<Vec<_>>(),
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges
        }
    });
    Ok(tokenizer.to_string())
}
