//! Corpus readers: plain text (one example per line), JSON Lines, and (through
//! [`crate::e2e`]) the E2E CSV.
//!
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::e2e::E2eOptions;
use crate::{Error, Result};

/// One training example: its text and the labels it came with, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// The text.
    pub text: String,
    /// Its labelled fields (for E2E, the meaning representation it was written from).
    pub labels: Option<Labels>,
}

/// Labelled fields of an example, `(field, value)` pairs in the order written; what attribute
/// classifiers train on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labels {
    /// `(field, value)` pairs in the order written.
    pub fields: Vec<(String, String)>,
}

impl Labels {
    /// The value of `field`, if present.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == field).map(|(_, v)| v.as_str())
    }
}

/// Reads plain text: one example per non-empty line.
pub fn read_text(path: impl AsRef<Path>) -> Result<Vec<Example>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let out = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| Example {
            text: l.to_string(),
            labels: None,
        })
        .collect();
    non_empty(path, out)
}

/// Reads JSON Lines: each line is an object with a string field `text`, or a bare JSON string.
pub fn read_jsonl(path: impl AsRef<Path>) -> Result<Vec<Example>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::corpus(path, format!("line {}: invalid JSON: {e}", i + 1)))?;
        let text = match &value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(o) => match o.get("text") {
                Some(serde_json::Value::String(s)) => s.clone(),
                _ => {
                    return Err(Error::corpus(
                        path,
                        format!("line {}: object has no string field `text`", i + 1),
                    ))
                }
            },
            _ => {
                return Err(Error::corpus(
                    path,
                    format!("line {}: expected an object with `text` or a string", i + 1),
                ))
            }
        };
        if !text.trim().is_empty() {
            out.push(Example { text, labels: None });
        }
    }
    non_empty(path, out)
}

/// Reads a corpus, choosing the reader by extension: `.csv` (E2E), `.jsonl`, anything else as text.
pub fn read_corpus(path: impl AsRef<Path>, e2e: E2eOptions) -> Result<Vec<Example>> {
    let path = path.as_ref();
    if !path.exists() {
        return Err(Error::corpus(path, "file does not exist"));
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => crate::e2e::read_e2e_csv(path, e2e),
        Some("jsonl") => read_jsonl(path),
        _ => read_text(path),
    }
}

pub(crate) fn non_empty(path: &Path, out: Vec<Example>) -> Result<Vec<Example>> {
    if out.is_empty() {
        Err(Error::corpus(path, "contains no examples"))
    } else {
        Ok(out)
    }
}

/// Splits examples into (train, held-out) deterministically by a hash of their text, so that
/// identical texts always land on the same side and the split does not depend on file order.
pub fn split_holdout(examples: Vec<Example>, heldout_fraction: f64) -> (Vec<Example>, Vec<Example>) {
    let threshold = (heldout_fraction.clamp(0.0, 1.0) * 10_000.0) as u64;
    examples
        .into_iter()
        .partition(|ex| fnv1a(ex.text.as_bytes()) % 10_000 >= threshold)
}

/// FNV-1a, a small stable hash (std's hasher is not guaranteed stable across releases).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}
