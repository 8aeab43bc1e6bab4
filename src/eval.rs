//! Evaluation of unconditional samples: fluency (perplexity under the autoregressive reference
//! LM, next to the perplexity of held-out real text), diversity (distinct-2) and memorisation (the
//! share of samples that copy a training text verbatim).
//!
//! ```
//! use diffusion_lm::eval::{copy_rate, distinct_n};
//! let samples = ["a b c", "a b d"];
//! // word bigrams: (a b) (b c) (a b) (b d) → 3 distinct of 4
//! assert_eq!(distinct_n(&samples, 2), 0.75);
//! let train: std::collections::HashSet<String> = ["a b c".to_string()].into();
//! assert_eq!(copy_rate(&samples, &train), 0.5);
//! ```

use std::collections::HashSet;

use serde::Serialize;

/// Share of distinct word n-grams among all word n-grams of the samples (whitespace words).
pub fn distinct_n<S: AsRef<str>>(samples: &[S], n: usize) -> f64 {
    let mut seen = HashSet::new();
    let mut total = 0usize;
    for s in samples {
        let words: Vec<&str> = s.as_ref().split_whitespace().collect();
        for gram in words.windows(n) {
            seen.insert(gram.join(" "));
            total += 1;
        }
    }
    if total == 0 {
        0.0
    } else {
        seen.len() as f64 / total as f64
    }
}

/// Share of samples that equal a training text exactly (after trimming).
pub fn copy_rate<S: AsRef<str>>(samples: &[S], training: &HashSet<String>) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let copies = samples.iter().filter(|s| training.contains(s.as_ref().trim())).count();
    copies as f64 / samples.len() as f64
}

/// Share of samples that look like a JSON object (start with `{`), and the share of those that
/// parse as JSON.
pub fn json_stats<S: AsRef<str>>(samples: &[S]) -> (f64, f64) {
    let json: Vec<&str> = samples
        .iter()
        .map(|s| s.as_ref().trim())
        .filter(|s| s.starts_with('{'))
        .collect();
    let valid = json
        .iter()
        .filter(|s| serde_json::from_str::<serde_json::Value>(s).is_ok())
        .count();
    let share = json.len() as f64 / samples.len().max(1) as f64;
    let valid_share = if json.is_empty() {
        0.0
    } else {
        valid as f64 / json.len() as f64
    };
    (share, valid_share)
}

/// The figures `diffusion-lm eval` reports.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The controls of the run: hard constraints, MBR, soft projection (empty: unconditional).
    pub controls: Vec<String>,
    /// Parameters of the diffusion model.
    pub parameters: usize,
    pub samples: usize,
    pub steps: usize,
    pub sample_perplexity: f64,
    pub heldout_perplexity: f64,
    /// sample perplexity / held-out perplexity (target ≤ 1.3).
    pub perplexity_ratio: f64,
    pub heldout_texts: usize,
    pub distinct_2: f64,
    pub heldout_distinct_2: f64,
    pub copy_rate: f64,
    /// Share of samples that are JSON-looking records, and share of those that parse.
    pub json_share: f64,
    pub json_valid: f64,
    pub empty_samples: usize,
    /// Mean content length in tokens.
    pub mean_tokens: f64,
    pub seconds_sampling: f64,
}

/// The paper's semantic-content criterion: the value string occurs in the text. For
/// `familyFriendly` (values `yes`/`no`, which never occur as such) its usual surface forms count.
///
/// ```
/// use diffusion_lm::eval::attribute_mentioned;
/// assert!(attribute_mentioned("Zizzi serves Italian food.", "food", "Italian"));
/// assert!(attribute_mentioned("A kid friendly pub.", "familyFriendly", "yes"));
/// assert!(!attribute_mentioned("A pub.", "food", "Italian"));
/// ```
pub fn attribute_mentioned(text: &str, field: &str, value: &str) -> bool {
    if field == "familyFriendly" {
        return family_friendly(text) == Some(value == "yes");
    }
    text.contains(value)
}

/// A field-aware check that the text *expresses* `field = value`: for a JSON record, the field
/// holds the value; for a sentence, the value occurs in the role of that field (`near X` for
/// `near`, `X` not after `near` for `name`; prices and ratings next to a word of their kind where
/// the value alone is ambiguous, e.g. `high`; family-friendliness with its negation).
///
/// ```
/// use diffusion_lm::eval::attribute_expressed;
/// assert!(attribute_expressed(r#"{"name":"Aromi","food":"Italian"}"#, "food", "Italian"));
/// assert!(!attribute_expressed(r#"{"name":"Aromi","near":"Italian"}"#, "food", "Italian"));
/// assert!(attribute_expressed("The Eagle is near Burger King.", "near", "Burger King"));
/// assert!(!attribute_expressed("The Eagle is near Burger King.", "name", "Burger King"));
/// assert!(attribute_expressed("It has a high customer rating.", "customer rating", "high"));
/// assert!(!attribute_expressed("It has a high customer rating.", "priceRange", "high"));
/// assert!(attribute_expressed("It is not family-friendly.", "familyFriendly", "no"));
/// ```
pub fn attribute_expressed(text: &str, field: &str, value: &str) -> bool {
    if let Ok(serde_json::Value::Object(obj)) = serde_json::from_str::<serde_json::Value>(text.trim()) {
        let key = crate::corpus::E2E_FIELDS
            .iter()
            .find(|(f, _)| *f == field)
            .map_or(field, |(_, k)| k);
        return match (field, obj.get(key)) {
            ("familyFriendly", Some(serde_json::Value::Bool(b))) => *b == (value == "yes"),
            (_, Some(serde_json::Value::String(s))) => s == value,
            _ => false,
        };
    }
    let lower = text.to_lowercase();
    let v = value.to_lowercase();
    match field {
        "familyFriendly" => family_friendly(text) == Some(value == "yes"),
        "near" => ["near ", "next to ", "close to ", "by "]
            .iter()
            .any(|p| lower.contains(&format!("{p}{v}"))),
        "name" => lower.match_indices(&v).any(|(i, _)| {
            let before = lower[..i].trim_end();
            !["near", "to", "by"].iter().any(|w| before.ends_with(w))
        }),
        "priceRange" if matches!(value, "high" | "moderate" | "cheap") => {
            (lower.contains(&v) && (lower.contains("pric") || lower.contains("cost") || value == "cheap"))
                || (value == "high" && lower.contains("expensive"))
        }
        "customer rating" if matches!(value, "high" | "low" | "average") => lower.contains(&v) && lower.contains("rat"),
        _ => lower.contains(&v),
    }
}

/// Whether a sentence says the place is family-friendly (`Some(true)`), not (`Some(false)`), or
/// does not say (`None`).
fn family_friendly(text: &str) -> Option<bool> {
    let lower = text.to_lowercase();
    if lower.contains("\"familyfriendly\":true") {
        return Some(true);
    }
    if lower.contains("\"familyfriendly\":false") {
        return Some(false);
    }
    let negative = [
        "not family",
        "not a family",
        "not kid",
        "not child",
        "non family",
        "non-family",
        "isn't family",
        "no kids",
        "no children",
        "adults only",
        "adult only",
        "not for famil",
        "not suitable for",
    ];
    if negative.iter().any(|n| lower.contains(n)) {
        return Some(false);
    }
    let positive = [
        "family friendly",
        "family-friendly",
        "kid friendly",
        "kid-friendly",
        "child friendly",
        "child-friendly",
        "children friendly",
        "for families",
        "for the whole family",
    ];
    positive.iter().any(|p| lower.contains(p)).then_some(true)
}
