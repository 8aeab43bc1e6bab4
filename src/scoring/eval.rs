//! Evaluation of unconditional samples: fluency (perplexity under the autoregressive reference
//! LM, next to the perplexity of held-out real text), diversity (distinct-2) and memorisation (the
//! share of samples that copy a training text verbatim).
//!
//! ```
//! use diffusion_lm::scoring::eval::{copy_rate, distinct_n};
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
    /// Number of samples generated.
    pub samples: usize,
    /// Reverse diffusion steps used to generate each sample.
    pub steps: usize,
    /// Perplexity of the samples under the reference LM (per token, EOS included).
    pub sample_perplexity: f64,
    /// Perplexity of the held-out texts under the reference LM.
    pub heldout_perplexity: f64,
    /// sample perplexity / held-out perplexity (target ≤ 1.3).
    pub perplexity_ratio: f64,
    /// Number of held-out texts scored (those that fit the reference LM's `seq_len`).
    pub heldout_texts: usize,
    /// Distinct-2 of the samples (see [`distinct_n`]).
    pub distinct_2: f64,
    /// Distinct-2 of as many held-out texts as there are samples, for comparison.
    pub heldout_distinct_2: f64,
    /// Share of samples that copy a training text verbatim (see [`copy_rate`]).
    pub copy_rate: f64,
    /// Share of samples that look like JSON records (start with `{`).
    pub json_share: f64,
    /// Share of the JSON-looking samples that parse as JSON.
    pub json_valid: f64,
    /// Number of samples whose text is empty (after trimming).
    pub empty_samples: usize,
    /// Mean content length in tokens.
    pub mean_tokens: f64,
    /// Wall-clock time spent generating the samples, in seconds.
    pub seconds_sampling: f64,
}
